"""NVLink topology from NVML: each GPU's NVLink peers, its island and its fabric clique.

Per GPU, every link NVML reports active (``nvmlDeviceGetNvLinkState``) leads
to a GPU of this node (``nvmlDeviceGetNvLinkRemotePciInfo_v2``: a direct peer)
or to an NVSwitch (``nvmlDeviceGetNvLinkRemoteDeviceType``): the GPUs on
NVSwitches are all peers of one another. Islands are the connected sets of
peers, named after the UUID of their first GPU; a GPU without NVLink is its
own island. Where the fabric manager reports a completed fabric
(``nvmlDeviceGetGpuFabricInfo``), the island is the fabric's
``<cluster UUID>/<clique ID>``, shared with the other nodes of the clique.

Degrades, never fails: when the driver or pynvml lacks a call (or it answers
"not supported" on the first link), the topology is unknown: one log line and
no NVLink attributes for the node; fabric info missing leaves out only the
fabric attributes.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any, Final

from dra_driver.discovery import normalize
from dra_driver.discovery.model import Gpu
from kubelet_plugin.nvml.library import ABSENT, INVALID_ARGUMENT, NOT_SUPPORTED, decode_text

__all__ = ["with_topology"]

log = logging.getLogger(__name__)

_MAX_LINKS: Final = 36  # NVML_NVLINK_MAX_LINKS
_FEATURE_ENABLED: Final = 1
_DEVICE_TYPE_SWITCH: Final = 2  # NVML_NVLINK_DEVICE_TYPE_SWITCH
_FABRIC_STATE_COMPLETED: Final = 3  # NVML_GPU_FABRIC_STATE_COMPLETED


class _UnknownTopologyError(Exception):
    """The topology cannot be read: the message says which call failed."""


@dataclass(frozen=True, slots=True)
class _Links:
    peers: frozenset[str]
    """PCI bus IDs of the GPUs directly linked."""
    switched: bool
    """Some link leads to an NVSwitch."""


def with_topology(
    nvml: Any, node_name: str, gpus: tuple[Gpu, ...], handles: list[Any]
) -> tuple[Gpu, ...]:
    """``gpus`` (``handles`` their NVML handles, same order) with NVLink peers and islands."""
    try:
        links = [_links(nvml, gpu, handle) for gpu, handle in zip(gpus, handles, strict=True)]
    except _UnknownTopologyError as err:
        log.info("node %s: %s; no NVLink topology published", node_name, err)
        return gpus
    by_bus = {gpu.pci_bus_id: gpu.index for gpu in gpus}
    switched = [gpu.index for gpu, link in zip(gpus, links, strict=True) if link.switched]
    peers = {
        gpu.index: {by_bus[b] for b in link.peers if b in by_bus}
        | ({i for i in switched if i != gpu.index} if link.switched else set())
        for gpu, link in zip(gpus, links, strict=True)
    }
    result = []
    for gpu, handle in zip(gpus, handles, strict=True):
        island = _island(gpu.index, peers)
        fabric = _fabric(nvml, node_name, gpu, handle)
        result.append(
            replace(
                gpu,
                nvlink_peers=tuple(sorted(peers[gpu.index])),
                nvlink_island=f"{fabric[0]}/{fabric[1]}" if fabric else gpus[min(island)].uuid,
                fabric_cluster_uuid=fabric[0] if fabric else None,
                fabric_clique_id=fabric[1] if fabric else None,
            )
        )
    return tuple(result)


def _island(index: int, peers: dict[int, set[int]]) -> set[int]:
    """The GPUs reachable from ``index`` over NVLink (itself included)."""
    seen = {index}
    todo = [index]
    while todo:
        for peer in peers[todo.pop()]:
            if peer not in seen:
                seen.add(peer)
                todo.append(peer)
    return seen


def _code(nvml: Any, err: BaseException) -> int | None:
    return getattr(err, "value", None) if isinstance(err, nvml.NVMLError) else None


def _links(nvml: Any, gpu: Gpu, handle: Any) -> _Links:
    where = f"GPU {gpu.index} ({gpu.uuid})"
    state_fn = getattr(nvml, "nvmlDeviceGetNvLinkState", None)
    pci_fn = getattr(nvml, "nvmlDeviceGetNvLinkRemotePciInfo_v2", None) or getattr(
        nvml, "nvmlDeviceGetNvLinkRemotePciInfo", None
    )
    type_fn = getattr(nvml, "nvmlDeviceGetNvLinkRemoteDeviceType", None)
    if state_fn is None or pci_fn is None:
        raise _UnknownTopologyError("pynvml has no nvmlDeviceGetNvLinkState / RemotePciInfo")
    peers: set[str] = set()
    switched = False
    for link in range(_MAX_LINKS):
        try:
            if int(state_fn(handle, link)) != _FEATURE_ENABLED:
                continue
            if type_fn is not None and int(type_fn(handle, link)) == _DEVICE_TYPE_SWITCH:
                switched = True
                continue
            remote = normalize.pci_bus_id(decode_text(pci_fn(handle, link).busId))
        except nvml.NVMLError as err:
            # Invalid argument: past the GPU's last link; not supported: no NVLink
            # (an island of its own). Anything else (function not found) is unknown.
            if _code(nvml, err) in (INVALID_ARGUMENT, NOT_SUPPORTED):
                break
            raise _UnknownTopologyError(f"{where}: NVLink {link}: {err}") from None
        except ValueError as err:
            raise _UnknownTopologyError(f"{where}: NVLink {link}: {err}") from None
        if remote != gpu.pci_bus_id:
            peers.add(remote)
    return _Links(frozenset(peers), switched)


def _fabric(nvml: Any, node_name: str, gpu: Gpu, handle: Any) -> tuple[str, int] | None:
    """(cluster UUID, clique ID) of a completed NVSwitch fabric; None where there is none."""
    fn = getattr(nvml, "nvmlDeviceGetGpuFabricInfo", None)
    struct = getattr(nvml, "c_nvmlGpuFabricInfo_t", None)
    if fn is None or struct is None:
        return None
    info = struct()
    try:
        fn(handle, info)
    except nvml.NVMLError as err:
        if _code(nvml, err) not in ABSENT:
            log.info("node %s: GPU %s: fabric info: %s; left out", node_name, gpu.index, err)
        return None
    cluster = bytes(info.clusterUuid)
    if int(info.state) != _FABRIC_STATE_COMPLETED or int(info.status) != 0 or not any(cluster):
        return None
    return str(uuid.UUID(bytes=cluster)), int(info.cliqueId)
