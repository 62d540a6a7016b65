# The fake must carry pynvml's own (mixedCase) names.
# ruff: noqa: N802
"""NvmlMigManager against a fake pynvml: the calls, their order, and the errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from api.errors import PrepareError
from dra_driver.discovery.model import Gpu, MigProfile
from kubelet_plugin.nvml import NvmlBackend
from tests.unit.discovery_nvml_fake import (
    UNKNOWN,
    FakeGpu,
    FakeMig,
    FakeNvml,
    FakeNVMLError,
    fake_gpu,
)

GPU_UUID = "GPU-3e3b9a0c-8f8a-4b61-9a52-6b7c3d2e1f00"
IN_USE = 19


class MigNvml(FakeNvml):
    """FakeNvml plus the MIG lifecycle calls; records them in ``calls``."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        super().__init__(gpus)
        self.calls: list[tuple[Any, ...]] = []
        self.fail_compute_instance = False
        self.parents: dict[int, FakeGpu] = {}

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeGpu:
        return next(g for g in self.gpus if g.uuid == uuid)

    def nvmlDeviceCreateGpuInstanceWithPlacement(
        self, handle: FakeGpu, profile_id: int, placement: Any
    ) -> FakeMig:
        self.calls.append(("create-gi", profile_id, placement.start, placement.size))
        span = set(range(placement.start, placement.start + placement.size))
        if any(span & set(range(m.start, m.start + m.size)) for m in handle.migs):
            raise FakeNVMLError(IN_USE)
        used = {m.gi_id for m in handle.migs}
        gi_id = next(i for i in range(1, 16) if i not in used)
        gi = FakeMig(f"MIG-{gi_id}", gi_id, -1, profile_id, placement.start, placement.size)
        self.parents[id(gi)] = handle
        return gi

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, gi: FakeMig, profile: int, engine_profile: int
    ) -> SimpleNamespace:
        self.calls.append(("ci-profile", profile, engine_profile))
        if self.fail_compute_instance:
            raise FakeNVMLError(UNKNOWN)
        return SimpleNamespace(id=100 + profile)

    def nvmlGpuInstanceCreateComputeInstance(self, gi: FakeMig, ci_profile_id: int) -> FakeMig:
        self.calls.append(("create-ci", ci_profile_id))
        gi.ci_id = 0
        self.parents[id(gi)].migs.append(gi)
        return gi

    def nvmlGpuInstanceGetComputeInstanceById(self, gi: FakeMig, ci_id: int) -> FakeMig:
        return gi

    def nvmlComputeInstanceDestroy(self, ci: FakeMig) -> None:
        self.calls.append(("destroy-ci", ci.gi_id))

    def nvmlGpuInstanceDestroy(self, gi: FakeMig) -> None:
        self.calls.append(("destroy-gi", gi.gi_id))
        parent = self.parents.get(id(gi)) or next(g for g in self.gpus if gi in g.migs)
        if gi in parent.migs:
            parent.migs.remove(gi)


def _caps(proc: Path, minor: int, gi: int, gi_cap: int) -> None:
    base = proc / "driver/nvidia/capabilities" / f"gpu{minor}" / "mig" / f"gi{gi}"
    (base / "ci0").mkdir(parents=True)
    (base / "access").write_text(f"DeviceFileMinor: {gi_cap}\nDeviceFileMode: 292\n")
    (base / "ci0" / "access").write_text(f"DeviceFileMinor: {gi_cap + 1}\nDeviceFileMode: 292\n")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[MigNvml, NvmlBackend, Gpu]:
    nvml = MigNvml([fake_gpu("A100-40GB", GPU_UUID)])
    backend = NvmlBackend("node-a", nvml=nvml, sysfs_root=tmp_path / "sys", proc_root=tmp_path)
    _caps(tmp_path, 0, 1, 12)
    return nvml, backend, backend.discover().gpus[0]


def _profile(gpu: Gpu, name: str) -> MigProfile:
    return next(p for p in gpu.mig_profiles if p.name == name)


