"""``allocate_group``: the pending claims of every pod of a pod group, in one decision.

All or nothing: either each member (one pod: its pending claims and the nodes it may
run on) gets an :class:`~dra_driver.allocator.Allocation`, or none does and a
:class:`GroupShortfall` says why and what the closest option was. The snapshot is
left as it was found either way: members are tried against it by adding their
tentative allocations (:meth:`Snapshot.add_allocated`) and removing them again.

The search, in order:

1. **One NVLink island.** When the group's devices could fit on one island (the
   ``nvlinkIsland`` attribute of the device's driver; its free whole devices
   counted over the members' nodes), up to :data:`ISLANDS_TRIED` islands are
   tried, fullest first among those big enough (so large islands stay whole for
   large groups): each member's requests get one more CEL selector keeping them on
   that island (devices without the attribute are not restricted), and the members
   are placed there with the same backtracking as step 2. Islands the group's other
   pods already hold (``held_islands``: a pod placed again after giving its devices up
   at the confirm, while the rest of its group keeps theirs) are tried first.
2. **Across islands, as few as it can.** Members are placed most constrained first
   (fewest nodes, most devices); each one's policy (``binpack``, ``topology``...)
   chooses among the nodes the group already uses first, then among the others.
   When a member fits nowhere, the previous member is moved: its node is excluded
   for it and it is placed again (device-set retry across the group, where upstream's
   gang scheduling keeps its first choice). At most :data:`STEP_BUDGET` allocations
   per member are tried in all.

A group that cannot fit in the devices free right now is not searched (the free
devices are counted first); its shortfall comes from one greedy pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from api import limits
from api.errors import UnsatisfiableError
from api.resource_v1 import (
    AllocationResult,
    CELDeviceSelector,
    DeviceSelector,
    ResourceClaim,
    ResourceClaimStatus,
    claim_label,
)
from dra_driver.allocator.allocation import Allocation, allocate
from dra_driver.allocator.capacity import qualify
from dra_driver.allocator.explanation import FILTER_TIMEOUT
from dra_driver.allocator.snapshot import Snapshot
from dra_driver.policy_names import FIRST_FIT

__all__ = [
    "ISLANDS_TRIED",
    "STEP_BUDGET",
    "GroupMember",
    "GroupPlacement",
    "GroupShortfall",
    "allocate_group",
    "island_of",
    "requested_devices",
]

#: Islands tried for the whole group before it is spread over several.
ISLANDS_TRIED: Final = 8
#: Allocations tried per member in one pass (placing, moving, placing again).
STEP_BUDGET: Final = 8
#: The device attribute ``type`` whose value names a whole GPU (counted as free capacity).
_WHOLE_DEVICE: Final = "gpu"


@dataclass(frozen=True)
class GroupMember:
    """One pod of the group: its pending claims and the nodes it may run on."""

    key: str
    claims: Sequence[ResourceClaim]
    nodes: Sequence[str]


@dataclass(frozen=True)
class GroupPlacement:
    """Every member's allocation (aligned with its claims), by member key."""

    allocations: Mapping[str, Allocation]
    #: The distinct NVLink islands the group's devices are on (sorted).
    islands: tuple[str, ...]

    @property
    def single_island(self) -> bool:
        return len(self.islands) == 1


@dataclass(frozen=True)
class GroupShortfall:
    """Why the group does not fit, and the closest option found."""

    total: int
    #: Members the closest option placed, and where (member key -> node).
    placed: Mapping[str, str | None]
    #: The first member the closest option could not place, and why.
    blocked: str
    reason: str
    #: Devices the group asks for, and free whole devices on its members' nodes.
    needed: int
    free: int

    def summary(self) -> str:
        """One paragraph a person reads on each pod of the group."""
        where = sorted({n for n in self.placed.values() if n})
        closest = f"the closest option places {len(self.placed)} of {self.total} pods"
        if where:
            closest += f" (on {', '.join(where)})"
        return (
            f"the group's {self.total} pods need {self.needed} device(s) together, "
            f"{self.free} whole device(s) are free on the nodes they may run on; "
            f"{closest}, then pod {self.blocked} does not fit: {self.reason}"
        )


@dataclass
class _Search:
    snapshot: Snapshot
    policy: str
    timeout: float | None
    steps: int
    best: tuple[dict[str, str | None], str, str] | None = None
    tentative: list[ResourceClaim] = field(default_factory=list)


