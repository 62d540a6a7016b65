"""NvmlBackend.processes(): NVML's compute processes and per-process utilisation samples,
per GPU and per MIG device, through a fake pynvml that speaks pynvml's conventions."""

from __future__ import annotations

from pathlib import Path

from discovery_nvml_fake import NOT_SUPPORTED, FakeMig, FakeNvml, fake_gpu

from dra_driver.discovery.processes import GpuProcess
from kubelet_plugin.nvml import NvmlBackend

GIB = 1 << 30


def backend(nvml: FakeNvml, tmp_path: Path) -> NvmlBackend:
    return NvmlBackend("node-a", nvml=nvml, sysfs_root=tmp_path)


def test_processes_with_memory_and_their_latest_utilisation(tmp_path: Path) -> None:
    gpu = fake_gpu("H100-80GB", "GPU-aaaa", processes=[(10, 4 * GIB), (11, None)])
    gpu.utilisation = [(10, 1_000, 20), (10, 2_000, 55), (11, 1_500, 5)]
    nvml_backend = backend(FakeNvml([gpu]), tmp_path)
    assert nvml_backend.processes() == (
        GpuProcess("GPU-aaaa", 10, 4 * GIB, 0.55),
        GpuProcess("GPU-aaaa", 11, None, 0.05),
    )
    # Only samples newer than the last read count; no new sample is no SM time.
    gpu.utilisation.append((11, 3_000, 40))
    assert nvml_backend.processes() == (
        GpuProcess("GPU-aaaa", 10, 4 * GIB, 0.0),
        GpuProcess("GPU-aaaa", 11, None, 0.4),
    )


def test_a_gpu_in_mig_mode_is_read_per_mig_device_without_utilisation(tmp_path: Path) -> None:
    migs = [
        FakeMig("MIG-one", 1, 0, 19, 0, 1, processes=[(20, GIB)]),
        FakeMig("MIG-two", 2, 0, 19, 1, 1, processes=[(21, 2 * GIB), (22, 3 * GIB)]),
    ]
    gpu = fake_gpu("H100-80GB", "GPU-bbbb", mig_mode=(1, 1), migs=migs)
    assert backend(FakeNvml([gpu]), tmp_path).processes() == (
        GpuProcess("MIG-one", 20, GIB, None),
        GpuProcess("MIG-two", 21, 2 * GIB, None),
        GpuProcess("MIG-two", 22, 3 * GIB, None),
    )


def test_a_gpu_that_cannot_be_read_is_left_out_and_the_others_count(tmp_path: Path) -> None:
    broken = fake_gpu("L4", "GPU-cccc", processes=[(30, GIB)])
    broken.failures["nvmlDeviceGetComputeRunningProcesses"] = NOT_SUPPORTED
    sound = fake_gpu("L4", "GPU-dddd", processes=[(31, GIB)])
    sound.failures["nvmlDeviceGetProcessUtilization"] = NOT_SUPPORTED
    assert backend(FakeNvml([broken, sound]), tmp_path).processes() == (
        GpuProcess("GPU-dddd", 31, GIB, 0.0),
    )
