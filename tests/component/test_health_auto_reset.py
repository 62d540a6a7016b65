"""The opt-in automatic reset (kubelet_plugin.health.auto_reset) with the mock GPUs.

The health monitor taints a GPU whose recovery action asks for a reset; the automatic
reset waits while a prepared claim or a compute process holds the GPU (or one of its MIG
instances), then resets it: the mock's reset, or the fake ``nvidia-smi`` run as the real
one would be; the monitor then lifts the taints because NVML's action reads NONE.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.checkpoint import ClaimEntry, DeviceRecord
from api.resource_v1 import DeviceTaint
from dra_driver.cdi import HostFiles
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import Gpu, HealthEvent, RecoveryAction
from kubelet_plugin.health.auto_reset import (
    AutoReset,
    AutoResetParts,
    Outcome,
    auto_reset_for,
    nvidia_smi_reset,
)
from kubelet_plugin.health.monitor import HealthMonitor
from kubelet_plugin.settings import parse_settings
from tests.fakes.nvidia_smi import install_fake_nvidia_smi, logged_resets

DRIVER = "gpu.dra-driver.io"
WINDOW = timedelta(minutes=5)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def claim(device: str, uuid: str) -> ClaimEntry:
    record = DeviceRecord(
        requests=("gpu",),
        pool="node-a",
        device=device,
        cdi_device_ids=(f"{DRIVER}/gpu={device}",),
        uuid=uuid,
        device_node="/dev/nvidia0",
    )
    return ClaimEntry(
        namespace="team-a",
        name="train",
        state="PrepareCompleted",
        boot_id="boot-a",
        cdi_spec_path="/var/run/cdi/x.json",
        devices=(record,),
    )


@pytest.fixture
def mock() -> MockBackend:
    return MockBackend("node-a", "pairs-4xA100")


def monitor(mock: MockBackend, clock: Clock) -> HealthMonitor:
    return HealthMonitor(
        driver_name=DRIVER,
        inventory=mock.inventory,
        device_names=[g.device_name for g in mock.inventory],
        events=mock,
        effects={"xid": "NoSchedule"},
        recovery=WINDOW,
        clock=clock,
        probe=mock.recovery,
    )


def auto_reset(
    mock: MockBackend,
    reset: Callable[[Gpu], None],
    *,
    claims: Callable[[], Mapping[str, ClaimEntry]] = dict,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> AutoReset:
    """The automatic reset of ``mock``'s GPUs: its recovery probe, its processes."""
    return AutoReset(
        inventory=mock.inventory,
        probe=mock.recovery,
        claims=claims,
        processes=mock,
        reset=reset,
        on_outcome=on_outcome,
    )


def mock_reset(mock: MockBackend, done: list[str]) -> Callable[[Gpu], None]:
    def reset(gpu: Gpu) -> None:
        done.append(gpu.uuid)
        mock.recovery.reset(gpu.uuid)

    return reset


