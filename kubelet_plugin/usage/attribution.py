"""Each GPU process's usage, attributed to the claim, pod and container it belongs to.

For every process NVML lists on a GPU or MIG device (:class:`GpuProcess`):

1. the claims holding that device, from the plugin's checkpoint (completed entries; a
   shared GPU has several, a MIG device one);
2. the process's pod and container, from its cgroup (:mod:`.cgroups`);
3. the claim among those whose ``status.reservedFor`` lists that pod (:mod:`.pods`).

The result is summed per (namespace, pod, container, claim, device). A process that cannot
be attributed counts per device under a reason instead, so nothing is lost silently:

``not-in-a-pod``  its cgroup names no pod: a process of the host, or the MPS server the
                  plugin runs for a GPU shared with MPS (NVML may list only the server, so
                  the clients' usage is the server's, attributed to no claim)
``no-claim``      its pod holds no prepared claim on the device (a device plugin's pod, a
                  privileged pod, or a claim that is being unprepared)
``unreadable``    no ``/proc/<pid>`` to read: the process ended, or the plugin does not see
                  the host's PID namespace (``hostPID: true`` in the chart)
``unresolved``    the claim could not be read from the API server
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from api.checkpoint import ClaimEntry
from dra_driver.discovery.processes import GpuProcess
from kubelet_plugin.usage.cgroups import CgroupOwner
from kubelet_plugin.usage.pods import PodDirectory

__all__ = [
    "CgroupReader",
    "DeviceHolder",
    "Reason",
    "Usage",
    "UsageKey",
    "UsageSample",
    "attribute",
    "holders_by_device",
]

Reason = Literal["not-in-a-pod", "no-claim", "unreadable", "unresolved"]


class CgroupReader(Protocol):
    def owner(self, pid: int) -> CgroupOwner | None:
        """The process's pod and container; ProcessLookupError when it cannot be read."""
        ...


@dataclass(frozen=True, slots=True)
class DeviceHolder:
    """A prepared claim holding a device (a GPU, a share of one, or a MIG device)."""

    namespace: str
    claim: str
    device: str
    """The device's name in the slice, ``gpu-0`` or ``gpu-1-mig-1g10gb-19-0``."""


@dataclass(frozen=True, slots=True, order=True)
class UsageKey:
    """One series: whose usage on which device."""

    namespace: str
    pod: str
    container: str
    claim: str
    device: str


@dataclass(slots=True)
class Usage:
    """Summed over processes; None where no process reported the value."""

    memory_bytes: int | None = None
    utilisation: float | None = None

    def add(self, process: GpuProcess) -> None:
        if process.memory_bytes is not None:
            self.memory_bytes = (self.memory_bytes or 0) + process.memory_bytes
        if process.sm_utilisation is not None:
            # Processes of one container share the device's SM time: their sum is a share too.
            self.utilisation = min(1.0, (self.utilisation or 0.0) + process.sm_utilisation)


@dataclass
class UsageSample:
    """One reading of the node's GPU processes."""

    attributed: dict[UsageKey, Usage] = field(default_factory=dict)
    unattributed: dict[tuple[str, Reason], Usage] = field(default_factory=dict)
    """(device name, or UUID for a device no claim holds; reason) to the usage."""


def holders_by_device(prepared: Mapping[str, ClaimEntry]) -> dict[str, list[DeviceHolder]]:
    """Device UUID to the completed claims holding it, from the checkpoint's entries."""
    found: dict[str, list[DeviceHolder]] = {}
    for entry in prepared.values():
        if entry.state != "PrepareCompleted":
            continue
        for record in entry.devices:
            if record.uuid:
                holder = DeviceHolder(entry.namespace, entry.name, record.device)
                if holder not in found.setdefault(record.uuid, []):
                    found[record.uuid].append(holder)
    return found


def attribute(
    processes: Iterable[GpuProcess],
    holders: Mapping[str, list[DeviceHolder]],
    cgroups: CgroupReader,
    pods: PodDirectory,
    *,
    device_names: Mapping[str, str] | None = None,
) -> UsageSample:
    """Attribute each process (module docstring). ``device_names`` names devices no claim
    holds (GPU UUID to ``gpu-N``); others are named after their holders."""
    sample = UsageSample()

    def unattributed(process: GpuProcess, reason: Reason) -> None:
        held = holders.get(process.device_uuid)
        name = held[0].device if held else (device_names or {}).get(process.device_uuid)
        key = (name or process.device_uuid, reason)
        sample.unattributed.setdefault(key, Usage()).add(process)

    for process in processes:
        try:
            owner = cgroups.owner(process.pid)
        except ProcessLookupError:
            unattributed(process, "unreadable")
            continue
        if owner is None:
            unattributed(process, "not-in-a-pod")
            continue
        found: tuple[DeviceHolder, str] | None = None
        unknown = False
        for holder in holders.get(process.device_uuid, []):
            reserved = pods.pods(holder.namespace, holder.claim, wanted=owner.pod_uid)
            if reserved is None:
                unknown = True
            elif owner.pod_uid in reserved:
                found = holder, reserved[owner.pod_uid]
                break
        if found is None:
            unattributed(process, "unresolved" if unknown else "no-claim")
            continue
        holder, pod = found
        container = (
            pods.container(holder.namespace, pod, owner.pod_uid, owner.container_id)
            if owner.container_id
            else ""
        )
        key = UsageKey(holder.namespace, pod, container, holder.claim, holder.device)
        sample.attributed.setdefault(key, Usage()).add(process)
    return sample
