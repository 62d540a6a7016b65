"""The controller's picture of the cluster, kept up to date by the watches.

:class:`ClusterCache` is the :class:`~agent_kit.kube.Sink` of every
:class:`~agent_kit.kube.Reflector`. It decodes each object once and keeps:

- ResourceSlices, DeviceClasses and Nodes, and from them (plus the allocated
  claims) one allocator :class:`~dra_driver.allocator.Snapshot`. A slice
  added, deleted or changed in content updates only its pool(s) of the
  snapshot (:meth:`~dra_driver.allocator.Snapshot.replace_pools`: the other
  pools keep their compiled records); a change of a class's content, or of a
  node's labels, marks the snapshot for a rebuild before the next decision;
  a change that only moves the resourceVersion (a status heartbeat, managed
  fields) does neither;
- ResourceClaims. Their allocations go into the snapshot incrementally
  (``add_allocated`` / ``remove_allocated``), whoever wrote them: the
  scheduler's allocations for ungated pods count as devices in use as soon as
  the watch delivers them;
- *assumed* claims: allocations this controller decided and is writing. They
  count as in use from the decision on, so the next decision cannot hand out
  the same devices, and stay until the watch delivers a version at least as
  new as the one the write returned (or the write failed and they are
  forgotten) -- the scheduler's "assume cache", for the same reason;
- Pods (as :class:`~controller.scheduling.PodInfo`), the cpu/memory/pod count
  requested on each node by the pods bound to it, and the pods this
  controller released to the scheduler that are not bound yet (*nominated*),
  so two placements in a row do not both count on the same free cpu.

Every change is turned into the pod keys (``namespace/name``) whose placement
it may affect, handed to ``on_change`` (the work queue): a pod's own change;
a claim's pods (by name, and the owner of a template claim); and for a change
that frees or adds capacity (a slice, class or node change, a claim released
or deleted, a bound pod gone) every pod marked *waiting* (unplaceable so far).

Thread-safety: the reflectors call in from their threads; every access holds
``lock`` (re-entrant). Decisions take the lock too, so a decision sees one
consistent state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agent_kit.kube import Resource
from api.errors import InvalidInputError
from api.resource_v1 import (
    DeviceClass,
    K8sObject,
    Node,
    ResourceClaim,
    ResourceSlice,
    claim_key,
    describe,
    field_errors,
)
from controller.scheduling import NodeFacts, NodeUsage, PodInfo, Requests, node_facts, parse_pod
from dra_driver.allocator import Snapshot
from dra_driver.allocator.snapshot import PoolKey

__all__ = ["ClusterCache", "claim_key", "decode"]

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=K8sObject)
_R = TypeVar("_R")


def decode(model: type[_M], raw: Mapping[str, Any]) -> _M:
    """Decode a raw object with this project's model; InvalidInputError names the object."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise InvalidInputError(obj=describe(raw), errors=field_errors(err)) from None


def _resource_version(obj: K8sObject) -> int | None:
    try:
        return int(obj.metadata.resource_version or "")
    except ValueError:
        return None


def _version_below(new: str | None, old: str | None) -> bool:
    try:
        return int(new or "") < int(old or "")
    except ValueError:
        return False


def _older(new: K8sObject, old: K8sObject) -> bool:
    """Whether ``new`` is an older version of the same object than ``old``."""
    if new.metadata.uid != old.metadata.uid:
        return False
    return _version_below(new.metadata.resource_version, old.metadata.resource_version)


def _content(model: BaseModel | None) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True) if model else None


@dataclass
class _Assumed:
    claim: ResourceClaim
    #: The resourceVersion our write returned; None while the write is in flight.
    written: int | None = None