@pytest.mark.parametrize(
    "action", [RecoveryAction.GPU_RESET, RecoveryAction.DRAIN_AND_RESET, RecoveryAction.DRAIN_P2P]
)
def test_a_drained_gpu_is_reset_only_once_no_claim_and_no_process_holds_it(
    mock: MockBackend, action: RecoveryAction, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    health = monitor(mock, clock)
    gpu = mock.inventory.gpus[0]
    claims = {"uid-1": claim("gpu-0-mig-1g10gb-19-0", "MIG-1"), "uid-2": claim("gpu-1", "x")}
    outcomes: list[Outcome] = []
    resets: list[str] = []
    auto = auto_reset(
        mock, mock_reset(mock, resets), claims=lambda: claims, on_outcome=outcomes.append
    )
    mock.recovery.set_action(gpu.uuid, action)
    health.handle(HealthEvent("xid", gpu.uuid, 94))
    assert auto.poll(health.taints()) == []  # NoSchedule only: nothing evicts yet
    health.expire()  # the action raises it to NoExecute
    assert auto.poll(health.taints()) == []
    # Attributed per MIG instance; gpu-1's claim is no matter of gpu-0's.
    assert (
        "gpu-0: automatic reset waiting-claims: held by claims team-a/train "
        "(gpu-0-mig-1g10gb-19-0)\n" in caplog.text
    )

    claims.clear()  # the pod left, the claim was unprepared; a process lingers
    mock.gpu_processes.start(gpu.uuid, 4242, memory_bytes=1 << 20)
    assert auto.poll(health.taints()) == []
    assert "compute processes: gpu-0 pid 4242" in caplog.text

    mock.gpu_processes.stop(4242)
    assert auto.poll(health.taints()) == ["gpu-0"]
    assert resets == [gpu.uuid]
    assert outcomes == ["waiting-claims", "waiting-processes", "reset"]
    assert auto.poll(health.taints()) == []  # the action reads NONE now: nothing more

    clock.now += WINDOW
    assert health.expire() is True
    assert health.taints() == {}


def test_a_process_on_a_mig_instance_keeps_its_gpu_waiting(
    mock: MockBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    health = monitor(mock, Clock())
    gpu = mock.inventory.gpus[1]
    profile = gpu.mig_profiles[0]
    mig = mock.mig_manager.create(gpu, profile, profile.placements[0])
    mock.gpu_processes.start(mig.uuid, 77, memory_bytes=None)
    resets: list[str] = []
    auto = auto_reset(mock, mock_reset(mock, resets))
    mock.recovery.set_action(gpu.uuid, RecoveryAction.GPU_RESET)
    health.handle(HealthEvent("xid", gpu.uuid, 94))
    health.expire()
    assert auto.poll(health.taints()) == []
    assert f"gpu-1: automatic reset waiting-processes: compute processes: {mig.uuid} pid 77" in (
        caplog.text
    )
    mock.gpu_processes.stop(77)
    assert auto.poll(health.taints()) == ["gpu-1"]


@pytest.mark.parametrize(
    "action", [RecoveryAction.NODE_REBOOT, RecoveryAction.RECOVER_IMEX_DOMAIN, RecoveryAction.NONE]
)
def test_no_reset_for_an_action_a_reset_does_not_answer(
    mock: MockBackend, action: RecoveryAction
) -> None:
    health = monitor(mock, Clock())
    gpu = mock.inventory.gpus[0]
    resets: list[str] = []
    auto = auto_reset(mock, mock_reset(mock, resets))
    health.handle(HealthEvent("xid", gpu.uuid, 48))  # needs-reset: NoExecute
    mock.recovery.set_action(gpu.uuid, action)
    health.expire()
    assert auto.poll(health.taints()) == []
    assert resets == []


def test_the_reset_runs_nvidia_smi_and_a_failure_is_not_retried(
    tmp_path: Path, mock: MockBackend, caplog: pytest.LogCaptureFixture
) -> None:
    binary = install_fake_nvidia_smi(tmp_path)
    health = monitor(mock, Clock())
    gpu, other = mock.inventory.gpus[0], mock.inventory.gpus[2]
    outcomes: list[Outcome] = []
    auto = auto_reset(mock, nvidia_smi_reset(binary, None), on_outcome=outcomes.append)
    for g in (gpu, other):
        mock.recovery.set_action(g.uuid, RecoveryAction.GPU_RESET)
        health.handle(HealthEvent("xid", g.uuid, 94))
    health.expire()
    (tmp_path / "nvidia-smi.reset-fails").touch()
    assert auto.poll(health.taints()) == []
    assert "the reset failed" in caplog.text and "being used by some other process" in caplog.text
    (tmp_path / "nvidia-smi.reset-fails").unlink()
    assert auto.poll(health.taints()) == []  # not retried at the same action
    assert outcomes == ["failed", "failed"]
    assert logged_resets(tmp_path) == []

    mock.recovery.set_action(gpu.uuid, RecoveryAction.DRAIN_AND_RESET)  # the action changed
    assert auto.poll(health.taints()) == ["gpu-0"]
    assert logged_resets(tmp_path) == [gpu.uuid]


class NoMockBackend:
    """A backend as NVML's looks to the automatic reset: processes, not the mock."""

    def __init__(self, mock: MockBackend) -> None:
        self._mock = mock

    def discover(self) -> object:
        return self._mock.inventory

    def processes(self) -> tuple[object, ...]:
        return self._mock.processes()


def test_the_flag_picks_the_reset_and_is_off_by_default(
    tmp_path: Path, mock: MockBackend, caplog: pytest.LogCaptureFixture
) -> None:
    gpu = mock.inventory.gpus[0]
    parts = AutoResetParts(mock, HostFiles(), dict)
    off = parse_settings(["--node-name", "node-a"], {})
    assert auto_reset_for(off, mock.inventory, mock.recovery, parts, print) is None
    on = parse_settings(["--node-name", "node-a"], {"DRA_DRIVER_AUTO_RESET": "true"})
    assert on.auto_reset is True

    # The mock backend: the mock's reset.
    auto = auto_reset_for(on, mock.inventory, mock.recovery, parts, print)
    assert auto is not None
    mock.recovery.set_action(gpu.uuid, RecoveryAction.GPU_RESET)
    taints = {"gpu-0": [DeviceTaint(key=f"{DRIVER}/xid", value="94", effect="NoExecute")]}
    assert auto.poll(taints) == ["gpu-0"]
    assert mock.recovery.recovery_action(gpu.uuid) is RecoveryAction.NONE

    # Another backend: the nvidia-smi the host scan found under the driver root, or none.
    other = AutoResetParts(NoMockBackend(mock), HostFiles(), dict)  # type: ignore[arg-type]
    assert auto_reset_for(on, mock.inventory, mock.recovery, other, print) is None
    assert "--auto-reset: no nvidia-smi under the driver root" in caplog.text
    install_fake_nvidia_smi(tmp_path)
    found = AutoResetParts(
        NoMockBackend(mock),  # type: ignore[arg-type]
        HostFiles(driver_files=("/usr/bin/nvidia-smi",)),
        dict,
    )
    rooted = on.model_copy(update={"driver_root": tmp_path})
    auto = auto_reset_for(rooted, mock.inventory, mock.recovery, found, print)
    assert auto is not None
    mock.recovery.set_action(gpu.uuid, RecoveryAction.GPU_RESET)
    assert auto.poll(taints) == ["gpu-0"]
    assert logged_resets(tmp_path) == [gpu.uuid]
