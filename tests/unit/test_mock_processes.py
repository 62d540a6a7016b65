"""The mock GPUs' compute processes (dra_driver.discovery.processes.MockProcesses)."""

from __future__ import annotations

import pytest

from api.errors import InvalidInputError
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.processes import GpuProcess


def test_processes_start_and_stop_on_gpus_and_mig_devices() -> None:
    backend = MockBackend("node-a", "H100-80GB:mig=1g.10gb,L4")
    mig = backend.inventory.gpus[0].mig_devices[0].uuid
    l4 = backend.inventory.gpus[1].uuid
    backend.gpu_processes.start(l4, 7, memory_bytes=100, sm_utilisation=0.5)
    # NVML samples no per-process utilisation on MIG devices; the mock neither.
    backend.gpu_processes.start(mig, 8, memory_bytes=200, sm_utilisation=0.9)
    assert set(backend.processes()) == {
        GpuProcess(l4, 7, 100, 0.5),
        GpuProcess(mig, 8, 200, None),
    }
    backend.gpu_processes.stop(7)
    assert backend.processes() == (GpuProcess(mig, 8, 200, None),)


@pytest.mark.parametrize(
    ("device", "pid", "memory", "sm", "message"),
    [
        ("GPU-nope", 1, 0, 0.0, "no GPU or MIG device GPU-nope"),
        (None, 0, 0, 0.0, "a PID is a positive number"),
        (None, 1, -1, 0.0, "is negative"),
        (None, 1, 0, 1.5, "not between 0 and 1"),
    ],
)
def test_bad_processes_are_refused(
    device: str | None, pid: int, memory: int, sm: float, message: str
) -> None:
    backend = MockBackend("node-a", "L4")
    with pytest.raises(InvalidInputError, match=message):
        backend.gpu_processes.start(
            device or backend.inventory.gpus[0].uuid, pid, memory_bytes=memory, sm_utilisation=sm
        )
