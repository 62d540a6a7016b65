"""Who holds a prepared claim: its pods (``status.reservedFor``) and their containers' names.

The plugin's checkpoint knows which claim holds which device, not which pods use the
claim: :class:`KubernetesPodDirectory` reads the claim for that, and the pod for the name
of the container a process's cgroup names by ID. Both are cached: a claim is read again
only when a process names a pod the cached copy does not list (a pod newly reserved), a
pod only when a container ID is new (a restarted container), and neither more often than
every ``min_refresh_s``, so a scrape costs no API call once the holders are known.
:meth:`KubernetesPodDirectory.retain` forgets the claims no longer prepared.

Reading pods needs ``get`` on pods (the chart's kubelet plugin role); without it a
container is named by the first 12 characters of its ID, as ``crictl ps`` shows it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent_kit.kube import ApiError, ClusterClient

__all__ = ["KubernetesPodDirectory", "PodDirectory", "short_container_id"]


def short_container_id(container_id: str) -> str:
    """How ``crictl ps`` and ``kubectl describe`` abbreviate an ID: its first 12 characters."""
    return container_id[:12]


class PodDirectory(Protocol):
    """The pods holding a claim, and their containers' names."""

    def pods(self, namespace: str, claim: str, *, wanted: str) -> Mapping[str, str] | None:
        """Pod UID to pod name of the pods in the claim's ``status.reservedFor``; ``wanted``
        is the UID of the pod a process belongs to (a hint to read the claim again if it is
        not among the known ones). None when the claim cannot be read."""
        ...

    def container(self, namespace: str, pod: str, pod_uid: str, container_id: str) -> str:
        """The container's name, or its short ID when the pod does not say."""
        ...


@dataclass
class _Cached:
    value: dict[str, str]
    read_at: float


@dataclass
class KubernetesPodDirectory:
    """A :class:`PodDirectory` reading the API server through the agent's client."""

    client: ClusterClient
    min_refresh_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _claims: dict[tuple[str, str], _Cached] = field(default_factory=dict)
    _pods: dict[str, _Cached] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pods(self, namespace: str, claim: str, *, wanted: str) -> Mapping[str, str] | None:
        key = (namespace, claim)
        with self._lock:
            cached = self._claims.get(key)
        if cached is not None and (wanted in cached.value or not self._stale(cached)):
            return cached.value
        try:
            data = self.client.get("resourceclaims", claim, namespace=namespace)
        except ApiError:
            return None if cached is None else cached.value
        reserved = (data.get("status") or {}).get("reservedFor") or []
        found = {
            str(ref["uid"]): str(ref["name"])
            for ref in reserved
            if ref.get("resource") == "pods" and not ref.get("apiGroup") and ref.get("uid")
        }
        with self._lock:
            self._claims[key] = _Cached(found, self.clock())
        return found

    def container(self, namespace: str, pod: str, pod_uid: str, container_id: str) -> str:
        with self._lock:
            cached = self._pods.get(pod_uid)
        if cached is None or (container_id not in cached.value and self._stale(cached)):
            names = self._read_pod(namespace, pod, pod_uid)
            if names is not None:
                cached = _Cached(names, self.clock())
                with self._lock:
                    self._pods[pod_uid] = cached
        if cached is not None and container_id in cached.value:
            return cached.value[container_id]
        return short_container_id(container_id)

    def retain(self, claims: Collection[tuple[str, str]]) -> None:
        """Forget every claim but ``claims`` (namespace, name), and the pods only they had."""
        with self._lock:
            for key in set(self._claims) - set(claims):
                del self._claims[key]
            held = {uid for cached in self._claims.values() for uid in cached.value}
            for uid in set(self._pods) - held:
                del self._pods[uid]

    def _stale(self, cached: _Cached) -> bool:
        return self.clock() - cached.read_at >= self.min_refresh_s

    def _read_pod(self, namespace: str, pod: str, pod_uid: str) -> dict[str, str] | None:
        try:
            data = self.client.get("pods", pod, namespace=namespace)
        except ApiError:
            return None
        if (data.get("metadata") or {}).get("uid") != pod_uid:
            return None  # another pod of the same name since
        return _container_names(data.get("status") or {})


def _container_names(status: Mapping[str, Any]) -> dict[str, str]:
    """Container ID (without the ``containerd://`` scheme) to name, every kind of container."""
    names: dict[str, str] = {}
    for kind in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(kind) or []:
            container_id = str(entry.get("containerID") or "")
            if container_id:
                names[container_id.partition("://")[2] or container_id] = str(entry["name"])
    return names
