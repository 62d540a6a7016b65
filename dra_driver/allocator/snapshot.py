"""The cluster state one or many allocations run against.

A :class:`Snapshot` holds the ResourceSlices, DeviceClasses and Nodes of a
moment and the devices in use (claims are added with
:meth:`Snapshot.add_allocated` and released with
:meth:`Snapshot.remove_allocated`). DeviceClasses and Nodes are fixed once
built; slices change one pool at a time with :meth:`Snapshot.replace_pools`,
which rebuilds only those pools' records and the caches that depend on them,
so that a controller following a cluster does not rebuild the whole snapshot
for one slice update.

In use (spec/allocator.md §2), per device ``driver/pool/device``:

- exclusively, by every result of an allocated claim except results with
  ``adminAccess: true`` (admin access never blocks) and results with a
  ``shareID``;
- shared, by results with a ``shareID`` (consumable capacity); their
  ``consumedCapacity`` is summed per device and capacity;
- a device that is in use either way consumes its counters (§6).

Caches, all owned here so that no allocation rebuilds anything:

- the pools each node sees (:meth:`view`), built on first use per node;
- each device's CEL view and selector results (on the device record);
- available counters per pool generation, kept up to date incrementally;
- per claim shape, the nodes found infeasible (:class:`FeasibilityMemo`).

Infeasibility is monotonic while devices are only added to the in-use state:
a node that cannot fit a claim shape cannot fit it after more devices are
taken. So a node's *release epoch* changes only when devices on it are
released (or, for pools not bound to one node, a global epoch), and a node
remembered as infeasible is skipped until its epoch moves.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final

from api.resource_v1 import DeviceClass, Node, ResourceClaim, ResourceSlice, describe
from dra_driver.allocator.capacity import qualify
from dra_driver.allocator.inventory import (
    CounterKey,
    InventoryDevice,
    PoolGeneration,
    PoolRecord,
    SliceRecord,
    device_id,
)
from dra_driver.allocator.nodes import NodeInfo
from dra_driver.allocator.requests import ClassPlan

#: A pool: (driver, pool name).
PoolKey = tuple[str, str]
#: Claim shapes whose infeasible nodes are remembered (least recently used dropped).
FEASIBILITY_MEMO_SHAPES: Final = 256
#: Release-log entries kept before memos fall back to a full (memoised) rescan.
_RELEASE_LOG_LIMIT: Final = 4096


@dataclass(eq=False)
class PoolView:
    """One pool as seen from one node: its newest relevant generation (§3)."""

    generation: PoolGeneration
    #: Slices of that generation with devices that target the node, sorted by name.
    slices: list[SliceRecord]
    incomplete: bool
    invalid: str | None

    @property
    def label(self) -> str:
        return self.generation.label


@dataclass(eq=False)
class NodeView:
    """Everything a search on one node iterates over, in search order (§4)."""

    name: str | None
    node: NodeInfo | None
    pools: list[PoolView]
    #: Devices of the complete, valid pools: pools by (binding conditions last,
    #: driver, pool), slices by name, devices in slice order.
    candidates: list[InventoryDevice]
    #: Devices of perDeviceNodeSelection slices that are not available on the node.
    off_node: frozenset[str]
    #: Static per-policy data about the node (for example its strongest device).
    policy_cache: dict[str, object] = field(default_factory=dict)

    @property
    def has_invalid_pool(self) -> bool:
        return any(pool.invalid is not None for pool in self.pools)


@dataclass(eq=False)
class FeasibilityMemo:
    """What is known about one claim shape: nodes proven infeasible, by epoch."""

    infeasible: dict[str | None, tuple[int, int]] = field(default_factory=dict)
    #: First-fit resumes here: every node before it is known infeasible.
    cursor: int = 0
    log_position: int = 0


class _Ranking:
    """Nodes sorted by a usage-dependent key; nodes whose usage changed are re-sorted."""

    def __init__(self, names: Sequence[str], key: Callable[[str], Any]) -> None:
        self.key = key
        self.index = {name: i for i, name in enumerate(names)}
        self.current: dict[str, tuple[Any, int, str]] = {
            name: (key(name), i, name) for i, name in enumerate(names)
        }
        self.entries = sorted(self.current.values())
        self.dirty: set[str] = set()

    def names(self) -> list[str]:
        for name in self.dirty:
            old = self.current.get(name)
            if old is None:
                continue
            del self.entries[bisect.bisect_left(self.entries, old)]
            new = (self.key(name), old[1], name)
            self.current[name] = new
            bisect.insort(self.entries, new)
        self.dirty.clear()
        return [name for _, _, name in self.entries]


@dataclass(frozen=True, slots=True)
class _Held:
    """One device a registered claim holds."""

    device: str
    driver: str
    pool: str
    name: str
    share: str | None  # share key for shared results, None for exclusive ones
    consumed: tuple[tuple[str, Fraction], ...]


class Snapshot:
    """ResourceSlices, DeviceClasses, Nodes and the devices in use.

    Build it with :meth:`build`. Not thread-safe: one allocation at a time.
    """

    def __init__(
        self,
        slices: Sequence[SliceRecord],
        classes: Mapping[str, DeviceClass],
        nodes: Mapping[str, NodeInfo],
    ) -> None:
        self.classes: Mapping[str, DeviceClass] = classes
        self.nodes: Mapping[str, NodeInfo] = nodes
        self._pools: dict[PoolKey, PoolRecord] = {}
        self._node_slices: dict[str, list[SliceRecord]] = {}
        self._shared_slices: list[SliceRecord] = []
        for record in slices:
            self._add_slice(record)
        #: Candidate nodes in name order (Node objects and nodes named by slices).
        self.node_names: list[str] = self._candidate_names()
        self._node_index = {name: i for i, name in enumerate(self.node_names)}
        self._views: dict[str | None, NodeView] = {}
        #: DeviceClasses with compiled selectors, filled by the request planner.
        self.class_plans: dict[str, ClassPlan] = {}

        # In-use state.
        self._held: dict[str, list[_Held]] = {}
        self._users: dict[str, list[str]] = {}
        self._shares: dict[str, dict[str, tuple[str, tuple[tuple[str, Fraction], ...]]]] = {}
        self._aggregated: dict[str, dict[str, Fraction]] = {}
        self._available: dict[PoolGeneration, dict[CounterKey, Fraction]] = {}
        self._node_used: dict[str, int] = {}
        self._share_serial = 0

        # Release epochs and the memo of infeasible nodes per claim shape.
        self._node_epoch: dict[str, int] = {}
        self._global_epoch = 0
        self._release_log: list[str | None] = []
        self._log_base = 0
        self._memos: OrderedDict[object, FeasibilityMemo] = OrderedDict()
        self._rankings: dict[str, _Ranking] = {}

    # -- construction ---------------------------------------------------------------

    @classmethod
    def build(
        cls,
        *,
        slices: Iterable[ResourceSlice],
        classes: Iterable[DeviceClass],
        claims: Iterable[ResourceClaim] = (),
        nodes: Iterable[Node] = (),
    ) -> Snapshot:
        """A snapshot of these objects; ``claims`` are allocated claims (devices in use).

        Claims without ``status.allocation`` are ignored here. Raises
        InvalidInputError for a slice whose node selector cannot be evaluated
        (an unknown operator, ``Gt`` with a non-integer value, ...).
        """
        node_infos = {
            node.metadata.name: NodeInfo(node.metadata.name, dict(node.metadata.labels or {}))
            for node in nodes
            if node.metadata.name
        }
        class_map = {c.metadata.name: c for c in classes if c.metadata.name}
        snapshot = cls([SliceRecord(s) for s in slices], class_map, node_infos)
        for claim in claims:
            snapshot.add_allocated(claim)
        return snapshot

    def _add_slice(self, record: SliceRecord) -> None:
        key = (record.driver, record.pool)
        pool = self._pools.get(key)
        if pool is None:
            pool = PoolRecord(record.driver, record.pool)
            self._pools[key] = pool
        pool.add(record)
        if record.node_name:
            self._node_slices.setdefault(record.node_name, []).append(record)
        else:
            self._shared_slices.append(record)

    def _candidate_names(self) -> list[str]:
        """Node objects, nodes slices are bound to, and nodes per-device selection names."""
        names: set[str] = set(self.nodes) | set(self._node_slices)
        for record in self._shared_slices:
            if record.per_device:
                names.update(d.node_name for d in record.model.spec.devices or [] if d.node_name)
        return sorted(names)

    # -- slice updates --------------------------------------------------------------

    def replace_pools(self, pools: Iterable[PoolKey], slices: Sequence[ResourceSlice]) -> None:
        """Make ``slices`` the only slices of their pools and of ``pools`` (driver, pool).

        The answer to a ResourceSlice added, changed or deleted: name the pool
        it belonged to and the one it belongs to now, and pass every current
        slice of those pools, in the order a full :meth:`build` would get them
        (the order decides between slices of one generation that disagree on
        ``resourceSliceCount``). A pool left with no slice is gone. Everything
        else is kept: the other pools' records (with their compiled selectors
        and CEL views), the in-use state, the DeviceClass plans. Afterwards the
        snapshot answers every allocation exactly as a snapshot built from
        scratch with the same slices, classes, nodes and claims would.

        Raises InvalidInputError (as :meth:`build`) for a slice whose node
        selector cannot be evaluated; the snapshot is then unchanged.
        """
        records = [SliceRecord(s) for s in slices]  # may raise: nothing changed yet
        affected = set(pools) | {(r.driver, r.pool) for r in records}
        touched: set[str] = set()
        shared = False
        old_nodes: dict[PoolKey, str | None] = {}
        for key in affected:
            pool = self._pools.pop(key, None)
            if pool is None:
                continue
            old_nodes[key] = pool.node
            for generation in pool.generations.values():
                self._available.pop(generation, None)
                for record in generation.slices:
                    if record.node_name:
                        touched.add(record.node_name)
                    else:
                        shared = True
        if touched:
            for name in touched:
                kept = [r for r in self._node_slices[name] if (r.driver, r.pool) not in affected]
                if kept:
                    self._node_slices[name] = kept
                else:
                    del self._node_slices[name]
        if shared:
            self._shared_slices = [
                r for r in self._shared_slices if (r.driver, r.pool) not in affected
            ]
        for record in records:
            self._add_slice(record)
            if record.node_name:
                touched.add(record.node_name)
            else:
                shared = True
        self._recount_used(affected, old_nodes)

        names = self._candidate_names()
        if names != self.node_names:
            # Indexes into the node list (first-fit cursors, rankings) no longer hold.
            self.node_names = names
            self._node_index = {name: i for i, name in enumerate(names)}
            self._memos.clear()
            self._rankings.clear()
        if shared:
            # A pool not bound to one node may be seen from every node.
            self._views.clear()
            self._rankings.clear()
        for name in sorted(touched):
            self._views.pop(name, None)
            for ranking in self._rankings.values():
                ranking.dirty.add(name)
        # Devices may have been added: a node remembered as infeasible may fit now.
        for name in sorted(touched):
            self._bump(name)
        if shared:
            self._bump(None)

    def _recount_used(
        self, affected: set[PoolKey], old_nodes: Mapping[PoolKey, str | None]
    ) -> None:
        """Move the in-use count of the allocated devices of ``affected`` pools to the
        node each pool is bound to now (the pool may be gone, or bound elsewhere)."""
        moved: dict[str, PoolKey] = {}
        for held in self._held.values():
            for item in held:
                key = (item.driver, item.pool)
                if key in affected:
                    moved[item.device] = key
        for key in moved.values():
            old = old_nodes.get(key)
            new = self.pool_node(*key)
            if old == new:
                continue
            if old is not None:
                self._node_used[old] = self._node_used.get(old, 0) - 1
            if new is not None:
                self._node_used[new] = self._node_used.get(new, 0) + 1

    # -- nodes and pools ------------------------------------------------------------

    def node_info(self, name: str | None) -> NodeInfo | None:
        """The node as selection sees it; a name without a Node object has no labels."""
        if name is None:
            return None
        return self.nodes.get(name) or NodeInfo(name)

    def view(self, name: str | None) -> NodeView:
        """The pools and candidate devices of node ``name`` (None: no particular node)."""
        view = self._views.get(name)
        if view is None:
            view = self._build_view(name)
            self._views[name] = view
        return view

    def _build_view(self, name: str | None) -> NodeView:
        node = self.node_info(name)
        local = self._node_slices.get(name, []) if name is not None else []
        groups: dict[tuple[str, str], list[SliceRecord]] = {}
        for record in [*local, *self._shared_slices]:
            if record.relevant_for(node):
                groups.setdefault((record.driver, record.pool), []).append(record)
        pools: list[PoolView] = []
        for key, relevant in groups.items():
            newest = max(s.generation for s in relevant)
            kept = [s for s in relevant if s.generation == newest]
            pool = self._pools[key]
            generation = pool.generations[newest]
            expected = kept[0].slice_count
            incomplete = False
            if len(kept) != expected:
                if pool.newest > newest:
                    # A newer generation is being published elsewhere: this one is obsolete.
                    continue
                incomplete = len(generation.slices) != expected
            with_devices = sorted((s for s in kept if s.has_devices), key=lambda s: s.name)
            if not with_devices:
                continue
            pools.append(PoolView(generation, with_devices, incomplete, generation.invalid_reason))
        pools.sort(
            key=lambda p: (
                p.generation.has_binding_conditions,
                p.generation.driver,
                p.generation.pool,
            )
        )
        candidates: list[InventoryDevice] = []
        off_node: set[str] = set()
        for pool_view in pools:
            for record in pool_view.slices:
                if record.per_device:
                    off_node.update(d.id for d in record.devices if not d.available_on(node))
                if not pool_view.incomplete and pool_view.invalid is None:
                    candidates.extend(record.devices)
        return NodeView(name, node, pools, candidates, frozenset(off_node))

    def pool_node(self, driver: str, pool: str) -> str | None:
        """The node a pool is bound to, or None for a pool not bound to one node."""
        record = self._pools.get((driver, pool))
        return record.node if record is not None else None

    # -- in-use state ---------------------------------------------------------------

    def add_allocated(self, claim: ResourceClaim) -> None:
        """Mark the devices of an allocated claim in use (replacing what it held before).

        Results with ``adminAccess: true`` are not in use; results with a
        ``shareID`` add their ``consumedCapacity`` to the device. A claim
        without ``status.allocation`` holds nothing.
        """
        label = describe(claim)
        if label in self._held:
            self.remove_allocated(claim)
        allocation = claim.status.allocation if claim.status is not None else None
        results = allocation.devices.results if allocation and allocation.devices else None
        held: list[_Held] = []
        for result in results or []:
            if result.admin_access:
                continue
            dev = device_id(result.driver, result.pool, result.device)
            consumed: tuple[tuple[str, Fraction], ...] = ()
            share: str | None = None
            if result.share_id is not None:
                self._share_serial += 1
                share = f"{label}#{self._share_serial}"
                consumed = tuple(
                    (qualify(name, result.driver), amount.value)
                    for name, amount in (result.consumed_capacity or {}).items()
                )
            item = _Held(dev, result.driver, result.pool, result.device, share, consumed)
            self._take(item, label)
            held.append(item)
        self._held[label] = held

    def remove_allocated(self, claim: ResourceClaim) -> None:
        """Release what :meth:`add_allocated` recorded for this claim; no-op if nothing."""
        label = describe(claim)
        held = self._held.pop(label, None)
        if not held:
            return
        released_global = False
        released_nodes: set[str] = set()
        for item in held:
            self._release(item, label)
            node = self.pool_node(item.driver, item.pool)
            if node is None:
                released_global = True
            else:
                released_nodes.add(node)
        for node in sorted(released_nodes):
            self._bump(node)
        if released_global:
            self._bump(None)

    def _bump(self, node: str | None) -> None:
        if node is None:
            self._global_epoch += 1
        else:
            self._node_epoch[node] = self._node_epoch.get(node, 0) + 1
        self._release_log.append(node)
        if len(self._release_log) > _RELEASE_LOG_LIMIT:
            self._log_base += len(self._release_log)
            self._release_log.clear()

    def _is_allocated(self, dev: str) -> bool:
        return dev in self._users or dev in self._shares

    def _take(self, item: _Held, label: str) -> None:
        was_allocated = self._is_allocated(item.device)
        if item.share is None:
            self._users.setdefault(item.device, []).append(label)
        else:
            shares = self._shares.setdefault(item.device, {})
            if not shares:
                # A first share lifts the counter check for a multi-allocatable
                # device (§5.6): that may make a node feasible again.
                self._bump(self.pool_node(item.driver, item.pool))
            shares[item.share] = (label, item.consumed)
            totals = self._aggregated.setdefault(item.device, {})
            for name, amount in item.consumed:
                totals[name] = totals.get(name, Fraction(0)) + amount
        if not was_allocated:
            self._on_allocation_change(item, +1)

    def _release(self, item: _Held, label: str) -> None:
        if item.share is None:
            users = self._users.get(item.device)
            if users is None or label not in users:
                return
            users.remove(label)
            if not users:
                del self._users[item.device]
        else:
            shares = self._shares.get(item.device)
            if shares is None or item.share not in shares:
                return
            del shares[item.share]
            totals = self._aggregated[item.device]
            for name, amount in item.consumed:
                totals[name] -= amount
            if not shares:
                del self._shares[item.device]
                del self._aggregated[item.device]
        if not self._is_allocated(item.device):
            self._on_allocation_change(item, -1)

    def _on_allocation_change(self, item: _Held, sign: int) -> None:
        node = self.pool_node(item.driver, item.pool)
        if node is not None:
            self._node_used[node] = self._node_used.get(node, 0) + sign
            for ranking in self._rankings.values():
                ranking.dirty.add(node)
        pool = self._pools.get((item.driver, item.pool))
        if pool is None:
            return
        for generation in pool.generations.values():
            available = self._available.get(generation)
            if available is None:
                continue
            record = generation.devices_by_name.get(item.name)
            if record is None:
                continue
            for key, amount in record.consumes:
                if key in available:
                    available[key] -= sign * amount

    def users(self, dev: str) -> list[str]:
        """Claims (``claim ns/name``) holding the device exclusively."""
        return self._users.get(dev, [])

    def in_use(self, dev: str) -> bool:
        """Whether the device is allocated exclusively (admin results excluded)."""
        return dev in self._users

    def share_count(self, dev: str) -> int:
        return len(self._shares.get(dev, ()))

    def share_holders(self, dev: str) -> list[str]:
        return [label for label, _ in self._shares.get(dev, {}).values()]

    def aggregated(self, dev: str) -> Mapping[str, Fraction]:
        """Summed ``consumedCapacity`` of the device's shares, by qualified capacity name."""
        return self._aggregated.get(dev, {})

    def counters_available(self, generation: PoolGeneration) -> dict[CounterKey, Fraction]:
        """Counters of the pool generation minus what allocated devices consume (§6).

        May be negative when the pool is over-committed; then nothing that
        consumes counters fits in the pool.
        """
        available = self._available.get(generation)
        if available is None:
            available = dict(generation.counter_totals)
            for name, record in generation.devices_by_name.items():
                dev = device_id(generation.driver, generation.pool, name)
                if not self._is_allocated(dev):
                    continue
                for key, amount in record.consumes:
                    if key in available:
                        available[key] -= amount
            self._available[generation] = available
        return available

    def node_usage(self, name: str | None) -> tuple[int, int]:
        """(devices in use, devices published) on a node, for placement policies."""
        if name is None:
            return 0, len(self.view(None).candidates)
        return self._node_used.get(name, 0), len(self.view(name).candidates)

    def ranked_nodes(self, name: str, key: Callable[[str], Any]) -> list[str]:
        """All candidate nodes sorted by ``key`` (ties: name order), kept sorted
        incrementally: ``key`` must depend only on the node's :meth:`node_usage`.

        ``name`` identifies the ordering (one per policy).
        """
        ranking = self._rankings.get(name)
        if ranking is None:
            ranking = _Ranking(self.node_names, key)
            self._rankings[name] = ranking
        return ranking.names()

    # -- feasibility memo -----------------------------------------------------------

    def epoch(self, node: str | None) -> tuple[int, int]:
        """Release epoch of a node: changes whenever devices it can use are released."""
        return (self._node_epoch.get(node, 0) if node is not None else 0, self._global_epoch)

    def node_index(self, name: str) -> int:
        return self._node_index[name]

    def memo(self, shape: object) -> FeasibilityMemo:
        """The memo for a claim shape, with its first-fit cursor moved back before
        every node that released devices since the memo was last used."""
        memo = self._memos.get(shape)
        if memo is None:
            memo = FeasibilityMemo(log_position=self._log_base + len(self._release_log))
            self._memos[shape] = memo
            if len(self._memos) > FEASIBILITY_MEMO_SHAPES:
                self._memos.popitem(last=False)
            return memo
        self._memos.move_to_end(shape)
        end = self._log_base + len(self._release_log)
        if memo.log_position < self._log_base:
            memo.cursor = 0
        else:
            for node in self._release_log[memo.log_position - self._log_base :]:
                if node is None:
                    memo.cursor = 0
                    break
                index = self._node_index.get(node)
                if index is not None and index < memo.cursor:
                    memo.cursor = index
        memo.log_position = end
        return memo


def candidate_nodes(
    snapshot: Snapshot, node: str | None, nodes: Sequence[str] | None = None
) -> list[str | None]:
    """The nodes an allocation may use: ``node``, or every known node in name order.

    With no node known at all, one entry None: no particular node, where only
    devices of ``allNodes`` slices exist. ``nodes`` (a caller's own filter)
    limits the candidates to those nodes, in name order; an empty list leaves none.
    """
    if nodes is not None:
        allowed = set(nodes)
        if node is not None:
            return [node] if node in allowed else []
        return [name for name in sorted(allowed)]
    if node is not None:
        return [node]
    names: list[str | None] = list(snapshot.node_names)
    return names or [None]
