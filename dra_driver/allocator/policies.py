"""Placement policies: which of the valid allocations to prefer (beyond upstream).

Upstream (``first-fit``) takes the first node in name order that fits and the
first solution in search order. The other policies look at several complete
solutions and keep the best; every solution they compare is valid under the
upstream rules, a policy only chooses among them.

Vocabulary. A *unit* is what a device occupies physically: the counter sets
it consumes (one per physical GPU in the usual partitionable model), or the
device itself when it consumes no counters. A unit's *usage* is in [0, 1]:
for a counter set the largest used fraction of any of its counters; for a plain
device 1 when allocated, the used fraction of its capacities when shared, else
0. A *fresh* unit has usage 0.

- ``binpack``: break as few fresh units as possible (a MIG slice on an
  already-split GPU beats splitting a whole one), then prefer the node with
  the fewest free devices, then the most used units. Nodes are tried partly
  used ones first, fewest free devices first; candidates used units first,
  smallest partitions first.
- ``spread``: the least used node (used/published devices), then the least
  used units. Candidates are tried least used first.
- ``most-capable``: the strongest devices, by ``cudaComputeCapability``
  (version), then ``memory`` capacity; ties keep upstream order (never the
  product name). Candidates are tried strongest first.
- ``topology``: per claim, as few distinct NVLink islands, then PCIe roots,
  then NUMA nodes as possible (a device without the attribute counts as its own
  island/root/node), then ``binpack``. Candidates are tried grouped by topology.

Every policy first honours ``firstAvailable``: a solution using earlier
subrequests (higher prioritized-list score) always wins. Ties then go to the
earlier node in the policy's node order and the earlier solution in search
order, so results are deterministic.

Budgets (keep the cost per claim predictable): see :data:`NODE_BUDGET`,
:data:`SOLUTION_BUDGET`, :data:`STEP_BUDGET`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, Final, Protocol

from api import limits
from api.semver import Semver
from dra_driver.allocator.capacity import qualify
from dra_driver.allocator.inventory import InventoryDevice
from dra_driver.allocator.matching import evaluate
from dra_driver.allocator.pools import NodeView
from dra_driver.allocator.requests import RequestPlan, Selector
from dra_driver.allocator.search import CandidateOrder, Solution
from dra_driver.allocator.snapshot import Snapshot

#: Feasible nodes a scoring policy compares before it picks (in its node order).
NODE_BUDGET: Final = 8
#: Complete solutions compared per node.
SOLUTION_BUDGET: Final = 16
#: Search steps per node once a first solution is known.
STEP_BUDGET: Final = 2000

#: Topology levels, most important first; each is a list of attribute names
#: tried in turn (unqualified names are in the device driver's domain).
TOPOLOGY_ATTRIBUTES: Final = (
    (limits.ATTRIBUTE_NVLINK_ISLAND,),
    (limits.ATTRIBUTE_PCIE_ROOT, "pcieRoot"),
    (limits.ATTRIBUTE_NUMA_NODE, "numaNode", "numa"),
)
#: Attribute ranked first by ``most-capable`` (a version such as ``9.0.0``).
CAPABILITY_ATTRIBUTE: Final = "cudaComputeCapability"
#: Capacity ranked second by ``most-capable``.
MEMORY_CAPACITY: Final = "memory"

Score = tuple[object, ...]


class Policy(Protocol):
    """How one placement policy orders nodes and candidates and scores solutions."""

    name: str
    #: Whether :meth:`bound` never decreases along :meth:`rank_nodes` order, so
    #: the first node that cannot win ends the search.
    monotone: bool

    def rank_nodes(self, snapshot: Snapshot, names: Sequence[str | None]) -> list[str | None]:
        """Nodes in the order they are tried (ties: the given order)."""
        ...

    def bound(self, snapshot: Snapshot, name: str | None) -> Score | None:
        """A lower bound of the score of any solution on the node (None: unknown).

        It may bound only a prefix of the score. A node whose bound is above the
        best score so far is not searched; nor is one whose bound equals it when
        the bound covers the whole score (ties go to the earlier node anyway).
        """
        ...

    def order(self, snapshot: Snapshot, view: NodeView) -> CandidateOrder | None:
        """How to rearrange a node's candidates per request, or None for upstream order."""
        ...

    def score(self, snapshot: Snapshot, view: NodeView, solution: Solution) -> Score:
        """Lower is better."""
        ...


# -- unit usage ---------------------------------------------------------------------


