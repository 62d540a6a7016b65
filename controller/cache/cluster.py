"""ClusterCache: the stores and the watches' sink (:mod:`controller.cache.stores`), and the
one-call reads a placement needs, taken under their one lock."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from api.resource_v1 import (
    ResourceClaim,
    object_key,
)
from controller.cache.groups import GroupView
from controller.cache.ledger import has_allocation
from controller.cache.stores import CacheStores
from controller.cache.views import HeldTwice, PlacementView, held_twice
from controller.scheduling import NodeFacts, NodeUsage, PodInfo
from dra_driver.allocator import Snapshot

__all__ = ["ClusterCache"]


class ClusterCache(CacheStores):
    """See the package docstring: :class:`CacheStores` and its sink, and the one-call reads
    a placement needs, taken under its lock."""

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
