"""CacheStores: the stores behind :class:`~controller.cache.cluster.ClusterCache`, and the
watches' sink that hands each change to its store and says which pods it concerns.

One lock (``lock``) covers every store; the sink takes it for each change, after decoding
the object outside it (:func:`~controller.cache.decoding.decode_object`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agent_kit.kube import Resource
from api.errors import InvalidInputError
from api.pod_group import PodGroup
from api.resource_v1 import (
    DeviceClass,
    DeviceTaintRule,
    Node,
    ResourceClaim,
    ResourceSlice,
    claim_key,
    describe,
    object_key,
)
from controller.cache.decoding import decode_object
from controller.cache.groups import GroupIndex
from controller.cache.inventory import DeviceInventory
from controller.cache.ledger import ClaimLedger, has_allocation
from controller.cache.node_filters import NodeChanges, NodeFilters
from controller.cache.pods import PodIndex
from controller.scheduling import PodInfo

__all__ = ["CacheStores"]

log = logging.getLogger(__name__)


def _key(resource: Resource, obj: Mapping[str, Any]) -> str:
    """The key of a raw object in its store."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    if resource == "pods":
        return f"{meta.get('namespace')}/{name}"
    if resource in ("resourceclaims", "podgroups"):
        return object_key(meta.get("namespace"), name)
    return name