def units(device: InventoryDevice) -> tuple[object, ...]:
    """The physical units a device occupies (counter sets, or the device itself)."""
    cached = device.policy_keys.get("units")
    if isinstance(cached, tuple):
        return cached
    if device.consumes:
        generation = device.slice.pool_generation
        found: tuple[object, ...] = tuple(
            sorted({(id(generation), key[0]) for key, _ in device.consumes})
        )
    else:
        found = (device.id,)
    device.policy_keys["units"] = found
    return found


def _counter_sets(device: InventoryDevice) -> tuple[str, ...]:
    """The names of the counter sets the device consumes (static per device)."""
    cached = device.policy_keys.get("counter-sets")
    if isinstance(cached, tuple):
        return cached
    found = tuple({key[0]: None for key, _ in device.consumes})
    device.policy_keys["counter-sets"] = found
    return found


def unit_usage(snapshot: Snapshot, device: InventoryDevice) -> float:
    """Usage in [0, 1] of the most used unit the device occupies."""
    if device.consumes:
        generation = device.slice.pool_generation
        assert generation is not None
        # The largest used share of any counter (with a positive total) of the sets
        # the device consumes, from the snapshot's per-set figures.
        by_set = snapshot.counter_set_usage(generation)
        usage = 0.0
        for name in _counter_sets(device):
            level = by_set.get(name)
            if level is not None:
                usage = max(usage, level)
        return min(usage, 1.0)
    if snapshot.in_use(device.id):
        return 1.0
    if device.multi and snapshot.share_count(device.id):
        aggregated = snapshot.aggregated(device.id)
        fractions = [
            float(aggregated.get(name, Fraction(0)) / entry.total)
            for name, entry in device.capacity.items()
            if entry.total > 0
        ]
        return min(max(fractions, default=0.5), 1.0)
    return 0.0


def partition_size(device: InventoryDevice) -> float:
    """Share of its counter sets a device consumes (0 for a device without counters)."""
    if not device.consumes:
        return 0.0
    cached = device.policy_keys.get("partition-size")
    if isinstance(cached, float):
        return cached
    generation = device.slice.pool_generation
    assert generation is not None
    totals = generation.counter_totals
    shares = [float(amount / totals[key]) for key, amount in device.consumes if totals.get(key)]
    size = sum(shares) / len(shares) if shares else 0.0
    device.policy_keys["partition-size"] = size
    return size


def _ranked(
    snapshot: Snapshot, names: Sequence[str | None], policy: str, key: Callable[[str], Any]
) -> list[str | None]:
    if len(names) > 1 and names == snapshot.node_names:
        # The whole cluster: the snapshot keeps this order up to date incrementally.
        return list(snapshot.ranked_nodes(policy, key))
    return sorted(names, key=lambda n: key(n) if n is not None else 0)


def _has_shared_pools(snapshot: Snapshot, view: NodeView) -> bool:
    cached = view.policy_cache.get("shared-pools")
    if not isinstance(cached, bool):
        cached = any(
            snapshot.pool_node(p.generation.driver, p.generation.pool) is None for p in view.pools
        )
        view.policy_cache["shared-pools"] = cached
    return cached


def _free_devices(snapshot: Snapshot, name: str | None) -> int:
    used, published = snapshot.node_usage(name)
    return max(published - used, 0)


def _used_fraction(snapshot: Snapshot, name: str | None) -> Fraction:
    used, published = snapshot.node_usage(name)
    return Fraction(min(used, published), published) if published else Fraction(0)


def _narrowed(
    plan: RequestPlan,
    ordered: list[InventoryDevice],
    cache: dict[int, list[InventoryDevice]],
) -> list[InventoryDevice]:
    """``ordered`` without the devices a selector of ``plan`` rejects, per request.

    The search skips those devices anyway (:meth:`DeviceMatcher.selectable`); dropping them
    once here saves looking at them again at every step of a policy's longer search. The
    selectors are evaluated in the search's order, and a device whose evaluation fails
    before a selector rejects it stays, so the search reports that error where it did.
    """
    found = cache.get(id(plan))
    if found is None:
        selectors = (*plan.device_class.selectors, *plan.selectors)
        found = [d for d in ordered if _may_select(selectors, d)]
        cache[id(plan)] = found
    return found


def _may_select(selectors: Sequence[Selector], device: InventoryDevice) -> bool:
    for selector in selectors:
        result = evaluate(selector, device)
        if result is False:
            return False
        if result is not True:
            return True  # an evaluation error: the search raises it on reaching the device
    return True