def test_create_makes_gpu_and_compute_instance_and_reads_cap_minors(
    setup: tuple[MigNvml, NvmlBackend, Gpu],
) -> None:
    nvml, backend, gpu = setup
    profile = _profile(gpu, "3g.20gb")

    mig = backend.mig_manager.create(gpu, profile, (4, 4))

    assert nvml.calls == [
        ("create-gi", profile.profile_id, 4, 4),
        ("ci-profile", 2, 0),  # NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE, shared engines
        ("create-ci", 102),
    ]
    assert (mig.uuid, mig.gpu_instance_id, mig.compute_instance_id) == ("MIG-1", 1, 0)
    assert mig.cap_device_nodes == (
        "/dev/nvidia-caps/nvidia-cap12",
        "/dev/nvidia-caps/nvidia-cap13",
    )
    # Idempotent: the existing device is found, nothing is created again.
    assert backend.mig_manager.create(gpu, profile, (4, 4)) == mig
    assert len(nvml.calls) == 3


def test_destroy_takes_the_compute_instance_down_first(
    setup: tuple[MigNvml, NvmlBackend, Gpu],
) -> None:
    nvml, backend, gpu = setup
    profile = _profile(gpu, "1g.5gb")
    backend.mig_manager.create(gpu, profile, (0, 1))
    nvml.calls.clear()

    assert backend.mig_manager.destroy(gpu, profile, (0, 1))
    assert nvml.calls == [("destroy-ci", 1), ("destroy-gi", 1)]
    assert not backend.mig_manager.destroy(gpu, profile, (0, 1))


def test_in_use_is_a_retryable_error_naming_gpu_and_call(
    setup: tuple[MigNvml, NvmlBackend, Gpu],
) -> None:
    _, backend, gpu = setup
    backend.mig_manager.create(gpu, _profile(gpu, "3g.20gb"), (4, 4))
    with pytest.raises(PrepareError) as caught:
        backend.mig_manager.create(gpu, _profile(gpu, "2g.10gb"), (4, 2))
    assert caught.value.retryable
    assert GPU_UUID in str(caught.value)
    assert "nvmlDeviceCreateGpuInstanceWithPlacement(2g.10gb, start 4)" in str(caught.value)


def test_a_failed_compute_instance_leaves_no_gpu_instance(
    setup: tuple[MigNvml, NvmlBackend, Gpu],
) -> None:
    nvml, backend, gpu = setup
    nvml.fail_compute_instance = True
    with pytest.raises(PrepareError, match="creating its compute instance") as caught:
        backend.mig_manager.create(gpu, _profile(gpu, "1g.5gb"), (0, 1))
    assert not caught.value.retryable
    assert nvml.calls[-1] == ("destroy-gi", 1)
    assert nvml.gpus[0].migs == []


def test_unreadable_cap_minors_leave_the_nodes_out(
    setup: tuple[MigNvml, NvmlBackend, Gpu], caplog: pytest.LogCaptureFixture
) -> None:
    _, backend, gpu = setup
    backend.mig_manager.create(gpu, _profile(gpu, "1g.5gb"), (0, 1))  # GI 1: caps exist
    mig = backend.mig_manager.create(gpu, _profile(gpu, "1g.5gb"), (1, 1))  # GI 2: none
    assert mig.gpu_instance_id == 2 and mig.cap_device_nodes == ()
    assert "gpu0/mig/gi2/access" in caplog.text


def test_discovery_reads_the_cap_minors_of_static_mig_devices(tmp_path: Path) -> None:
    static = FakeMig("MIG-static", 1, 0, 9, 4, 4)
    nvml = MigNvml([fake_gpu("A100-40GB", GPU_UUID, mig_mode=(1, 1), migs=[static])])
    _caps(tmp_path, 0, 1, 12)
    backend = NvmlBackend("node-a", nvml=nvml, sysfs_root=tmp_path / "sys", proc_root=tmp_path)

    (mig,) = backend.discover().gpus[0].mig_devices

    assert mig.uuid == "MIG-static"
    assert mig.cap_device_nodes == (
        "/dev/nvidia-caps/nvidia-cap12",
        "/dev/nvidia-caps/nvidia-cap13",
    )
