"""ClusterCache: the watches' sink, which hands each change to its store and says which pods
it concerns; and the one-call reads a placement needs, taken under one lock."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
from controller.cache.groups import GroupIndex, GroupView
from controller.cache.inventory import DeviceInventory
from controller.cache.ledger import ClaimLedger, has_allocation
from controller.cache.node_filters import NodeChanges, NodeFilters
from controller.cache.pods import PodIndex
from controller.cache.views import HeldTwice, PlacementView, held_twice
from controller.scheduling import NodeFacts, NodeUsage, PodInfo
from dra_driver.allocator import Snapshot

__all__ = ["ClusterCache"]

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


class ClusterCache:
    """See the package docstring."""

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

    # -- reads -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The allocator's view now (rebuilt first if classes, rules or node labels changed)."""
        with self.lock:
            return self._devices.snapshot()

    def pod(self, key: str) -> PodInfo | None:
        with self.lock:
            return self._pods.get(key)

    def pods(self) -> list[PodInfo]:
        with self.lock:
            return self._pods.all()

    def claim(self, key: str) -> ResourceClaim | None:
        """The claim as decisions see it: the assumed version while one is pending."""
        with self.lock:
            return self._claims.effective(key)

    def observed_claim(self, key: str) -> ResourceClaim | None:
        """The claim as the watch last delivered it."""
        with self.lock:
            return self._claims.observed(key)

    def nodes(self) -> Mapping[str, NodeFacts]:
        """The nodes as the filters read them. A live view: hold ``lock`` while using it."""
        return self._devices.facts

    def node_usage(self) -> Mapping[str, NodeUsage]:
        """Per node: requests of the bound pods plus the nominated ones. A live view:
        hold ``lock`` while using it."""
        return self._pods.usage

    def pods_of_claim(self, key: str) -> set[str]:
        with self.lock:
            return set(self._pods.users(key))

    def counts(self) -> dict[str, int]:
        with self.lock:
            claims, assumed = self._claims.counts()
            found = {**self._devices.counts(), "resourceclaims": claims, "pods": len(self._pods)}
            return {**found, "assumed": assumed}

    # -- what a placement reads, in one call ------------------------------------------------

    @contextmanager
    def placement_view(self, pod: PodInfo, names: Sequence[str]) -> Iterator[PlacementView]:
        """Hold the lock and hand out what a decision for ``pod`` (claims ``names``) reads.

        Whatever the decision assumes (:meth:`assume_placement`) must happen
        inside the ``with`` block, so the next decision sees it."""
        with self.lock:
            yield PlacementView(
                claims=[self._claims.effective(object_key(pod.namespace, n)) for n in names],
                nodes=self._devices.facts,
                usage=self._pods.usage,
                nominated=self._pods.nominated_node(pod.key),
                snapshot=self._devices.snapshot,
                node_filter=self.node_filters.filter,
            )

    @contextmanager
    def group_view(self, pod: PodInfo) -> Iterator[GroupView]:
        """Hold the lock and hand out what a decision for ``pod``'s PodGroup reads."""
        with self.lock:
            key = self._groups.group_key(pod) or ""
            members = [self._pods.get(k) for k in sorted(self._groups.members(key))]
            pods = [p for p in members if p is not None]
            claims, incomplete = {}, set()
            for member in pods:
                names, waiting = member.claim_names()
                if waiting:
                    incomplete.add(member.key)
                claims[member.key] = [
                    self._claims.effective(object_key(member.namespace, n)) for n in names
                ]
            yield GroupView(
                key=key,
                group=self._groups.get(key),
                served=self._groups.served,
                pods=pods,
                claims=claims,
                incomplete=incomplete,
                nodes=self._devices.facts,
                usage=self._pods.usage,
                nominated={p.key: self._pods.nominated_node(p.key) for p in pods},
                snapshot=self._devices.snapshot,
            )

    def conflicts(self, claims: Iterable[ResourceClaim]) -> list[HeldTwice]:
        """Devices of ``claims`` that another claim holds too, by the allocator's own
        in-use state (:func:`~dra_driver.allocator.conflicts.device_conflicts`), each
        with every claim involved and the pods that use it."""
        with self.lock:
            return held_twice(self._devices.snapshot(), claims, self._claims, self._pods)

    def pod_conflicts(self, pod: PodInfo) -> list[HeldTwice]:
        """:meth:`conflicts` of ``pod``'s allocated claims, as decisions see them."""
        names, _ = pod.claim_names()
        with self.lock:
            snapshot = self._devices.snapshot()
            found = [self._claims.effective(object_key(pod.namespace, n)) for n in names]
            allocated = [c for c in found if c is not None and has_allocation(c)]
            return held_twice(snapshot, allocated, self._claims, self._pods)

    # -- assumed allocations and nominations -------------------------------------------------

    def assume(self, claim: ResourceClaim) -> None:
        """Count ``claim``'s allocation as in use now; its write is in flight."""
        with self.lock:
            self._account(self._claims.assume(claim))

    def assume_placement(self, pod_key: str, claims: Sequence[ResourceClaim]) -> None:
        """A decision for pod ``pod_key``: :meth:`assume` each of ``claims``, and the pod
        waits for capacity no more."""
        with self.lock:
            for claim in claims:
                self._account(self._claims.assume(claim))
            self.waiting.discard(pod_key)

    def confirm(self, claim: ResourceClaim) -> None:
        """Our write of ``claim`` returned this object: keep it until the watch catches up."""
        with self.lock:
            self._account(self._claims.confirm(claim))

    def forget(self, key: str) -> None:
        """Our write did not happen: the watch's version is the truth again."""
        with self.lock:
            if self._claims.forget(key):
                self._account(key)

    def nominate(self, pod: PodInfo, node: str) -> None:
        """``pod`` was released to the scheduler for ``node``; count its requests there."""
        with self.lock:
            self._pods.nominate(pod, node)

    def unnominate(self, pod_key: str) -> None:
        with self.lock:
            self._pods.unnominate(pod_key)

    def nominated_node(self, pod_key: str) -> str | None:
        with self.lock:
            return self._pods.nominated_node(pod_key)

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