def requested_devices(claims: Sequence[ResourceClaim]) -> int:
    """Devices the claims ask for at least (``All`` requests count none)."""
    total = 0
    for claim in claims:
        devices = claim.spec.devices if claim.spec is not None else None
        for request in devices.requests or [] if devices is not None else []:
            if request.exactly is not None:
                if (request.exactly.allocation_mode or "ExactCount") == "ExactCount":
                    total += request.exactly.count or 1
            elif request.first_available:
                total += min((sub.count or 1) for sub in request.first_available)
    return total


def island_of(snapshot: Snapshot, device_id: str, node: str | None) -> str | None:
    """The NVLink island of device ``device_id`` on ``node``, or None without one."""
    for device in snapshot.view(node).candidates:
        if device.id == device_id:
            found = device.attribute(qualify(limits.ATTRIBUTE_NVLINK_ISLAND, device.driver))
            return str(found.value) if found is not None and found.set_fields() else None
    return None


def allocate_group(
    snapshot: Snapshot,
    members: Sequence[GroupMember],
    *,
    policy: str = FIRST_FIT,
    timeout: float | None = FILTER_TIMEOUT,
    islands_tried: int = ISLANDS_TRIED,
    held_islands: Collection[str] = (),
) -> GroupPlacement | GroupShortfall:
    """Place every member or none (see the module docstring).

    Raises what :func:`allocate` raises for input no node could ever take
    (InvalidInputError, CelEvaluationError). The snapshot is unchanged afterwards.
    """
    ordered = sorted(members, key=lambda m: (len(m.nodes), -requested_devices(m.claims), m.key))
    needed = sum(requested_devices(m.claims) for m in ordered)
    free, island_nodes, total_free = _free_islands(snapshot, {n for m in ordered for n in m.nodes})
    search = _Search(snapshot, policy, timeout, STEP_BUDGET * max(len(ordered), 1))
    if needed <= total_free:
        fitting = sorted(
            (island not in held_islands, count, island)
            for island, count in free.items()
            if count >= needed
        )
        for _, _, island in fitting[:islands_tried]:
            restricted = [
                GroupMember(
                    m.key,
                    [_on_island(c, island) for c in m.claims],
                    [n for n in m.nodes if n in island_nodes[island]],
                )
                for m in ordered
            ]
            search.steps = STEP_BUDGET * max(len(ordered), 1)
            found = _place_all(search, restricted, {})
            if found is not None:
                return _placement(snapshot, found)
        search.steps = STEP_BUDGET * max(len(ordered), 1)
        found = _place_all(search, ordered, {})
        if found is not None:
            return _placement(snapshot, found)
    else:
        search.steps = len(ordered)  # one greedy pass: it cannot fit, find the closest
        _place_all(search, ordered, {})
    placed, blocked, reason = search.best or ({}, ordered[0].key if ordered else "", "")
    whole = sum(free.values())
    return GroupShortfall(len(ordered), placed, blocked, reason, needed, whole)


def _place_all(
    search: _Search, members: Sequence[GroupMember], chosen: dict[str, Allocation]
) -> dict[str, Allocation] | None:
    """Place ``members`` in order on top of ``chosen`` (tentatively allocated already),
    moving an earlier member when a later one fits nowhere; None when the budget ends."""
    if len(chosen) == len(members):
        return dict(chosen)
    member = members[len(chosen)]
    excluded: set[str] = set()
    while search.steps > 0:
        used = [a.node for a in chosen.values() if a.node is not None]
        allocation = _try(search, member, used, excluded, chosen)
        if allocation is None:
            return None
        with _tentative(search.snapshot, member.claims, allocation):
            chosen[member.key] = allocation
            found = _place_all(search, members, chosen)
            del chosen[member.key]
        if found is not None:
            return found
        if allocation.node is None:
            return None  # nothing bound to a node to move away from
        excluded.add(allocation.node)
    return None


def _try(
    search: _Search,
    member: GroupMember,
    used: Sequence[str],
    excluded: set[str],
    chosen: Mapping[str, Allocation],
) -> Allocation | None:
    """The member on the group's nodes first, then on the others; None (and the
    closest option noted) when it fits on neither."""
    nodes = [n for n in member.nodes if n not in excluded]
    preferred = [n for n in nodes if n in set(used)]
    others = [n for n in nodes if n not in set(used)]
    if preferred and _free_whole(search.snapshot, preferred) < requested_devices(member.claims):
        # The group's nodes cannot hold it (a failed try costs an explanation): let the
        # policy choose among all of them at once.
        preferred, others = [], nodes
    reason = "no node left to try"
    for candidates in (preferred, others):
        if not candidates or search.steps <= 0:
            continue
        search.steps -= 1
        try:
            return allocate(
                search.snapshot,
                member.claims,
                policy=search.policy,
                nodes=candidates,
                timeout=search.timeout,
            )
        except UnsatisfiableError as err:
            reason = _reason(err, member)
    if search.best is None or len(chosen) > len(search.best[0]):
        search.best = ({k: a.node for k, a in chosen.items()}, member.key, reason)
    return None


