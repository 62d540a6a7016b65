"""Pods in memory, for the kubelet plugin's tests of the one-UID-per-MPS-GPU check
(the :class:`kubelet_plugin.mps.users.PodReader` port)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from agent_kit.kube import ApiError

__all__ = ["FakePods", "pod_using"]


class FakePods:
    """An in-memory pod reader; thread-safe. ``fail`` makes reads raise the ApiError the
    real reader passes on (forbidden, unreachable); ``reads`` counts the GETs."""

    def __init__(self, *pods: Mapping[str, Any]) -> None:
        self._lock = threading.Lock()
        self._pods: dict[tuple[str, str], str] = {}
        self.reads = 0
        self.fail = False
        for pod in pods:
            self.put(pod)

    def put(self, pod: Mapping[str, Any]) -> None:
        metadata = pod["metadata"]
        with self._lock:
            self._pods[(metadata["namespace"], metadata["name"])] = json.dumps(pod)

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        with self._lock:
            self.reads += 1
            if self.fail:
                raise ApiError("pods is forbidden", status=403)
            found = self._pods.get((namespace, name))
        return None if found is None else dict(json.loads(found))


def pod_using(
    name: str,
    claim: str,
    *,
    run_as: int | None = None,
    pod_run_as: int | None = None,
    namespace: str = "default",
    containers: int = 1,
) -> dict[str, Any]:
    """Pod ``name`` (UID ``pod-<name>``) whose ``containers`` containers use ``claim``
    (entry ``gpu``); ``run_as`` on each container, ``pod_run_as`` on the pod."""
    container_context = {} if run_as is None else {"securityContext": {"runAsUser": run_as}}
    spec: dict[str, Any] = {
        "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}],
        "containers": [
            {"name": f"main-{i}", "resources": {"claims": [{"name": "gpu"}]}, **container_context}
            for i in range(containers)
        ],
    }
    if pod_run_as is not None:
        spec["securityContext"] = {"runAsUser": pod_run_as}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"pod-{name}"},
        "spec": spec,
    }
