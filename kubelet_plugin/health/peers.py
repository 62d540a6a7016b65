"""DRAIN_P2P fences a GPU's NVLink peers: :func:`fence_peers` and :func:`unfence_peers`.

When NVML's recovery action of a GPU reads DRAIN_P2P, peer-to-peer traffic over its
NVLinks must stop, so the GPUs it reaches over NVLink (``Gpu.nvlink_peers``, from
discovery's topology) get a taint of their own: key ``<driver>/nvlink-peer-drain.<gpu>``
(one per causing GPU, so two draining GPUs fence a shared peer twice), value the causing
GPU's UUID, effect ``NoSchedule`` (new claims keep off; running pods stay: the peers
themselves are sound). The cause kind is ``nvlink-peer-drain``; the peer's own recovery
never lifts it (:meth:`GpuHealth.lift` keeps it): it goes when the causing GPU's taints
are lifted (recovery confirmed) or cleared by an admin, and at a reboot
(:data:`~kubelet_plugin.health.taint_store.REBOOT_CLEARS`; a GPU still asking for the
drain fences its peers again at the next poll). MIG devices of a peer carry it as they
carry every taint of their GPU. A GPU whose peers discovery does not know fences nothing
(the caller logs it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from api import limits
from api.resource_v1 import DeviceTaint
from api.taint_state import NVLINK_PEER_DRAIN, TaintCause
from dra_driver.discovery.model import Gpu, NodeInventory
from kubelet_plugin.health.gpu_health import GpuHealth
from kubelet_plugin.health.taints import rfc3339

__all__ = ["fence_peers", "peer_taint_key", "peers_of", "unfence_peers"]

log = logging.getLogger(__name__)


def peer_taint_key(domain: str, causing: Gpu) -> str:
    """``<domain>/nvlink-peer-drain.<causing GPU's device name>``."""
    return f"{domain}/{NVLINK_PEER_DRAIN}.{causing.device_name}"


def peers_of(inventory: NodeInventory, gpu: Gpu) -> list[Gpu]:
    """The GPUs of this node ``gpu`` reaches over NVLink (its ``nvlink_peers`` indexes)."""
    wanted = set(gpu.nvlink_peers) - {gpu.index}
    return [g for g in inventory if g.index in wanted]


def fence_peers(
    gpus: Mapping[str, GpuHealth],
    inventory: NodeInventory,
    causing: Gpu,
    now: datetime,
    *,
    domain: str,
    said: set[str],
) -> list[tuple[Gpu, DeviceTaint]]:
    """Taint each NVLink peer of ``causing`` for its drain; the peers newly fenced, and
    how (logged). No known peer: nothing fenced, logged once per GPU (``said``)."""
    peers = peers_of(inventory, causing)
    if not peers:
        if causing.device_name not in said:
            said.add(causing.device_name)
            log.warning(
                "%s: recovery action DRAIN_P2P, but discovery knows no NVLink peer of it: "
                "no other GPU is fenced",
                causing.device_name,
            )
        return []
    taint = DeviceTaint(
        key=peer_taint_key(domain, causing),
        value=causing.uuid,
        effect=limits.TAINT_EFFECT_NO_SCHEDULE,
        time_added=rfc3339(now),
    )
    cause = TaintCause(kind=NVLINK_PEER_DRAIN, gpu_uuid=causing.uuid, seen_at=rfc3339(now))
    fenced = []
    for peer in peers:
        state = gpus[peer.device_name]
        if taint.key in state.taints:
            continue
        state.taints[taint.key], state.causes[taint.key] = taint.model_copy(), cause
        fenced.append((peer, taint))
    if fenced:
        log.warning(
            "%s: recovery action DRAIN_P2P: NVLink peers %s fenced (taint %s=%s:%s)",
            causing.device_name,
            ", ".join(peer.device_name for peer, _ in fenced),
            taint.key,
            taint.value,
            taint.effect,
        )
    return fenced


def unfence_peers(gpus: Mapping[str, GpuHealth], causing_uuid: str) -> list[str]:
    """Drop every peer fence ``causing_uuid`` raised; the GPU names that lost one."""
    unfenced = []
    for name, state in gpus.items():
        keys = [
            key
            for key, cause in state.causes.items()
            if cause.kind == NVLINK_PEER_DRAIN and cause.gpu_uuid == causing_uuid
        ]
        for key in keys:
            del state.taints[key], state.causes[key]
        if keys:
            unfenced.append(name)
    if unfenced:
        log.info("NVLink peers %s: the drain fence of %s lifted", ", ".join(unfenced), causing_uuid)
    return unfenced
