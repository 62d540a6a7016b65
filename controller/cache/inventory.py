"""ResourceSlices, DeviceClasses, DeviceTaintRules and Nodes, and the allocator snapshot
built from them.

A slice change updates only its pool(s) of the snapshot; a class's content, a
DeviceTaintRule's spec or a node's labels changing marks the snapshot for a rebuild
before the next decision (rules change seldom; each one may reach any pool).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from api.errors import InvalidInputError
from api.resource_v1 import DeviceClass, DeviceTaintRule, Node, ResourceClaim, ResourceSlice
from controller.cache.decoding import content
from controller.cache.node_filters import NodeChanges
from controller.scheduling import NodeFacts, node_facts
from dra_driver.allocator import Snapshot
from dra_driver.allocator.snapshot import PoolKey

__all__ = ["DeviceInventory"]

log = logging.getLogger(__name__)

_R = TypeVar("_R")


def _pool_key(slice_: ResourceSlice) -> PoolKey:
    return (slice_.spec.driver, slice_.spec.pool.name)


def _allocatable(node: Node) -> Any:
    return node.status.allocatable if node.status is not None else None


class DeviceInventory:
    """What devices exist and who may use them, as the allocator sees it.

    Each change returns whether capacity may have changed (the cache then looks
    at the waiting pods again). Not locked: the cache's lock covers it.
    """

    def __init__(
        self,
        allocated: Callable[[], list[ResourceClaim]],
        rejected: dict[str, str],
        changes: NodeChanges | None = None,
    ) -> None:
        #: The allocated claims a full build starts from.
        self._allocated = allocated
        #: Shared with the cache: slices the allocator cannot read are noted there.
        self._rejected = rejected
        #: Where a node's facts changing is told (the node filters re-examine it).
        self._changes = changes or NodeChanges()
        self._slices: dict[str, ResourceSlice] = {}
        self._classes: dict[str, DeviceClass] = {}
        self._rules: dict[str, DeviceTaintRule] = {}
        self._nodes: dict[str, Node] = {}
        self._facts: dict[str, NodeFacts] = {}
        self._snapshot: Snapshot | None = None
        #: Pools changed by the slice list being replaced (None: no list under way).
        self._changed_pools: set[PoolKey] | None = None
        self.rebuilds = 0
        self.pool_updates = 0

    # -- reads -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The allocator's view now, rebuilt first when it was marked for a rebuild."""
        if self._snapshot is None:
            self._snapshot = self._build()
            self.rebuilds += 1
        return self._snapshot

    @property
    def built(self) -> Snapshot | None:
        """The snapshot if one is current (claims are accounted in it incrementally)."""
        return self._snapshot

    @property
    def facts(self) -> Mapping[str, NodeFacts]:
        """The nodes as the filters read them (a live view)."""
        return self._facts

    def keys(self, resource: str) -> list[str]:
        stores: dict[str, Mapping[str, object]] = {
            "resourceslices": self._slices,
            "deviceclasses": self._classes,
            "devicetaintrules": self._rules,
            "nodes": self._nodes,
        }
        return list(stores.get(resource, {}))

    def counts(self) -> dict[str, int]:
        return {
            "resourceslices": len(self._slices),
            "deviceclasses": len(self._classes),
            "devicetaintrules": len(self._rules),
            "nodes": len(self._nodes),
        }

    # -- slices ----------------------------------------------------------------------------

    def begin_slice_list(self) -> None:
        """A complete slice list starts: its changes reach the snapshot as one update."""
        self._changed_pools = set()

    def end_slice_list(self) -> bool:
        pools, self._changed_pools = self._changed_pools, None
        return self._slices_changed(pools) if pools else False

    def upsert_slice(self, slice_: ResourceSlice) -> bool:
        name = slice_.metadata.name or ""
        old = self._slices.get(name)
        self._slices[name] = slice_
        if old is None or content(old.spec) != content(slice_.spec):
            # A slice may move to another pool: both pools change.
            return self._slices_changed({_pool_key(slice_)} | ({_pool_key(old)} if old else set()))
        return False

    def delete_slice(self, name: str) -> bool:
        gone = self._slices.pop(name, None)
        return self._slices_changed({_pool_key(gone)}) if gone is not None else False

    def _slices_changed(self, pools: set[PoolKey]) -> bool:
        """Bring the snapshot's ``pools`` in line with the slices now held (at the end
        of the list being replaced, if one is)."""
        if self._changed_pools is not None:
            self._changed_pools |= pools
            return False
        snapshot = self._snapshot
        if snapshot is not None:
            # In the order of _slices, as a full rebuild would see them.
            current = {name: s for name, s in self._slices.items() if _pool_key(s) in pools}
            self._readable(lambda kept: snapshot.replace_pools(pools, kept), current)
            self.pool_updates += 1
        return True

    # -- classes, DeviceTaintRules and nodes ----------------------------------------------

    def upsert_class(self, device_class: DeviceClass) -> bool:
        name = device_class.metadata.name or ""
        old = self._classes.get(name)
        self._classes[name] = device_class
        if old is None or content(old.spec) != content(device_class.spec):
            return self._invalidate()
        return False

    def delete_class(self, name: str) -> bool:
        return self._invalidate() if self._classes.pop(name, None) is not None else False

    def upsert_rule(self, rule: DeviceTaintRule) -> bool:
        """A DeviceTaintRule added or changed; its status (eviction progress) changes nothing."""
        name = rule.metadata.name or ""
        old = self._rules.get(name)
        self._rules[name] = rule
        if old is None or content(old.spec) != content(rule.spec):
            return self._invalidate()
        return False

    def delete_rule(self, name: str) -> bool:
        return self._invalidate() if self._rules.pop(name, None) is not None else False

    def upsert_node(self, node: Node) -> bool:
        name = node.metadata.name or ""
        facts = node_facts(node)  # raises for a bad allocatable value: the node is set aside
        old = self._nodes.get(name)
        self._nodes[name] = node
        self._facts[name] = facts
        self._changes.changed(name)
        if old is None or (old.metadata.labels or {}) != (node.metadata.labels or {}):
            # Labels decide which slices (node selectors) a node sees.
            return self._invalidate()
        # Taints, cordon or allocatable changed: only the node filter cares.
        spec_changed: bool = content(old.spec) != content(node.spec)
        return spec_changed or _allocatable(old) != _allocatable(node)

    def delete_node(self, name: str) -> bool:
        self._facts.pop(name, None)
        self._changes.changed(name)
        return self._invalidate() if self._nodes.pop(name, None) is not None else False

    # -- internals -------------------------------------------------------------------------

    def _invalidate(self) -> bool:
        self._snapshot = None
        return True

    def _build(self) -> Snapshot:
        allocated = self._allocated()
        return self._readable(
            lambda kept: Snapshot.build(
                slices=kept,
                classes=list(self._classes.values()),
                claims=allocated,
                nodes=list(self._nodes.values()),
                taint_rules=list(self._rules.values()),
            ),
            dict(self._slices),
        )

    def _readable(
        self, use: Callable[[list[ResourceSlice]], _R], slices: dict[str, ResourceSlice]
    ) -> _R:
        """``use(slices)``, leaving out each slice the allocator cannot read (it raises
        InvalidInputError naming the slice, and changes nothing) until it goes through."""
        while True:
            try:
                return use(list(slices.values()))
            except InvalidInputError as err:
                # One slice the allocator cannot read must not stop every placement.
                name = err.obj.removeprefix("slice ") if err.obj.startswith("slice ") else None
                if name is None or name not in slices:
                    raise
                log.warning("leaving out a ResourceSlice", extra={"error": str(err)})
                self._rejected[err.obj] = str(err)
                del slices[name]
