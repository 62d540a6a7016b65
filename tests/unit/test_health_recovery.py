"""Recovery the hardware confirms: the XID table, NVML's recovery action, the fallback.

The monitor runs against the mock backend's recovery state (:class:`MockRecovery`, what
NVML's field 230 and a validation would read) on a fake clock, so every path is driven
by the test: an action that keeps the taint, a reset that lifts it, a reboot it waits
for, a driver without the field.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from discovery_nvml_fake import EVENT_XID, FakeNvml, fake_gpu
from health_fixtures import DRIVER, WINDOW, Clock, effects, mock_monitor, uuid

from api.taint_state import GpuTaints, TaintState, decode_taint_state, encode_taint_state
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import Gpu, HealthEvent, RecoveryAction
from kubelet_plugin.health.classification import action_outcome, effect_of, xid_outcome
from kubelet_plugin.health.faults import FaultSpool, mock_boot_id, write_fault
from kubelet_plugin.health.monitor import HealthMonitor
from kubelet_plugin.health.recovery import Lifted
from kubelet_plugin.health.taint_store import restore
from kubelet_plugin.nvml import NvmlBackend
from kubelet_plugin.nvml.library import NvmlCalls
from kubelet_plugin.nvml.recovery import FIELD_GPU_RECOVERY_ACTION, NvmlRecoveryProbe

IGNORED = frozenset({13, 43})


class Notices:
    """What the monitor told: (kind, GPU name, detail)."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str, object]] = []

    def tainted(self, gpu: Gpu, taint: Any, delay_s: float) -> None:
        self.heard.append(("tainted", gpu.device_name, (taint.key, taint.effect)))

    def recovered(self, gpu: Gpu, lifted: Lifted) -> None:
        detail = (lifted.method, lifted.field, lifted.held_s)
        self.heard.append(("recovered", gpu.device_name, detail))


@pytest.fixture
def mock() -> MockBackend:
    return MockBackend("node-a", "2xH100-80GB")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def notices() -> Notices:
    return Notices()


def monitor(
    mock: MockBackend, clock: Clock, notices: Notices, state: TaintState | None = None
) -> HealthMonitor:
    return mock_monitor(mock, clock, notices, state, ignored_xids=IGNORED)


# --- The table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xid", "outcome", "effect"),
    [
        (13, "informational", "None"),  # an application error (the ignore list)
        (43, "informational", "None"),
        (48, "needs-reset", "NoExecute"),  # double-bit ECC
        (63, "needs-reset", "NoExecute"),  # page retirement / row remap pending
        (64, "needs-reset", "NoExecute"),
        (79, "needs-reboot", "NoExecute"),  # fallen off the bus
        (94, "no-schedule", "NoSchedule"),  # not in the table: the policy's effect
    ],
)
def test_each_xid_has_its_outcome_and_effect(xid: int, outcome: str, effect: str) -> None:
    got = xid_outcome(xid, ignored=IGNORED, policy_effect="NoSchedule")
    assert (got, effect_of(got, "NoSchedule")) == (outcome, effect)


def test_an_unlisted_xid_follows_the_policy() -> None:
    assert xid_outcome(94, ignored=IGNORED, policy_effect="NoExecute") == "no-execute"
    assert xid_outcome(94, ignored=IGNORED, policy_effect="None") == "informational"


def test_each_recovery_action_has_its_outcome_and_matches_nvml() -> None:
    import pynvml

    assert pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION == FIELD_GPU_RECOVERY_ACTION == 230
    for action in RecoveryAction:
        assert getattr(pynvml, f"NVML_GPU_RECOVERY_ACTION_{action.name}") == action.value
    assert {a.name: action_outcome(a) for a in RecoveryAction} == {
        "NONE": None,
        "GPU_RESET": "needs-reset",
        "NODE_REBOOT": "needs-reboot",
        "DRAIN_P2P": "needs-reset",
        "DRAIN_AND_RESET": "needs-reset",
        "RECOVER_IMEX_DOMAIN": "no-schedule",
        "BUS_RESET": "needs-reset",
        "SYSTEM_REBOOT": "needs-reboot",
    }


