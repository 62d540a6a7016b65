"""The compute processes on the node's GPUs and MIG devices, through NVML.

Per GPU: ``nvmlDeviceGetComputeRunningProcesses`` lists the processes and the memory each
uses; ``nvmlDeviceGetProcessUtilization`` gives the SM utilisation samples newer than the
last read (kept per GPU), of which each process's latest counts. A GPU in MIG mode is read
MIG device by MIG device (``nvmlDeviceGetMigDeviceHandleByIndex``): NVML lists a MIG
device's processes but does not sample its per-process utilisation.

A GPU or MIG device NVML cannot read is left out with a log line (the others still count);
only a failure to enumerate the GPUs fails the whole reading. See
:mod:`dra_driver.discovery.processes` for what NVML's answers mean (host PIDs, MPS).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

from dra_driver.discovery.processes import GpuProcess
from kubelet_plugin.nvml.library import NOT_FOUND, NvmlCalls, decode_text

__all__ = ["NvmlProcessSampler"]

log = logging.getLogger(__name__)

_MIG_ENABLED: Final = 1


class NvmlProcessSampler:
    """A :class:`~dra_driver.discovery.processes.ProcessSampler` on NVML.

    ``lock`` is the backend's (one NVML reading at a time with discovery and MIG changes).
    """

    def __init__(self, calls: NvmlCalls, lock: threading.Lock) -> None:
        self._calls = calls
        self._lock = lock
        self._last_seen: dict[str, int] = {}
        """GPU UUID to the newest utilisation sample's timestamp (microseconds) read."""

    def processes(self) -> tuple[GpuProcess, ...]:
        nvml = self._calls.nvml
        found: list[GpuProcess] = []
        with self._lock:
            count = int(self._calls.call("nvmlDeviceGetCount", nvml.nvmlDeviceGetCount))
            for index in range(count):
                try:
                    found += self._gpu(index)
                except nvml.NVMLError as err:
                    log.warning(
                        "node %s: GPU %d: processes not read: %s", self._calls.node_name, index, err
                    )
        return tuple(found)

    def _gpu(self, index: int) -> list[GpuProcess]:
        nvml = self._calls.nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = decode_text(nvml.nvmlDeviceGetUUID(handle))
        if self._mig_enabled(handle):
            return self._mig_devices(handle)
        utilisation = self._utilisation(uuid, handle)
        return [
            GpuProcess(
                device_uuid=uuid,
                pid=int(p.pid),
                memory_bytes=_memory(p),
                sm_utilisation=utilisation.get(int(p.pid), 0.0),
            )
            for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        ]

    def _mig_enabled(self, handle: Any) -> bool:
        nvml = self._calls.nvml
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except nvml.NVMLError:
            return False  # not MIG-capable
        return int(current) == _MIG_ENABLED

    def _mig_devices(self, handle: Any) -> list[GpuProcess]:
        nvml = self._calls.nvml
        found: list[GpuProcess] = []
        for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError as err:
                if getattr(err, "value", None) == NOT_FOUND:
                    continue  # an empty slot
                raise
            uuid = decode_text(nvml.nvmlDeviceGetUUID(mig))
            found += [
                GpuProcess(
                    device_uuid=uuid, pid=int(p.pid), memory_bytes=_memory(p), sm_utilisation=None
                )
                for p in nvml.nvmlDeviceGetComputeRunningProcesses(mig)
            ]
        return found

    def _utilisation(self, uuid: str, handle: Any) -> dict[int, float]:
        """PID to its latest SM utilisation (0 to 1) since the last read of this GPU."""
        nvml = self._calls.nvml
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(handle, self._last_seen.get(uuid, 0))
        except nvml.NVMLError as err:
            if getattr(err, "value", None) != NOT_FOUND:  # NOT_FOUND: no sample since then
                log.info(
                    "node %s: GPU %s: no utilisation samples: %s", self._calls.node_name, uuid, err
                )
            return {}
        latest: dict[int, tuple[int, float]] = {}
        for sample in samples:
            pid, stamp = int(sample.pid), int(sample.timeStamp)
            if pid not in latest or stamp >= latest[pid][0]:
                latest[pid] = (stamp, min(100, int(sample.smUtil)) / 100)
            self._last_seen[uuid] = max(self._last_seen.get(uuid, 0), stamp)
        return {pid: share for pid, (_, share) in latest.items()}


def _memory(process: Any) -> int | None:
    # pynvml turns NVML's "value not available" into None.
    used = getattr(process, "usedGpuMemory", None)
    return None if used is None else int(used)
