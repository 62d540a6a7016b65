"""The pods, which claims each one uses, and the cpu/memory/pod count they request per node.

Nominated pods (released to the scheduler for a node, not bound yet) count on
that node too, so two placements in a row do not both count on the same free cpu.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from api.resource_v1 import object_key
from controller.cache.decoding import version_below
from controller.cache.node_filters import NodeChanges
from controller.scheduling import NodeUsage, PodInfo, Requests

__all__ = ["PodIndex"]


class PodIndex:
    """Pods by key, the claim <-> pod index and per-node usage. Not locked: the cache's lock
    covers it."""

    def __init__(self, changes: NodeChanges | None = None) -> None:
        #: Where a node's usage changing is told (the node filters re-examine it).
        self._changes = changes or NodeChanges()
        self._pods: dict[str, PodInfo] = {}
        self._claims_of: dict[str, frozenset[str]] = {}
        self._users: dict[str, set[str]] = {}
        self._usage: dict[str, NodeUsage] = {}
        self._nominated: dict[str, tuple[str, Requests]] = {}

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> PodInfo | None:
        return self._pods.get(key)

    def all(self) -> list[PodInfo]:
        return list(self._pods.values())

    def keys(self) -> list[str]:
        return list(self._pods)

    def __len__(self) -> int:
        return len(self._pods)

    def users(self, claim: str) -> Set[str]:
        """Keys of the pods that use claim ``claim``: a live view, read it at once."""
        return self._users.get(claim, frozenset())

    @property
    def usage(self) -> Mapping[str, NodeUsage]:
        """Per node: requests of the bound pods plus the nominated ones (a live view)."""
        return self._usage

    def nominated_node(self, pod_key: str) -> str | None:
        entry = self._nominated.get(pod_key)
        return entry[0] if entry is not None else None

    # -- the watch -------------------------------------------------------------------------

    def is_stale(self, pod: PodInfo) -> bool:
        """Whether a newer version of the same pod is held already."""
        old = self._pods.get(pod.key)
        return (
            old is not None
            and old.uid == pod.uid
            and version_below(pod.resource_version, old.resource_version)
        )

    def put(self, pod: PodInfo) -> PodInfo | None:
        """Store ``pod``, move its requests and claims with it. Returns the old version."""
        old = self._pods.get(pod.key)
        if old is not None:
            self._count(old, -1)
        self._pods[pod.key] = pod
        self._count(pod, +1)
        self._index(pod.key, pod)
        if pod.bound:
            self.unnominate(pod.key)
        return old

    def remove(self, key: str) -> PodInfo | None:
        """The pod is gone: its requests, claims and nomination with it. Returns it."""
        pod = self._pods.pop(key, None)
        if pod is not None:
            self._count(pod, -1)
            self._index(key, None)
            self.unnominate(key)
        return pod

    # -- nominations -----------------------------------------------------------------------

    def nominate(self, pod: PodInfo, node: str) -> None:
        """Count ``pod``'s requests on ``node`` until it is bound (or unnominated)."""
        self.unnominate(pod.key)
        self._nominated[pod.key] = (node, pod.requests)
        self._add_usage(node, pod.requests, +1)

    def unnominate(self, pod_key: str) -> None:
        entry = self._nominated.pop(pod_key, None)
        if entry is not None:
            self._add_usage(entry[0], entry[1], -1)

    # -- internals -------------------------------------------------------------------------

    def _count(self, pod: PodInfo, sign: int) -> None:
        if pod.node_name and not pod.terminal:
            self._add_usage(pod.node_name, pod.requests, sign)

    def _add_usage(self, node: str, requests: Requests, sign: int) -> None:
        self._changes.changed(node)
        usage = self._usage.setdefault(node, NodeUsage())
        usage.requests = usage.requests + requests if sign > 0 else usage.requests - requests
        usage.pods += sign
        if usage.pods == 0:
            del self._usage[node]

    def _index(self, key: str, pod: PodInfo | None) -> None:
        for claim in self._claims_of.pop(key, frozenset()):
            users = self._users.get(claim)
            if users is not None:
                users.discard(key)
                if not users:
                    del self._users[claim]
        if pod is None:
            return
        names, _ = pod.claim_names()
        claims = frozenset(object_key(pod.namespace, name) for name in names)
        self._claims_of[key] = claims
        for claim in claims:
            self._users.setdefault(claim, set()).add(key)