def _reorder(
    candidates: Sequence[InventoryDevice], key: Mapping[str, tuple[object, ...]]
) -> list[InventoryDevice]:
    indexed = sorted(range(len(candidates)), key=lambda i: (key[candidates[i].id], i))
    return [candidates[i] for i in indexed]


# -- binpack --------------------------------------------------------------------------


class Binpack:
    name = "binpack"
    # Nodes are ranked by their bound, so the first node that cannot win ends the search.
    monotone = True

    def rank_nodes(self, snapshot: Snapshot, names: Sequence[str | None]) -> list[str | None]:
        return _ranked(snapshot, names, self.name, lambda n: self.bound(snapshot, n))

    def bound(self, snapshot: Snapshot, name: str | None) -> Score:
        # Nodes with something in use first: only there can a solution break no
        # fresh unit. On a node with nothing in use (and no pools shared with
        # other nodes) every unit is fresh.
        used, _ = snapshot.node_usage(name)
        untouched = used == 0 and not _has_shared_pools(snapshot, snapshot.view(name))
        if untouched:
            # Every unit fresh: usage 0, so the bound is the whole score.
            return (1, _free_devices(snapshot, name), 0.0)
        return (0, _free_devices(snapshot, name), -math.inf)

    def device_key(self, snapshot: Snapshot, device: InventoryDevice) -> tuple[object, ...]:
        usage = unit_usage(snapshot, device)
        return (0 if usage > 0 else 1, -usage, partition_size(device))

    def order(self, snapshot: Snapshot, view: NodeView) -> CandidateOrder | None:
        keys: dict[str, tuple[object, ...]] = {}
        ordered: list[InventoryDevice] | None = None
        narrowed: dict[int, list[InventoryDevice]] = {}

        def order(
            plan: RequestPlan, candidates: Sequence[InventoryDevice]
        ) -> Sequence[InventoryDevice]:
            nonlocal ordered
            if ordered is None:
                for device in candidates:
                    keys[device.id] = self.device_key(snapshot, device)
                ordered = _reorder(candidates, keys)
            return _narrowed(plan, ordered, narrowed)

        return order

    def score(self, snapshot: Snapshot, view: NodeView, solution: Solution) -> Score:
        usage: dict[object, float] = {}
        for picks in solution.picks:
            for pick in picks:
                level = unit_usage(snapshot, pick.device)
                for unit in units(pick.device):
                    usage[unit] = max(usage.get(unit, 0.0), level)
        fresh = sum(1 for level in usage.values() if level == 0)
        return (fresh, _free_devices(snapshot, view.name), -sum(usage.values()))


# -- spread ---------------------------------------------------------------------------


class Spread:
    name = "spread"
    monotone = True

    def rank_nodes(self, snapshot: Snapshot, names: Sequence[str | None]) -> list[str | None]:
        return _ranked(snapshot, names, self.name, lambda n: _used_fraction(snapshot, n))

    def bound(self, snapshot: Snapshot, name: str | None) -> Score | None:
        return (_used_fraction(snapshot, name), 0.0)

    def order(self, snapshot: Snapshot, view: NodeView) -> CandidateOrder | None:
        ordered: list[InventoryDevice] | None = None
        narrowed: dict[int, list[InventoryDevice]] = {}

        def order(
            plan: RequestPlan, candidates: Sequence[InventoryDevice]
        ) -> Sequence[InventoryDevice]:
            nonlocal ordered
            if ordered is None:
                keys = {d.id: (unit_usage(snapshot, d),) for d in candidates}
                ordered = _reorder(candidates, keys)
            return _narrowed(plan, ordered, narrowed)

        return order

    def score(self, snapshot: Snapshot, view: NodeView, solution: Solution) -> Score:
        usage: dict[object, float] = {}
        for picks in solution.picks:
            for pick in picks:
                level = unit_usage(snapshot, pick.device)
                for unit in units(pick.device):
                    usage[unit] = max(usage.get(unit, 0.0), level)
        return (_used_fraction(snapshot, view.name), sum(usage.values()))


# -- most-capable ---------------------------------------------------------------------


def capability(device: InventoryDevice) -> tuple[object, ...]:
    """Sort key, strongest first: compute capability (missing last), then memory."""
    cached = device.policy_keys.get("most-capable")
    if isinstance(cached, tuple):
        return cached
    version: Semver | None = None
    attribute = device.attribute(qualify(CAPABILITY_ATTRIBUTE, device.driver))
    if attribute is not None:
        value = attribute.value
        if isinstance(value, Semver):
            version = value
        elif isinstance(value, str):
            try:
                version = Semver.parse(value, normalize=True)
            except ValueError:
                version = None
    memory = device.capacity_total(qualify(MEMORY_CAPACITY, device.driver))
    amount = memory if memory is not None else Fraction(0)
    key: tuple[object, ...] = (
        (0, -version.major, -version.minor, -version.patch, -amount)
        if version is not None
        else (1, 0, 0, 0, -amount)
    )
    device.policy_keys["most-capable"] = key
    return key