class ClusterCache:
    """See the module docstring."""

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
        self._slices: dict[str, ResourceSlice] = {}
        self._classes: dict[str, DeviceClass] = {}
        self._nodes: dict[str, Node] = {}
        self._facts: dict[str, NodeFacts] = {}
        self._claims: dict[str, ResourceClaim] = {}
        self._assumed: dict[str, _Assumed] = {}
        self._pods: dict[str, PodInfo] = {}
        self._pod_claims: dict[str, frozenset[str]] = {}
        self._claim_pods: dict[str, set[str]] = {}
        self._usage: dict[str, NodeUsage] = {}
        self._nominated: dict[str, tuple[str, Requests]] = {}
        self._snapshot: Snapshot | None = None
        self._synced: set[str] = set()
        #: Pods that could not be placed so far: re-examined when capacity changes.
        self.waiting: set[str] = set()
        #: Objects that did not decode (``slice x`` -> why), for logs and tests.
        self.rejected: dict[str, str] = {}
        #: Snapshot rebuilds so far (observability; tests check incremental updates).
        self.rebuilds = 0
        #: Slice changes applied to the snapshot pool by pool, without a rebuild.
        self.pool_updates = 0
        #: Pools changed by the slice list being replaced (None: no list under way).
        self._changed_pools: set[PoolKey] | None = None

    # -- Sink ------------------------------------------------------------------------------

    def replace(self, resource: Resource, items: list[dict[str, Any]]) -> None:
        """A complete list: everything not in it is gone.

        The slice changes of one list (a relist after a watch expired, when many
        slices may have changed) reach the snapshot as one pool update."""
        with self.lock:
            if resource == "resourceslices":
                self._changed_pools = set()
            try:
                keys = {self._key(resource, item) for item in items}
                for old in [k for k in self._keys(resource) if k not in keys]:
                    self._delete(resource, old)
                for item in items:
                    self._upsert(resource, item)
            finally:
                pools, self._changed_pools = self._changed_pools, None
                if pools:
                    self._slices_changed(pools)
            self._synced.add(resource)

    def apply(self, resource: Resource, event_type: str, obj: dict[str, Any]) -> None:
        with self.lock:
            if event_type == "DELETED":
                self._delete(resource, self._key(resource, obj))
            else:
                self._upsert(resource, obj)

    def synced(self, resources: Iterable[str]) -> bool:
        with self.lock:
            return all(r in self._synced for r in resources)

    # -- reads -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The allocator's view now (rebuilt first if slices, classes or nodes changed)."""
        with self.lock:
            if self._snapshot is None:
                self._snapshot = self._build()
                self.rebuilds += 1
            return self._snapshot

    def pod(self, key: str) -> PodInfo | None:
        with self.lock:
            return self._pods.get(key)

    def pods(self) -> list[PodInfo]:
        with self.lock:
            return list(self._pods.values())

    def claim(self, key: str) -> ResourceClaim | None:
        """The claim as decisions see it: the assumed version while one is pending."""
        with self.lock:
            assumed = self._assumed.get(key)
            return assumed.claim if assumed is not None else self._claims.get(key)

    def observed_claim(self, key: str) -> ResourceClaim | None:
        """The claim as the watch last delivered it."""
        with self.lock:
            return self._claims.get(key)

    def nodes(self) -> Mapping[str, NodeFacts]:
        """The nodes as the filters read them. A live view: hold ``lock`` while using it."""
        return self._facts

    def node_usage(self) -> Mapping[str, NodeUsage]:
        """Per node: requests of the bound pods plus the nominated ones. A live view:
        hold ``lock`` while using it."""
        return self._usage

    def pods_of_claim(self, key: str) -> set[str]:
        with self.lock:
            return set(self._claim_pods.get(key, ()))

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "resourceslices": len(self._slices),
                "deviceclasses": len(self._classes),
                "nodes": len(self._nodes),
                "resourceclaims": len(self._claims),
                "pods": len(self._pods),
                "assumed": len(self._assumed),
            }

    # -- assumed allocations -----------------------------------------------------------------

    def assume(self, claim: ResourceClaim) -> None:
        """Count ``claim``'s allocation as in use now; its write is in flight."""
        with self.lock:
            key = claim_key(claim)
            self._assumed[key] = _Assumed(claim)
            self._account(key)

    def confirm(self, claim: ResourceClaim) -> None:
        """Our write of ``claim`` returned this object: keep it until the watch catches up."""
        with self.lock:
            key = claim_key(claim)
            written = _resource_version(claim)
            observed = self._claims.get(key)
            seen = _resource_version(observed) if observed is not None else None
            if written is not None and seen is not None and seen >= written:
                self._assumed.pop(key, None)
            else:
                self._assumed[key] = _Assumed(claim, written)
            self._account(key)

    def forget(self, key: str) -> None:
        """Our write did not happen: the watch's version is the truth again."""
        with self.lock:
            if self._assumed.pop(key, None) is not None:
                self._account(key)

    def nominate(self, pod: PodInfo, node: str) -> None:
        """``pod`` was released to the scheduler for ``node``; count its requests there."""
        with self.lock:
            self._unnominate(pod.key)
            self._nominated[pod.key] = (node, pod.requests)
            self._add_usage(node, pod.requests, +1)

    def unnominate(self, pod_key: str) -> None:
        with self.lock:
            self._unnominate(pod_key)

    def _unnominate(self, pod_key: str) -> None:
        entry = self._nominated.pop(pod_key, None)
        if entry is not None:
            self._add_usage(entry[0], entry[1], -1)

    def _add_usage(self, node: str, requests: Requests, sign: int) -> None:
        usage = self._usage.setdefault(node, NodeUsage())
        usage.requests = usage.requests + requests if sign > 0 else usage.requests - requests
        usage.pods += sign
        if usage.pods == 0:
            del self._usage[node]

    def nominated_node(self, pod_key: str) -> str | None:
        with self.lock:
            entry = self._nominated.get(pod_key)
            return entry[0] if entry is not None else None

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _key(resource: Resource, obj: Mapping[str, Any]) -> str:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        namespace = meta.get("namespace")
        return f"{namespace}/{name}" if resource in ("pods", "resourceclaims") else name

    def _keys(self, resource: Resource) -> list[str]:
        stores: dict[str, Mapping[str, object]] = {
            "resourceslices": self._slices,
            "deviceclasses": self._classes,
            "nodes": self._nodes,
            "resourceclaims": self._claims,
            "pods": self._pods,
        }
        return list(stores.get(resource, {}))

    def _notify(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys and self.on_change is not None:
            self.on_change(keys)

    def _capacity_changed(self) -> None:
        self._notify(sorted(self.waiting))

    def _invalidate(self) -> None:
        self._snapshot = None
        self._capacity_changed()

    def _upsert(self, resource: Resource, raw: Mapping[str, Any]) -> None:
        try:
            if resource == "resourceslices":
                self._upsert_slice(decode(ResourceSlice, raw))
            elif resource == "deviceclasses":
                self._upsert_class(decode(DeviceClass, raw))
            elif resource == "nodes":
                self._upsert_node(decode(Node, raw))
            elif resource == "resourceclaims":
                self._upsert_claim(decode(ResourceClaim, raw))
            elif resource == "pods":
                self._upsert_pod(parse_pod(raw))
        except InvalidInputError as err:
            label = describe(raw) if resource != "pods" else f"pod {self._key(resource, raw)}"
            if self.rejected.get(label) != str(err):
                log.warning("ignoring an object that does not decode", extra={"error": str(err)})
            self.rejected[label] = str(err)

    def _delete(self, resource: Resource, key: str) -> None:
        if resource == "resourceslices":
            gone = self._slices.pop(key, None)
            if gone is not None:
                self._slices_changed({_pool_key(gone)})
        elif resource == "deviceclasses":
            if self._classes.pop(key, None) is not None:
                self._invalidate()
        elif resource == "nodes":
            self._facts.pop(key, None)
            if self._nodes.pop(key, None) is not None:
                self._invalidate()
        elif resource == "resourceclaims":
            claim = self._claims.pop(key, None)
            self._assumed.pop(key, None)
            if claim is not None:
                if self._snapshot is not None:
                    self._snapshot.remove_allocated(claim)
                self._notify(self._claim_pods.get(key, ()))
                self._capacity_changed()
        elif resource == "pods":
            pod = self._pods.pop(key, None)
            if pod is not None:
                self._count(pod, -1)
                self._index_pod(key, None)
                self._unnominate(key)
                self.gated_since.pop(key, None)
                self.waiting.discard(key)
                self._notify([key])
                if pod.bound:
                    self._capacity_changed()

    def _upsert_slice(self, slice_: ResourceSlice) -> None:
        name = slice_.metadata.name or ""
        old = self._slices.get(name)
        self._slices[name] = slice_
        if old is None or _content(old.spec) != _content(slice_.spec):
            # A slice may move to another pool: both pools change.
            self._slices_changed({_pool_key(slice_)} | ({_pool_key(old)} if old else set()))

    def _slices_changed(self, pools: set[PoolKey]) -> None:
        """Bring the snapshot's ``pools`` in line with the slices now held (at the end
        of the list being replaced, if one is)."""
        if self._changed_pools is not None:
            self._changed_pools |= pools
            return
        snapshot = self._snapshot
        if snapshot is not None:
            # In the order of _slices, as a full rebuild would see them.
            current = {name: s for name, s in self._slices.items() if _pool_key(s) in pools}
            self._readable(lambda kept: snapshot.replace_pools(pools, kept), current)
            self.pool_updates += 1
        self._capacity_changed()

    def _upsert_class(self, device_class: DeviceClass) -> None:
        name = device_class.metadata.name or ""
        old = self._classes.get(name)
        self._classes[name] = device_class
        if old is None or _content(old.spec) != _content(device_class.spec):
            self._invalidate()

    def _upsert_node(self, node: Node) -> None:
        name = node.metadata.name or ""
        facts = node_facts(node)  # raises for a bad allocatable value: the node is set aside
        old = self._nodes.get(name)
        self._nodes[name] = node
        self._facts[name] = facts
        if old is None or (old.metadata.labels or {}) != (node.metadata.labels or {}):
            # Labels decide which slices (node selectors) a node sees.
            self._invalidate()
        elif _content(old.spec) != _content(node.spec) or _allocatable_only(
            old
        ) != _allocatable_only(node):
            # Taints, cordon or allocatable changed: only the node filter cares.
            self._capacity_changed()

    def _upsert_claim(self, claim: ResourceClaim) -> None:
        key = claim_key(claim)
        old = self._claims.get(key)
        if old is not None and _older(claim, old):
            return  # a re-read after a conflict already brought a newer version
        self._claims[key] = claim
        assumed = self._assumed.get(key)
        if assumed is not None:
            seen = _resource_version(claim)
            if assumed.written is not None and (seen is None or seen >= assumed.written):
                del self._assumed[key]
            elif assumed.written is None and claim.status and claim.status.allocation:
                # Someone else allocated it while our write is in flight: that write
                # will fail with a conflict; the server's version is the truth now.
                del self._assumed[key]
        self._account(key)
        pods = set(self._claim_pods.get(key, ()))
        for owner in claim.metadata.owner_references or []:
            if owner.kind == "Pod" and owner.name:
                pods.add(f"{claim.metadata.namespace}/{owner.name}")
        self._notify(sorted(pods))
        was_allocated = old is not None and old.status is not None and old.status.allocation
        now_allocated = claim.status is not None and claim.status.allocation
        if was_allocated and not now_allocated:
            self._capacity_changed()

    def _account(self, key: str) -> None:
        """Bring the snapshot's in-use state for claim ``key`` in line with :meth:`claim`."""
        if self._snapshot is None:
            return
        effective = self.claim(key)
        if effective is None:
            return
        if effective.status is not None and effective.status.allocation is not None:
            self._snapshot.add_allocated(effective)
        else:
            self._snapshot.remove_allocated(effective)

    def _upsert_pod(self, pod: PodInfo) -> None:
        old = self._pods.get(pod.key)
        if (
            old is not None
            and old.uid == pod.uid
            and _version_below(pod.resource_version, old.resource_version)
        ):
            return
        if old is not None:
            self._count(old, -1)
        self._pods[pod.key] = pod
        self._count(pod, +1)
        self._index_pod(pod.key, pod)
        if pod.bound:
            self._unnominate(pod.key)
        if self.gate is not None and pod.has_gate(self.gate):
            self.gated_since.setdefault(pod.key, self._clock())
        if old is not None and old.bound and (pod.terminal and not old.terminal):
            self._capacity_changed()
        if not pod.bound or old is None or not old.bound:
            # Updates of running pods (status, probes) concern no placement.
            self._notify([pod.key])

    def _count(self, pod: PodInfo, sign: int) -> None:
        if pod.node_name and not pod.terminal:
            self._add_usage(pod.node_name, pod.requests, sign)

    def _index_pod(self, key: str, pod: PodInfo | None) -> None:
        old = self._pod_claims.pop(key, frozenset())
        for claim in old:
            pods = self._claim_pods.get(claim)
            if pods is not None:
                pods.discard(key)
                if not pods:
                    del self._claim_pods[claim]
        if pod is None:
            return
        names, _ = pod.claim_names()
        claims = frozenset(f"{pod.namespace}/{name}" for name in names)
        self._pod_claims[key] = claims
        for claim in claims:
            self._claim_pods.setdefault(claim, set()).add(key)

    def _build(self) -> Snapshot:
        allocated = []
        for key in self._claims.keys() | self._assumed.keys():
            claim = self.claim(key)
            if claim is not None and claim.status is not None and claim.status.allocation:
                allocated.append(claim)
        return self._readable(
            lambda kept: Snapshot.build(
                slices=kept,
                classes=list(self._classes.values()),
                claims=allocated,
                nodes=list(self._nodes.values()),
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
                self.rejected[err.obj] = str(err)
                del slices[name]


def _pool_key(slice_: ResourceSlice) -> PoolKey:
    return (slice_.spec.driver, slice_.spec.pool.name)


def _allocatable_only(node: Node) -> Any:
    return node.status.allocatable if node.status is not None else None
