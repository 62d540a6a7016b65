"""The cluster state one or many allocations run against.

A :class:`Snapshot` holds the ResourceSlices, DeviceClasses, DeviceTaintRules and
Nodes of a moment and the devices in use (claims are added with
:meth:`Snapshot.add_allocated` and released with
:meth:`Snapshot.remove_allocated`). DeviceClasses and Nodes are fixed once
built; slices change one pool at a time with :meth:`Snapshot.replace_pools`,
which rebuilds only those pools' records and the caches that depend on them,
so that a controller following a cluster does not rebuild the whole snapshot
for one slice update. A DeviceTaintRule's taint counts as if the slices of the
devices it selects published it (:mod:`.taints`).

The snapshot is the front of four parts, each owning its state and caches, so
that no allocation rebuilds anything:

- :mod:`.pools`: slices by pool and by node, and the pools and candidate devices
  each node sees (its :class:`~.pools.NodeView`, built on first use per node);
- :mod:`.usage`: the devices in use (spec/allocator.md §2) and the counters
  available per pool generation (§6), kept up to date incrementally;
- :mod:`.feasibility`: release epochs and, per claim shape, the nodes found
  infeasible (:class:`~.feasibility.FeasibilityMemo`);
- :mod:`.rankings`: nodes ranked by usage for the placement policies.

Each device's CEL view and selector results are cached on its
:class:`~.inventory.InventoryDevice`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from api.resource_v1 import DeviceClass, DeviceTaintRule, Node, ResourceClaim, ResourceSlice
from dra_driver.allocator.feasibility import Feasibility, FeasibilityMemo
from dra_driver.allocator.inventory import CounterKey, PoolGeneration, SliceRecord
from dra_driver.allocator.nodes import NodeInfo
from dra_driver.allocator.pools import NodeView, PoolIndex, PoolKey
from dra_driver.allocator.rankings import Rankings
from dra_driver.allocator.requests import ClassPlan
from dra_driver.allocator.taints import NO_RULES, TaintRules
from dra_driver.allocator.usage import DeviceUsage

__all__ = ["PoolKey", "Snapshot", "candidate_nodes"]


class Snapshot:
    """ResourceSlices, DeviceClasses, DeviceTaintRules, Nodes and the devices in use.

    Build it with :meth:`build`. Not thread-safe: one allocation at a time.

    Queries are the bound methods of the part that answers them, set per
    instance: a search asks several per candidate device, and a method that only
    passed the call on would cost one more Python call each time.
    """

    # -- nodes and pools (:class:`~.pools.PoolIndex`) --
    node_info: Callable[[str | None], NodeInfo | None]
    """The node as selection sees it; a name without a Node object has no labels."""
    view: Callable[[str | None], NodeView]
    """The pools and candidate devices of node ``name`` (None: no particular node)."""
    pool_node: Callable[[str, str], str | None]
    """The node a pool (driver, pool) is bound to, or None for a pool not bound to one node."""

    # -- in-use state (:class:`~.usage.DeviceUsage`), by device ID --
    users: Callable[[str], list[str]]
    """Claims (``claim ns/name``) holding the device exclusively."""
    in_use: Callable[[str], bool]
    """Whether the device is allocated exclusively (admin results excluded)."""
    share_count: Callable[[str], int]
    """How many shares of the device are allocated."""
    share_holders: Callable[[str], list[str]]
    """Claims (``claim ns/name``) holding a share of the device."""
    aggregated: Callable[[str], Mapping[str, Fraction]]
    """Summed ``consumedCapacity`` of the device's shares, by qualified capacity name."""
    node_usage: Callable[[str | None], tuple[int, int]]
    """(devices in use, devices published) on a node, for placement policies."""
    counters_available: Callable[[PoolGeneration], dict[CounterKey, Fraction]]
    """Counters of the pool generation minus what allocated devices consume (§6).

    May be negative when the pool is over-committed; then nothing that
    consumes counters fits in the pool."""
    counter_set_usage: Callable[[PoolGeneration], dict[str, float]]
    """Per counter set of the pool generation, the largest used share of its counters."""

    # -- feasibility memo (:class:`~.feasibility.Feasibility`) --
    epoch: Callable[[str | None], tuple[int, int]]
    """Release epoch of a node: changes whenever devices it can use are released."""
    node_index: Callable[[str], int]
    """A node's position in :attr:`node_names`."""
    memo: Callable[[object], FeasibilityMemo]
    """The memo for a claim shape, with its first-fit cursor moved back before
    every node that released devices since the memo was last used."""

    def __init__(
        self,
        slices: Sequence[SliceRecord],
        classes: Mapping[str, DeviceClass],
        nodes: Mapping[str, NodeInfo],
        taint_rules: TaintRules = NO_RULES,
    ) -> None:
        self.classes: Mapping[str, DeviceClass] = classes
        #: The DeviceTaintRules, fixed once built (``slices`` were built with them too).
        self.taint_rules = taint_rules
        self.nodes: Mapping[str, NodeInfo] = nodes
        self._pools = PoolIndex(slices, nodes)
        #: Candidate nodes in name order (Node objects and nodes named by slices).
        self.node_names: list[str] = self._pools.candidate_names()
        #: DeviceClasses with compiled selectors, filled by the request planner.
        self.class_plans: dict[str, ClassPlan] = {}
        self._feasibility = Feasibility(self.node_names)
        self._rankings = Rankings()
        self._usage = DeviceUsage(self._pools, self._feasibility, self._rankings)
        # The queries the search asks per candidate device are the parts' own bound
        # methods, not methods that pass the call on: one Python call less on the hot path
        # (bench/allocator_bench.py). Patch the parts, not Snapshot, to change them.
        self.node_info = self._pools.node_info
        self.view = self._pools.view
        self.pool_node = self._pools.pool_node
        self.users = self._usage.users
        self.in_use = self._usage.in_use
        self.share_count = self._usage.share_count
        self.share_holders = self._usage.share_holders
        self.aggregated = self._usage.aggregated
        self.node_usage = self._usage.node_usage
        self.counters_available = self._usage.counters_available
        self.counter_set_usage = self._usage.counter_set_usage
        self.epoch = self._feasibility.epoch
        self.node_index = self._feasibility.node_index
        self.memo = self._feasibility.memo

    @classmethod
    def build(
        cls,
        *,
        slices: Iterable[ResourceSlice],
        classes: Iterable[DeviceClass],
        claims: Iterable[ResourceClaim] = (),
        nodes: Iterable[Node] = (),
        taint_rules: Iterable[DeviceTaintRule] = (),
    ) -> Snapshot:
        """A snapshot of these objects; ``claims`` are allocated claims (devices in use).

        Each device's taints are its own plus those of the ``taint_rules`` that select it.

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
        rules = TaintRules(taint_rules)
        snapshot = cls([SliceRecord(s, rules) for s in slices], class_map, node_infos, rules)
        for claim in claims:
            snapshot.add_allocated(claim)
        return snapshot

    # -- slice updates --------------------------------------------------------------

    def replace_pools(self, pools: Iterable[PoolKey], slices: Sequence[ResourceSlice]) -> None:
        """Make ``slices`` the only slices of their pools and of ``pools`` (driver, pool).

        The answer to a ResourceSlice added, changed or deleted: name the pool
        it belonged to and the one it belongs to now, and pass every current
        slice of those pools, in the order a full :meth:`build` would get them
        (the order decides between slices of one generation that disagree on
        ``resourceSliceCount``). A pool left with no slice is gone. Everything
        else is kept: the other pools' records (with their compiled selectors
        and CEL views), the in-use state, the DeviceClass plans, the DeviceTaintRules.
        Afterwards the snapshot answers every allocation exactly as a snapshot built from
        scratch with the same slices, classes, rules, nodes and claims would.

        Raises InvalidInputError (as :meth:`build`) for a slice whose node
        selector cannot be evaluated; the snapshot is then unchanged.
        """
        # May raise: nothing changed yet.
        records = [SliceRecord(s, self.taint_rules) for s in slices]
        affected = set(pools) | {(r.driver, r.pool) for r in records}
        removed = self._pools.remove(affected)
        self._usage.forget(removed.generations)
        touched, shared = removed.nodes, removed.shared
        for record in records:
            self._pools.add(record)
            if record.node_name:
                touched.add(record.node_name)
            else:
                shared = True
        self._usage.recount(affected, removed.old_nodes)

        names = self._pools.candidate_names()
        if names != self.node_names:
            # Indexes into the node list (first-fit cursors, rankings) no longer hold.
            self.node_names = names
            self._feasibility.set_nodes(names)
            self._rankings.clear()
        if shared:
            # A pool not bound to one node may be seen from every node.
            self._pools.forget_views()
            self._rankings.clear()
        changed = sorted(touched)
        self._pools.forget_views(changed)
        for name in changed:
            self._rankings.changed(name)
        # Devices may have been added: a node remembered as infeasible may fit now.
        for name in changed:
            self._feasibility.released(name)
        if shared:
            self._feasibility.released(None)

    # -- in-use state ---------------------------------------------------------------

    def add_allocated(self, claim: ResourceClaim) -> None:
        """Mark the devices of an allocated claim in use (replacing what it held before).

        Results with ``adminAccess: true`` are not in use; results with a
        ``shareID`` add their ``consumedCapacity`` to the device. A claim
        without ``status.allocation`` holds nothing.
        """
        self._usage.add(claim)

    def remove_allocated(self, claim: ResourceClaim) -> None:
        """Release what :meth:`add_allocated` recorded for this claim; no-op if nothing."""
        self._usage.remove(claim)

    def ranked_nodes(self, name: str, key: Callable[[str], Any]) -> list[str]:
        """All candidate nodes sorted by ``key`` (ties: name order), kept sorted
        incrementally: ``key`` must depend only on the node's :attr:`node_usage`.

        ``name`` identifies the ordering (one per policy).
        """
        return self._rankings.ranked(name, self.node_names, key)


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
