"""What the kubelet plugin needs before it starts anything: its GPU backend, its API client
and its Node's UID, each failing with a message that says what to fix."""

from __future__ import annotations

import logging
from typing import Any

from agent_kit.kube import ApiError, ClusterClient, KubeConfigError, load_api_client
from api.errors import DiscoveryError, DraDriverError
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import DiscoveryBackend
from kubelet_plugin.settings import Settings

__all__ = ["StartupError", "kube_api_client", "open_backend", "read_node_uid"]

log = logging.getLogger(__name__)


class StartupError(DraDriverError):
    """The plugin cannot start; the message says what failed and how to fix it."""


def open_backend(settings: Settings) -> DiscoveryBackend:
    """The discovery backend ``--gpu-backend`` names; never fake GPUs unless asked."""
    if settings.gpu_backend == "mock":
        return MockBackend(settings.node_name, settings.mock_profile)
    from kubelet_plugin.nvml import NvmlBackend  # pynvml only where NVML is wanted

    try:
        return NvmlBackend(settings.node_name, driver_root=settings.driver_root)
    except DiscoveryError as err:
        if settings.gpu_backend == "auto":
            raise DiscoveryError(
                f"--gpu-backend auto found no usable NVIDIA GPU backend: {err}. "
                "Use --gpu-backend mock (and --mock-profile) for fake GPUs"
            ) from None
        raise


def kube_api_client(settings: Settings) -> Any:
    """A ``kubernetes.client.ApiClient`` from ``--kubeconfig`` or the in-cluster account."""
    try:
        return load_api_client(str(settings.kubeconfig) if settings.kubeconfig else None)
    except KubeConfigError as err:
        where = (
            f"--kubeconfig {settings.kubeconfig}"
            if settings.kubeconfig is not None
            else "the in-cluster configuration (no --kubeconfig given, env KUBECONFIG unset)"
        )
        raise StartupError(
            f"cannot configure the API client from {where}: {err}; run in a pod with a "
            "service account or pass --kubeconfig"
        ) from None


def read_node_uid(client: ClusterClient, node_name: str) -> str | None:
    """The Node's UID, to make it the owner of the node's slices; None (logged) when unknown."""
    try:
        uid = (client.get("nodes", node_name).get("metadata") or {}).get("uid")
    except ApiError as err:  # any failure only costs the owner reference
        uid, reason = None, str(err)
    else:
        reason = "it has no uid"
    if not uid:
        log.warning(
            "cannot read Node %s (%s): its ResourceSlices are published without an owner "
            "reference and are not garbage-collected with the Node",
            node_name,
            reason,
        )
        return None
    return str(uid)
