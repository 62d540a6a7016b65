"""The compute processes on a node's GPUs and MIG devices, as NVML lists them.

A :class:`GpuProcess` is one row of ``nvmlDeviceGetComputeRunningProcesses`` on a GPU or
a MIG device, with that process's latest ``nvmlDeviceGetProcessUtilization`` sample. A
:class:`ProcessSampler` lists them: the kubelet plugin's NVML backend on real GPUs
(``kubelet_plugin.nvml.processes``), :class:`MockProcesses` on the mock GPUs, where a test
or a person starts and stops processes. The kubelet plugin maps each PID to its pod
(``kubelet_plugin.usage``).

What NVML reports, and so what the mock reports too:

- PIDs are those of the host's PID namespace, whatever namespace the caller is in.
- On a MIG device, per-process utilisation is not supported (``sm_utilisation`` None); the
  memory a process uses is.
- ``memory_bytes`` is None where the driver does not report it (NVML's "value not
  available", e.g. without the privileges to see other users' processes).
- Under MPS, the GPU may list only the MPS server's PID, whose memory and utilisation are
  the sum of its clients': who the clients are is not known from NVML.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from api.errors import InvalidInputError

__all__ = ["GpuProcess", "MockProcesses", "ProcessSampler"]


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """One compute process on one GPU or MIG device."""

    device_uuid: str
    """``GPU-...`` or ``MIG-...``: the device NVML listed the process on."""
    pid: int
    """In the host's PID namespace."""
    memory_bytes: int | None
    """Device memory the process uses; None where NVML does not report it."""
    sm_utilisation: float | None
    """Share of the device's SM time the process used in NVML's latest sample, 0 to 1
    (0 when no sample came since the last read); None where NVML cannot sample per process
    (MIG devices)."""


@runtime_checkable
class ProcessSampler(Protocol):
    """Lists the compute processes on the node's GPUs and MIG devices (both backends do)."""

    def processes(self) -> tuple[GpuProcess, ...]:
        """Every compute process now, device by device; raises DiscoveryError when NVML
        fails as a whole (a device it cannot read is left out)."""
        ...


class MockProcesses:
    """The mock GPUs' compute processes, started and stopped by hand; thread-safe.

    ``devices`` lists the UUIDs of the GPUs and of the MIG devices that exist now (it is
    asked at each :meth:`start`); a process on a MIG device has no utilisation sample, as
    with NVML.
    """

    def __init__(self, devices: Callable[[], Iterable[str]]) -> None:
        self._devices = devices
        self._lock = threading.Lock()
        self._processes: dict[tuple[str, int], GpuProcess] = {}

    def start(
        self,
        device_uuid: str,
        pid: int,
        *,
        memory_bytes: int | None,
        sm_utilisation: float = 0.0,
    ) -> GpuProcess:
        """A process ``pid`` on the device from now on (replacing one with the same PID on
        it). InvalidInputError for a device that does not exist or a value out of range."""
        if device_uuid not in set(self._devices()):
            raise InvalidInputError(
                f"mock process {pid}: no GPU or MIG device {device_uuid} on this node; "
                "use the UUID of one (a MIG device once it is created)"
            )
        if pid <= 0:
            raise InvalidInputError(f"mock process {pid}: a PID is a positive number")
        if memory_bytes is not None and memory_bytes < 0:
            raise InvalidInputError(f"mock process {pid}: memory {memory_bytes} is negative")
        if not 0.0 <= sm_utilisation <= 1.0:
            raise InvalidInputError(
                f"mock process {pid}: utilisation {sm_utilisation} is not between 0 and 1"
            )
        process = GpuProcess(
            device_uuid=device_uuid,
            pid=pid,
            memory_bytes=memory_bytes,
            sm_utilisation=None if device_uuid.startswith("MIG-") else sm_utilisation,
        )
        with self._lock:
            self._processes[device_uuid, pid] = process
        return process

    def stop(self, pid: int) -> None:
        """The process ends: gone from every device it was on."""
        with self._lock:
            for key in [key for key in self._processes if key[1] == pid]:
                del self._processes[key]

    def processes(self) -> tuple[GpuProcess, ...]:
        """The processes running now, by device UUID and PID."""
        with self._lock:
            return tuple(self._processes[key] for key in sorted(self._processes))
