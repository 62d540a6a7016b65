"""The snapshot's slices by pool and by node, and what each node sees of them.

Following spec/allocator.md §3-§4, a node sees the slices bound to it and the
slices not bound to one node (``allNodes``, a node selector, per-device node
selection) that select it; of each pool, only the newest generation among those
slices counts. Each node's :class:`NodeView` is built on first use and kept
until a slice it may see changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from dra_driver.allocator.inventory import InventoryDevice, PoolGeneration, PoolRecord, SliceRecord
from dra_driver.allocator.nodes import NodeInfo

#: A pool: (driver, pool name).
PoolKey = tuple[str, str]


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
    #: Devices of perDeviceNodeSelection slices that are not available on the node.
    off_node: frozenset[str]
    #: How many devices :attr:`candidates` holds, known without building them.
    published: int
    #: Static per-policy data about the node (for example its strongest device).
    policy_cache: dict[str, object] = field(default_factory=dict)

    @cached_property
    def candidates(self) -> list[InventoryDevice]:
        """Devices of the complete, valid pools: pools by (binding conditions last,
        driver, pool), slices by name, devices in slice order.

        Built on first use: ranking nodes by usage needs only :attr:`published`.
        """
        found: list[InventoryDevice] = []
        for pool_view in self.pools:
            if not pool_view.incomplete and pool_view.invalid is None:
                for record in pool_view.slices:
                    found.extend(record.devices)
        return found

    @property
    def has_invalid_pool(self) -> bool:
        return any(pool.invalid is not None for pool in self.pools)


@dataclass(eq=False)
class RemovedPools:
    """What removing pools from a :class:`PoolIndex` left behind."""

    #: Nodes whose bound slices were removed.
    nodes: set[str]
    #: Whether a slice not bound to one node was removed.
    shared: bool
    #: The node each removed pool was bound to (None: not bound to one node).
    old_nodes: dict[PoolKey, str | None]
    generations: list[PoolGeneration]


class PoolIndex:
    """Slice records by pool, by node and not bound to a node; the node views built from them."""

    def __init__(self, slices: Iterable[SliceRecord], nodes: Mapping[str, NodeInfo]) -> None:
        self.nodes: Mapping[str, NodeInfo] = nodes
        self._pools: dict[PoolKey, PoolRecord] = {}
        self._node_slices: dict[str, list[SliceRecord]] = {}
        self._shared_slices: list[SliceRecord] = []
        self._views: dict[str | None, NodeView] = {}
        for record in slices:
            self.add(record)

    def add(self, record: SliceRecord) -> None:
        """Index one slice (views that may see it are the caller's to forget)."""
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

    def remove(self, keys: set[PoolKey]) -> RemovedPools:
        """Drop every slice of these pools (views that saw them are the caller's to forget)."""
        removed = RemovedPools(set(), False, {}, [])
        for key in keys:
            pool = self._pools.pop(key, None)
            if pool is None:
                continue
            removed.old_nodes[key] = pool.node
            for generation in pool.generations.values():
                removed.generations.append(generation)
                for record in generation.slices:
                    if record.node_name:
                        removed.nodes.add(record.node_name)
                    else:
                        removed.shared = True
        for name in removed.nodes:
            kept = [r for r in self._node_slices[name] if (r.driver, r.pool) not in keys]
            if kept:
                self._node_slices[name] = kept
            else:
                del self._node_slices[name]
        if removed.shared:
            self._shared_slices = [r for r in self._shared_slices if (r.driver, r.pool) not in keys]
        return removed

    def candidate_names(self) -> list[str]:
        """Node objects, nodes slices are bound to, and nodes per-device selection names."""
        names: set[str] = set(self.nodes) | set(self._node_slices)
        for record in self._shared_slices:
            if record.per_device:
                names.update(d.node_name for d in record.model.spec.devices or [] if d.node_name)
        return sorted(names)

    def pool(self, driver: str, pool: str) -> PoolRecord | None:
        return self._pools.get((driver, pool))

    def pool_node(self, driver: str, pool: str) -> str | None:
        """The node a pool is bound to, or None for a pool not bound to one node."""
        record = self._pools.get((driver, pool))
        return record.node if record is not None else None

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

    def forget_views(self, names: Sequence[str] | None = None) -> None:
        """Rebuild these nodes' views on next use (None: every node's)."""
        if names is None:
            self._views.clear()
            return
        for name in names:
            self._views.pop(name, None)

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
        published = 0
        off_node: set[str] = set()
        for pool_view in pools:
            for record in pool_view.slices:
                if record.per_device:
                    off_node.update(d.id for d in record.devices if not d.available_on(node))
                if not pool_view.incomplete and pool_view.invalid is None:
                    published += len(record.model.spec.devices or [])
        return NodeView(name, node, pools, frozenset(off_node), published)