# --- The state machine -----------------------------------------------------------------


def test_a_reset_action_keeps_the_taint_until_it_reads_none_and_the_gpu_validates(
    mock: MockBackend, clock: Clock, notices: Notices, caplog: pytest.LogCaptureFixture
) -> None:
    health = monitor(mock, clock, notices)
    mock.recovery.set_action(uuid(mock, 1), RecoveryAction.GPU_RESET)
    health.handle(HealthEvent("xid", uuid(mock, 1), 94))
    assert effects(health) == {"gpu-1": [(f"{DRIVER}/xid", "94", "NoSchedule")]}

    # The action asks for a reset: pods must leave, whatever the window says.
    assert health.expire() is True
    assert effects(health) == {"gpu-1": [(f"{DRIVER}/xid", "94", "NoExecute")]}
    clock.now += WINDOW * 3
    assert health.expire() is False
    assert "gpu-1: recovery action GPU_RESET: taints kept until it reads NONE" in caplog.text

    # Reset, but the GPU does not validate yet.
    mock.recovery.reset(uuid(mock, 1))
    mock.recovery.set_invalid(uuid(mock, 1), "2 uncorrected ECC error(s) since the last reset")
    assert health.expire() is False
    assert "recovery action NONE but the GPU does not validate (2 uncorrected" in caplog.text

    mock.recovery.set_invalid(uuid(mock, 1), None)
    assert health.expire() is True
    assert health.taints() == {}
    assert notices.heard == [
        ("tainted", "gpu-1", (f"{DRIVER}/xid", "NoSchedule")),
        ("recovered", "gpu-1", ("recovery-action", "supported", (WINDOW * 3).total_seconds())),
    ]


def test_with_the_action_none_the_quiet_window_still_applies(
    mock: MockBackend, clock: Clock, notices: Notices
) -> None:
    health = monitor(mock, clock, notices)
    health.handle(HealthEvent("xid", uuid(mock, 0), 48))
    assert health.expire() is False  # NONE and valid, but the fault is fresh
    clock.now += WINDOW
    assert health.expire() is True
    assert notices.heard[-1][2][:2] == ("recovery-action", "supported")  # type: ignore[index]


@pytest.mark.parametrize("action", [RecoveryAction.NODE_REBOOT, RecoveryAction.SYSTEM_REBOOT])
def test_a_reboot_action_keeps_the_taint_until_the_boot_id_changes(
    mock: MockBackend, clock: Clock, notices: Notices, action: RecoveryAction
) -> None:
    health = monitor(mock, clock, notices)
    mock.recovery.set_action(uuid(mock, 0), action)
    health.handle(HealthEvent("ecc-double-bit", uuid(mock, 0)))
    assert health.expire() is True  # now waiting for a reboot: saved so
    mock.recovery.reset(uuid(mock, 0))  # NONE and valid: a reboot is still owed
    clock.now += WINDOW * 10
    assert health.expire() is False
    assert list(health.taints()) == ["gpu-0"]

    saved = health.state().model_copy(update={"boot_id": "boot-a"})
    assert saved.gpus["gpu-0"].awaiting_reboot is True
    gpus = {g.device_name: g.uuid for g in mock.inventory}
    # A restart in the same boot keeps it, still waiting; a new boot drops it (even ECC).
    same = restore(saved, boot_id="boot-a", gpus=gpus)
    assert same.gpus["gpu-0"].awaiting_reboot is True
    restarted = monitor(mock, clock, notices, state=same)
    clock.now += WINDOW * 10
    assert restarted.expire() is False
    assert list(restarted.taints()) == ["gpu-0"]
    assert restore(saved, boot_id="boot-b", gpus=gpus).gpus == {}


