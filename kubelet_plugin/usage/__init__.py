"""Per-claim GPU usage: NVML's per-process memory and utilisation, attributed through each
process's cgroup to its pod and container, and through ``status.reservedFor`` to the claim
holding the device (:mod:`.attribution`), exported at each scrape (:mod:`.collector`).

Needs the host's PID namespace to read ``/proc/<pid>/cgroup`` for NVML's PIDs
(``hostPID: true``, chart value ``kubeletPlugin.hostPID``); without it every process counts
as ``unreadable``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from agent_kit.kube import ClusterClient
from api.checkpoint import ClaimEntry
from dra_driver.discovery.model import NodeInventory
from dra_driver.discovery.processes import ProcessSampler
from kubelet_plugin.usage.cgroups import CgroupOwner, ProcCgroups, parse_cgroup
from kubelet_plugin.usage.collector import UsageCollector
from kubelet_plugin.usage.pods import KubernetesPodDirectory

__all__ = [
    "CgroupOwner",
    "KubernetesPodDirectory",
    "ProcCgroups",
    "ProcessSampler",
    "UsageCollector",
    "parse_cgroup",
    "usage_collector",
]


def usage_collector(
    sampler: ProcessSampler,
    prepared: Callable[[], Mapping[str, ClaimEntry]],
    client: ClusterClient,
    inventory: NodeInventory,
    *,
    proc_root: Path = Path("/proc"),
) -> UsageCollector:
    """The collector the plugin registers: ``sampler`` is its GPU backend, ``prepared`` its
    driver's claims (UID to checkpoint entry), ``client`` its API client."""
    return UsageCollector(
        sampler,
        prepared,
        ProcCgroups(proc_root),
        KubernetesPodDirectory(client),
        device_names={gpu.uuid: gpu.device_name for gpu in inventory.gpus},
    )
