"""DRAIN_P2P fences the GPU's NVLink peers (kubelet_plugin.health.peers).

The mock backend plays the ``pairs-4xA100`` machine (NVLink-bridged pairs 0+1 and 2+3);
faults and NVML's recovery action (field 230) come from the fault spool's files, as a
person or a cluster test drives them, on a fake clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from health_fixtures import DRIVER, WINDOW, Clock, effects, mock_monitor, uuid

from api.taint_state import TaintState, decode_taint_state, encode_taint_state
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import Gpu, HealthEvent, RecoveryAction
from dra_driver.slices import build_slices
from kubelet_plugin.health.faults import FaultSpool, write_fault
from kubelet_plugin.health.monitor import HealthMonitor
from kubelet_plugin.health.recovery import Lifted
from kubelet_plugin.health.taint_store import restore

FENCE0 = f"{DRIVER}/nvlink-peer-drain.gpu-0"


class Notices:
    def __init__(self) -> None:
        self.heard: list[tuple[str, str, object]] = []

    def tainted(self, gpu: Gpu, taint: Any, delay_s: float) -> None:
        self.heard.append(("tainted", gpu.device_name, (taint.key, taint.value, taint.effect)))

    def recovered(self, gpu: Gpu, lifted: Lifted) -> None:
        self.heard.append(("recovered", gpu.device_name, lifted.keys))


@pytest.fixture
def mock() -> MockBackend:
    return MockBackend("node-a", "pairs-4xA100")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def notices() -> Notices:
    return Notices()


def monitor(
    mock: MockBackend, clock: Clock, notices: Notices, state: TaintState | None = None
) -> HealthMonitor:
    return mock_monitor(mock, clock, notices, state)


def drained(mock: MockBackend, clock: Clock, notices: Notices) -> HealthMonitor:
    """gpu-0 with XID 94 and NVML asking for DRAIN_P2P, polled once."""
    health = monitor(mock, clock, notices)
    mock.recovery.set_action(uuid(mock, 0), RecoveryAction.DRAIN_P2P)
    health.handle(HealthEvent("xid", uuid(mock, 0), 94))
    assert health.expire() is True
    return health


def test_drain_p2p_from_a_fault_file_fences_the_nvlink_peer_until_the_gpu_recovers(
    tmp_path: Path, mock: MockBackend, clock: Clock, notices: Notices
) -> None:
    spool = FaultSpool(mock, tmp_path / "faults", poll_s=0.01)
    health = monitor(mock, clock, notices)
    write_fault(spool.directory, "xid", gpu="gpu-0", xid=94, recoveryAction="DRAIN_P2P")
    assert spool.collect() == 1
    event = spool.wait_health_event(0)
    assert event is not None
    health.handle(event)
    assert health.expire() is True
    # gpu-0 must be drained; its NVLink peer gpu-1 keeps new claims off; 2 and 3 untouched.
    assert effects(health) == {
        "gpu-0": [(f"{DRIVER}/xid", "94", "NoExecute")],
        "gpu-1": [(FENCE0, uuid(mock, 0), "NoSchedule")],
    }
    assert ("tainted", "gpu-1", (FENCE0, uuid(mock, 0), "NoSchedule")) in notices.heard
    assert health.expire() is False  # fenced once

    # The peer's own quiet window never lifts the fence.
    clock.now += WINDOW * 3
    assert health.expire() is False
    assert FENCE0 in {t.key for t in health.taints()["gpu-1"]}

    # The reset: the action reads NONE, gpu-0 validates, its taints and the fence go.
    write_fault(spool.directory, "reset", gpu="gpu-0")
    spool.collect()
    assert health.expire() is True
    assert health.taints() == {}
    assert notices.heard[-1] == ("recovered", "gpu-0", (f"{DRIVER}/xid",))


def test_the_fence_is_published_on_the_peer_and_its_mig_devices(
    mock: MockBackend, clock: Clock, notices: Notices
) -> None:
    health = drained(mock, clock, notices)
    devices = [
        d
        for s in build_slices(mock.inventory, taints=health.taints())
        for d in s.spec.devices or ()
    ]
    fenced = {d.name for d in devices if FENCE0 in {t.key for t in d.taints or ()}}
    on_gpu1 = {d.name for d in devices if d.name == "gpu-1" or d.name.startswith("gpu-1-")}
    assert len(on_gpu1) > 1  # the GPU and its MIG devices
    assert fenced == on_gpu1


def test_the_fence_persists_and_a_reboot_drops_it(
    mock: MockBackend, clock: Clock, notices: Notices
) -> None:
    health = drained(mock, clock, notices)
    saved = decode_taint_state(
        encode_taint_state(health.state().model_copy(update={"boot_id": "a"}))
    )
    (fence,) = saved.gpus["gpu-1"].taints
    assert (fence.key, fence.cause.kind, fence.cause.gpu_uuid) == (
        FENCE0,
        "nvlink-peer-drain",
        uuid(mock, 0),
    )
    gpus = {g.device_name: g.uuid for g in mock.inventory}
    restarted = monitor(mock, clock, notices, state=restore(saved, boot_id="a", gpus=gpus))
    assert effects(restarted) == effects(health)
    # After the restart, gpu-0's recovery still lifts the fence it raised before.
    mock.recovery.reset(uuid(mock, 0))
    clock.now += WINDOW
    assert restarted.expire() is True
    assert restarted.taints() == {}
    # A reboot drops the XID and the fence alike.
    assert restore(saved, boot_id="b", gpus=gpus).gpus == {}


def test_an_admin_clear_of_the_draining_gpu_lifts_its_fence_but_not_the_other_way(
    mock: MockBackend, clock: Clock, notices: Notices
) -> None:
    health = drained(mock, clock, notices)
    assert health.clear("gpu-1") == ["gpu-1"]
    assert list(health.taints()) == ["gpu-0"]
    health.expire()  # still DRAIN_P2P: fenced again
    assert list(health.taints()) == ["gpu-0", "gpu-1"]
    assert health.clear(uuid(mock, 0)) == ["gpu-0", "gpu-1"]
    assert health.taints() == {}


def test_a_fenced_peer_with_a_fault_of_its_own_keeps_the_fence_when_it_recovers(
    mock: MockBackend, clock: Clock, notices: Notices
) -> None:
    health = drained(mock, clock, notices)
    health.handle(HealthEvent("xid", uuid(mock, 1), 94))
    clock.now += WINDOW
    health.expire()
    assert effects(health)["gpu-1"] == [(FENCE0, uuid(mock, 0), "NoSchedule")]
    assert ("recovered", "gpu-1", (f"{DRIVER}/xid",)) in notices.heard


def test_two_draining_gpus_of_a_pair_fence_each_other(
    mock: MockBackend, clock: Clock, notices: Notices
) -> None:
    health = drained(mock, clock, notices)
    mock.recovery.set_action(uuid(mock, 1), RecoveryAction.DRAIN_P2P)
    health.handle(HealthEvent("xid", uuid(mock, 1), 94))
    health.expire()
    keys = {name: {t.key for t in ts} for name, ts in health.taints().items()}
    assert keys == {
        "gpu-0": {f"{DRIVER}/xid", f"{DRIVER}/nvlink-peer-drain.gpu-1"},
        "gpu-1": {f"{DRIVER}/xid", FENCE0},
    }
    mock.recovery.reset(uuid(mock, 0))
    clock.now += WINDOW
    health.expire()  # gpu-0 recovered; gpu-1 still drains, so gpu-0 stays fenced by it
    assert effects(health)["gpu-0"] == [
        (f"{DRIVER}/nvlink-peer-drain.gpu-1", uuid(mock, 1), "NoSchedule")
    ]
    assert FENCE0 not in {t.key for t in health.taints()["gpu-1"]}


def test_drain_p2p_without_known_peers_fences_nothing_and_says_so(
    clock: Clock, notices: Notices, caplog: pytest.LogCaptureFixture
) -> None:
    plain = MockBackend("node-a", "2xH100-80GB")  # a plain profile: no topology
    health = drained(plain, clock, notices)
    assert list(health.taints()) == ["gpu-0"]
    assert "DRAIN_P2P, but discovery knows no NVLink peer of it" in caplog.text