def test_recover_imex_domain_keeps_the_gpu_from_new_pods_only(
    mock: MockBackend, clock: Clock, notices: Notices
) -> None:
    health = monitor(mock, clock, notices)
    mock.recovery.set_action(uuid(mock, 0), RecoveryAction.RECOVER_IMEX_DOMAIN)
    health.handle(HealthEvent("xid", uuid(mock, 0), 13))  # informational, then the action
    health.expire()
    assert effects(health) == {"gpu-0": [(f"{DRIVER}/xid", "13", "NoSchedule")]}


def test_without_the_field_the_quiet_window_decides_and_says_so(
    mock: MockBackend, clock: Clock, notices: Notices, caplog: pytest.LogCaptureFixture
) -> None:
    health = monitor(mock, clock, notices)
    mock.recovery.set_supported(False)
    health.handle(HealthEvent("xid", uuid(mock, 1), 48))
    assert health.expire() is False
    assert "NVML field 230 not supported): the quiet window decides recovery" in caplog.text
    clock.now += WINDOW
    assert health.expire() is True
    assert notices.heard[-1][2][:2] == ("quiet-window", "not-supported")  # type: ignore[index]


def test_without_the_field_a_fault_needing_a_reboot_waits_for_one(
    mock: MockBackend, clock: Clock, notices: Notices
) -> None:
    health = monitor(mock, clock, notices)
    mock.recovery.set_supported(False)
    health.handle(HealthEvent("xid", uuid(mock, 1), 79))
    assert health.expire() is True  # now waiting for the reboot
    clock.now += WINDOW * 10
    assert health.expire() is False
    assert health.state().gpus["gpu-1"].awaiting_reboot is True


def test_an_informational_taint_blocks_nothing_and_goes_after_the_window(
    mock: MockBackend, clock: Clock, notices: Notices
) -> None:
    health = monitor(mock, clock, notices)
    health.handle(HealthEvent("xid", uuid(mock, 0), 43))
    assert effects(health) == {"gpu-0": [(f"{DRIVER}/xid", "43", "None")]}
    assert {d.health.name for d in health.snapshot()} == {"HEALTHY"}
    clock.now += WINDOW
    assert health.expire() is True
    assert notices.heard[-1][2][:2] == ("quiet-window", "supported")  # type: ignore[index]


# --- The fault spool's recovery faults --------------------------------------------------


@pytest.fixture
def spool(tmp_path: Path, mock: MockBackend) -> Iterator[FaultSpool]:
    yield FaultSpool(mock, tmp_path / "faults", poll_s=0.01)


def test_recovery_faults_set_what_the_probe_reads(spool: FaultSpool, mock: MockBackend) -> None:
    gpu1 = uuid(mock, 1)
    write_fault(spool.directory, "xid", gpu="gpu-1", xid=48, recoveryAction="DRAIN_AND_RESET")
    assert spool.collect() == 1
    assert mock.recovery.recovery_action(gpu1) is RecoveryAction.DRAIN_AND_RESET
    event = spool.wait_health_event(0)
    assert event is not None and event.xid == 48
    assert event.occurred_at is not None and abs(event.occurred_at - time.time()) < 3600

    write_fault(spool.directory, "invalid", gpu="gpu-1", problem="memory unreadable")
    write_fault(spool.directory, "reset", gpu="gpu-0")
    spool.collect()
    assert mock.recovery.validate(gpu1) == "memory unreadable"
    write_fault(spool.directory, "reset", gpu="gpu-1")
    write_fault(spool.directory, "recovery-field", supported=False)
    spool.collect()
    assert mock.recovery.validate(gpu1) is None
    assert mock.recovery.recovery_action(gpu1) is None  # an older driver


def test_a_bad_recovery_fault_is_set_aside(
    spool: FaultSpool, caplog: pytest.LogCaptureFixture
) -> None:
    write_fault(spool.directory, "recovery-action", gpu="gpu-0", action="REPLACE_GPU")
    write_fault(spool.directory, "recovery-field", supported="no")
    assert spool.collect() == 0
    assert len(list(spool.directory.glob("*.rejected"))) == 2
    assert "unknown recovery action 'REPLACE_GPU': use NONE, GPU_RESET" in caplog.text
    assert "'supported' must be true or false" in caplog.text