def _reason(err: UnsatisfiableError, member: GroupMember) -> str:
    for claim in member.claims:
        why = err.reasons.get(claim_label(claim.metadata.namespace, claim.metadata.name))
        if why:
            return why
    return str(err)


@contextmanager
def _tentative(
    snapshot: Snapshot, claims: Sequence[ResourceClaim], allocation: Allocation
) -> Iterator[None]:
    """The claims hold the allocation's devices inside the block, and nothing after it."""
    held = [_allocated(c, r) for c, r in zip(claims, allocation.results, strict=True)]
    for claim in held:
        snapshot.add_allocated(claim)
    try:
        yield
    finally:
        for claim in held:
            snapshot.remove_allocated(claim)


def _allocated(claim: ResourceClaim, result: AllocationResult) -> ResourceClaim:
    copy = claim.model_copy()
    copy.status = ResourceClaimStatus(allocation=result)
    return copy


def _on_island(claim: ResourceClaim, island: str) -> ResourceClaim:
    """``claim`` with each request (and subrequest) kept on NVLink island ``island``."""
    copy = claim.model_copy(deep=True)
    devices = copy.spec.devices if copy.spec is not None else None
    quoted = island.replace("\\", "\\\\").replace('"', '\\"')
    expression = (
        "!(device.driver in device.attributes) || "
        f'!("{limits.ATTRIBUTE_NVLINK_ISLAND}" in device.attributes[device.driver]) || '
        f'device.attributes[device.driver]["{limits.ATTRIBUTE_NVLINK_ISLAND}"] == "{quoted}"'
    )
    selector = DeviceSelector(cel=CELDeviceSelector(expression=expression))
    for request in devices.requests or [] if devices is not None else []:
        if request.exactly is not None:
            request.exactly.selectors = [*(request.exactly.selectors or []), selector]
        for sub in request.first_available or []:
            sub.selectors = [*(sub.selectors or []), selector]
    return copy


def _free_whole(snapshot: Snapshot, nodes: Sequence[str]) -> int:
    """Whole devices on ``nodes`` that nobody holds (a partitioned one counts as free:
    never below what fits)."""
    free = 0
    for node in nodes:
        for device in snapshot.view(node).candidates:
            kind = device.attribute(qualify("type", device.driver))
            whole = kind is None or not kind.set_fields() or kind.value == _WHOLE_DEVICE
            if whole and not snapshot.in_use(device.id):
                free += 1
    return free


def _free_islands(
    snapshot: Snapshot, nodes: set[str]
) -> tuple[dict[str, int], dict[str, set[str]], int]:
    """Free whole devices per NVLink island on ``nodes``, the nodes of each island, and
    free devices of any kind (partitions too: an upper bound of what the group can get).

    Whole devices rank the islands (a preference); the bound decides whether to search
    at all, so it must never be below what fits."""
    free: dict[str, int] = defaultdict(int)
    where: dict[str, set[str]] = defaultdict(set)
    bound = 0
    for node in sorted(nodes):
        for device in snapshot.view(node).candidates:
            if snapshot.in_use(device.id):
                continue
            bound += 1
            kind = device.attribute(qualify("type", device.driver))
            if kind is not None and kind.set_fields() and kind.value != _WHOLE_DEVICE:
                continue
            island = device.attribute(qualify(limits.ATTRIBUTE_NVLINK_ISLAND, device.driver))
            name = str(island.value) if island is not None and island.set_fields() else device.id
            where[name].add(node)
            if not snapshot.share_count(device.id):
                free[name] += 1
    return dict(free), dict(where), bound


def _placement(snapshot: Snapshot, found: Mapping[str, Allocation]) -> GroupPlacement:
    islands: set[str] = set()
    for allocation in found.values():
        for result in allocation.results:
            for device in result.devices.results or [] if result.devices is not None else []:
                device_id = f"{device.driver}/{device.pool}/{device.device}"
                islands.add(island_of(snapshot, device_id, allocation.node) or device_id)
    return GroupPlacement(dict(found), tuple(sorted(islands)))