class CacheStores:
    """The stores and the sink (see the module docstring); :class:`ClusterCache` adds the
    reads and the decisions' bookkeeping."""

    def __init__(
        self,
        *,
        gate: str | None = None,
        on_change: Callable[[Iterable[str]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.RLock()
        self.gate = gate
        self.on_change = on_change
        self._clock = clock
        #: Gated pods -> when the watch first delivered them with the gate (monotonic).
        self.gated_since: dict[str, float] = {}
        #: Pods that could not be placed so far: re-examined when capacity changes.
        self.waiting: set[str] = set()
        #: Objects that did not decode (``slice x`` -> why), for logs and tests.
        self.rejected: dict[str, str] = {}
        self._claims = ClaimLedger()
        changes = NodeChanges()
        self._pods = PodIndex(changes)
        self._groups = GroupIndex()
        self._devices = DeviceInventory(self._claims.allocated, self.rejected, changes)
        self.node_filters = NodeFilters(self._devices.facts, self._pods.usage, changes)
        self._synced: set[str] = set()

    @property
    def rebuilds(self) -> int:
        """Snapshot rebuilds so far (observability; tests check incremental updates)."""
        return self._devices.rebuilds

    @property
    def pool_updates(self) -> int:
        """Slice changes applied to the snapshot pool by pool, without a rebuild."""
        return self._devices.pool_updates

    # -- Sink ------------------------------------------------------------------------------

    def replace(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        """A complete list: everything not in it is gone.

        The slice changes of one list (a relist after a watch expired, when many
        slices may have changed) reach the snapshot as one pool update."""
        decoded = [decode_object(resource, item) for item in items]  # before the lock
        with self.lock:
            slices = resource == "resourceslices"
            if slices:
                self._devices.begin_slice_list()
            try:
                keys = {_key(resource, item) for item in items}
                for old in [k for k in self._keys(resource) if k not in keys]:
                    self._delete(resource, old)
                for item, model in zip(items, decoded, strict=True):
                    self._upsert(resource, item, model)
                if resource == "podgroups":
                    self._groups.served = True
            finally:
                if slices and self._devices.end_slice_list():
                    self._capacity_changed()
            self._synced.add(resource)

    def apply(self, resource: Resource, event_type: str, obj: dict[str, Any]) -> None:
        model = None if event_type == "DELETED" else decode_object(resource, obj)
        with self.lock:
            if event_type == "DELETED":
                self._delete(resource, _key(resource, obj))
            else:
                self._upsert(resource, obj, model)

    def synced(self, resources: Iterable[str]) -> bool:
        with self.lock:
            return all(r in self._synced for r in resources)

    # -- internals -------------------------------------------------------------------------

    def _keys(self, resource: Resource) -> list[str]:
        if resource == "resourceclaims":
            return self._claims.keys()
        if resource == "pods":
            return self._pods.keys()
        if resource == "podgroups":
            return self._groups.keys()
        return self._devices.keys(resource)

    def _notify(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys and self.on_change is not None:
            self.on_change(keys)

    def _capacity_changed(self) -> None:
        self._notify(sorted(self.waiting))

    def _upsert(self, resource: Resource, raw: Mapping[str, Any], model: object) -> None:
        """Store ``model``, what :func:`decode_object` made of ``raw``."""
        changed = False
        try:
            if isinstance(model, InvalidInputError):
                raise model
            if isinstance(model, ResourceSlice):
                changed = self._devices.upsert_slice(model)
            elif isinstance(model, DeviceClass):
                changed = self._devices.upsert_class(model)
            elif isinstance(model, DeviceTaintRule):
                changed = self._devices.upsert_rule(model)
            elif isinstance(model, Node):
                changed = self._devices.upsert_node(model)
            elif isinstance(model, ResourceClaim):
                self._upsert_claim(model)
            elif isinstance(model, PodInfo):
                self._upsert_pod(model)
            elif isinstance(model, PodGroup):
                self._notify(self._groups.upsert(model))
        except InvalidInputError as err:
            label = describe(raw) if resource != "pods" else f"pod {_key(resource, raw)}"
            if self.rejected.get(label) != str(err):
                log.warning("ignoring an object that does not decode", extra={"error": str(err)})
            self.rejected[label] = str(err)
            return
        if changed:
            self._capacity_changed()

    def _delete(self, resource: Resource, key: str) -> None:
        changed = False
        if resource == "resourceslices":
            changed = self._devices.delete_slice(key)
        elif resource == "deviceclasses":
            changed = self._devices.delete_class(key)
        elif resource == "devicetaintrules":
            changed = self._devices.delete_rule(key)
        elif resource == "nodes":
            changed = self._devices.delete_node(key)
        elif resource == "resourceclaims":
            self._delete_claim(key)
        elif resource == "pods":
            self._delete_pod(key)
        elif resource == "podgroups":
            self._notify(self._groups.delete(key))
        if changed:
            self._capacity_changed()

    def _upsert_claim(self, claim: ResourceClaim) -> None:
        if self._claims.is_stale(claim):
            return  # a re-read after a conflict already brought a newer version
        old = self._claims.observe(claim)
        key = claim_key(claim)
        self._account(key)
        pods = set(self._pods.users(key))
        for owner in claim.metadata.owner_references or []:
            if owner.kind == "Pod" and owner.name:
                pods.add(object_key(claim.metadata.namespace, owner.name))
        self._notify(sorted(pods))
        if old is not None and has_allocation(old) and not has_allocation(claim):
            self._capacity_changed()

    def _delete_claim(self, key: str) -> None:
        claim = self._claims.remove(key)
        if claim is not None:
            snapshot = self._devices.built
            if snapshot is not None:
                snapshot.remove_allocated(claim)
            self._notify(self._pods.users(key))
            self._capacity_changed()

    def _upsert_pod(self, pod: PodInfo) -> None:
        if self._pods.is_stale(pod):
            return
        old = self._pods.put(pod)
        self._groups.track(pod)
        if self.gate is not None and pod.has_gate(self.gate):
            self.gated_since.setdefault(pod.key, self._clock())
        if old is not None and old.bound and (pod.terminal and not old.terminal):
            self._capacity_changed()
        if not pod.bound or old is None or not old.bound:
            # Updates of running pods (status, probes) concern no placement.
            self._notify([pod.key])

    def _delete_pod(self, key: str) -> None:
        pod = self._pods.remove(key)
        self._groups.untrack(key)
        if pod is not None:
            self.gated_since.pop(key, None)
            self.waiting.discard(key)
            self._notify([key])
            if pod.bound:
                self._capacity_changed()

    def _account(self, key: str) -> None:
        """Bring the snapshot's in-use state for claim ``key`` in line with :meth:`claim`."""
        snapshot = self._devices.built
        if snapshot is None:
            return
        effective = self._claims.effective(key)
        if effective is None:
            return
        if has_allocation(effective):
            snapshot.add_allocated(effective)
        else:
            snapshot.remove_allocated(effective)