def test_the_mock_node_boot_id_comes_from_the_fault_directory(tmp_path: Path) -> None:
    assert mock_boot_id(tmp_path) is None
    (tmp_path / "boot_id").write_text("after-reboot\n")
    assert mock_boot_id(tmp_path) == "after-reboot"


# --- NVML -------------------------------------------------------------------------------


class FakeError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_nvml(*, returned: int = 0, action: int = 0, ecc: int | Exception = 0) -> Any:
    def ecc_errors(handle: object, kind: int, counter: int) -> int:
        if isinstance(ecc, Exception):
            raise ecc
        return ecc

    field = SimpleNamespace(nvmlReturn=returned, value=SimpleNamespace(uiVal=action))
    return SimpleNamespace(
        NVMLError=FakeError,
        nvmlDeviceGetHandleByUUID=lambda uuid: uuid,
        nvmlDeviceGetFieldValues=lambda handle, ids: [field] if ids == [230] else [],
        nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(total=1),
        nvmlDeviceGetTotalEccErrors=ecc_errors,
    )


def test_nvml_reads_the_recovery_action_field_and_validates() -> None:
    def probe(nvml: Any) -> NvmlRecoveryProbe:
        return NvmlRecoveryProbe(NvmlCalls(nvml, "node-a"))

    assert probe(fake_nvml(action=1)).recovery_action("GPU-1") is RecoveryAction.GPU_RESET
    assert probe(fake_nvml(returned=3)).recovery_action("GPU-1") is None  # NOT_SUPPORTED
    assert probe(fake_nvml()).validate("GPU-1") is None
    assert probe(fake_nvml(ecc=FakeError(3))).validate("GPU-1") is None  # no ECC on the GPU
    assert probe(fake_nvml(ecc=2)).validate("GPU-1") == (
        "2 uncorrected ECC error(s) since the last reset"
    )
    lost = fake_nvml()
    lost.nvmlDeviceGetMemoryInfo = lambda handle: (_ for _ in ()).throw(FakeError(15))
    assert "NVML does not answer for it" in str(probe(lost).validate("GPU-1"))


def test_an_unknown_action_number_reads_as_a_reset(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    probe = NvmlRecoveryProbe(NvmlCalls(fake_nvml(action=42), "node-a"))
    assert probe.recovery_action("GPU-1") is RecoveryAction.GPU_RESET
    assert "unknown recovery action 42" in caplog.text


# --- taints.json: awaitingReboot, optional in version 1 ----------------------------------


def test_awaiting_reboot_is_written_only_when_true_and_files_without_it_read_as_before() -> None:
    old = b'{"version":1,"bootId":"b","gpus":{"gpu-0":{"uuid":"GPU-0","taints":[]}}}'
    state = decode_taint_state(old)
    assert state.gpus["gpu-0"].awaiting_reboot is None
    assert b"awaitingReboot" not in encode_taint_state(state)  # an older plugin reads it

    waiting = TaintState(boot_id="b", gpus={"gpu-0": GpuTaints(uuid="GPU-0", awaiting_reboot=True)})
    data = encode_taint_state(waiting)
    assert b'"awaitingReboot":true' in data
    assert decode_taint_state(data) == waiting


def test_nvml_events_carry_the_time_they_were_read(tmp_path: Path) -> None:
    gpu = fake_gpu("H100-80GB", "GPU-11111111-2222-3333-4444-555555555555")
    nvml = FakeNvml([gpu])
    backend = NvmlBackend("node-a", nvml=nvml, sysfs_root=tmp_path)
    nvml.event(gpu, EVENT_XID, 48)
    before = time.time()
    event = backend.wait_health_event(0.1)
    assert event is not None and event.occurred_at is not None
    assert before <= event.occurred_at <= time.time()