class MostCapable:
    name = "most-capable"
    monotone = True

    def _best(self, snapshot: Snapshot, name: str | None) -> tuple[object, ...]:
        view = snapshot.view(name)
        cached = view.policy_cache.get(self.name)
        if not isinstance(cached, tuple):
            cached = min((capability(d) for d in view.candidates), default=(2,))
            view.policy_cache[self.name] = cached
        return cached

    def rank_nodes(self, snapshot: Snapshot, names: Sequence[str | None]) -> list[str | None]:
        # Static per node (its strongest device), so a plain sort is exact.
        return sorted(names, key=lambda n: self._best(snapshot, n))

    def bound(self, snapshot: Snapshot, name: str | None) -> Score | None:
        return (self._best(snapshot, name),)

    def order(self, snapshot: Snapshot, view: NodeView) -> CandidateOrder | None:
        del snapshot
        ordered = view.policy_cache.get("most-capable-order")
        if not isinstance(ordered, list):
            keys = {d.id: capability(d) for d in view.candidates}
            ordered = _reorder(view.candidates, keys)
            view.policy_cache["most-capable-order"] = ordered
        fixed: list[InventoryDevice] = ordered
        narrowed: dict[int, list[InventoryDevice]] = {}

        def order(
            plan: RequestPlan, candidates: Sequence[InventoryDevice]
        ) -> Sequence[InventoryDevice]:
            del candidates
            return _narrowed(plan, fixed, narrowed)

        return order

    def score(self, snapshot: Snapshot, view: NodeView, solution: Solution) -> Score:
        del snapshot, view
        return tuple(sorted(capability(p.device) for picks in solution.picks for p in picks))


# -- topology -------------------------------------------------------------------------


def topology(device: InventoryDevice) -> tuple[tuple[object, ...], ...]:
    """The device's (island, PCIe root, NUMA node); a missing one is unique to the device."""
    cached = device.policy_keys.get("topology")
    if isinstance(cached, tuple):
        return cached
    levels: list[tuple[object, ...]] = []
    for names in TOPOLOGY_ATTRIBUTES:
        found: tuple[object, ...] = (1, device.id)
        for name in names:
            attribute = device.attribute(qualify(name, device.driver))
            if attribute is not None and attribute.set_fields():
                found = (0, str(attribute.value))
                break
        levels.append(found)
    key = tuple(levels)
    device.policy_keys["topology"] = key
    return key


class Topology:
    name = "topology"
    monotone = False

    def __init__(self) -> None:
        self._binpack = Binpack()

    def rank_nodes(self, snapshot: Snapshot, names: Sequence[str | None]) -> list[str | None]:
        return self._binpack.rank_nodes(snapshot, names)

    def bound(self, snapshot: Snapshot, name: str | None) -> Score | None:
        return None

    def order(self, snapshot: Snapshot, view: NodeView) -> CandidateOrder | None:
        ordered: list[InventoryDevice] | None = None
        narrowed: dict[int, list[InventoryDevice]] = {}

        def order(
            plan: RequestPlan, candidates: Sequence[InventoryDevice]
        ) -> Sequence[InventoryDevice]:
            nonlocal ordered
            if ordered is None:
                keys = {
                    d.id: (*topology(d), *self._binpack.device_key(snapshot, d)) for d in candidates
                }
                ordered = _reorder(candidates, keys)
            return _narrowed(plan, ordered, narrowed)

        return order

    def score(self, snapshot: Snapshot, view: NodeView, solution: Solution) -> Score:
        spread = [0] * len(TOPOLOGY_ATTRIBUTES)
        for picks in solution.picks:
            for level in range(len(TOPOLOGY_ATTRIBUTES)):
                spread[level] += len({topology(p.device)[level] for p in picks})
        return (*spread, *self._binpack.score(snapshot, view, solution))


def scoring_policy(name: str) -> Policy:
    """The scoring policy called ``name`` (not ``first-fit``)."""
    if name == "binpack":
        return Binpack()
    if name == "spread":
        return Spread()
    if name == "most-capable":
        return MostCapable()
    if name == "topology":
        return Topology()
    raise ValueError(name)
