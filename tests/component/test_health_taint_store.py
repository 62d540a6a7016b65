"""The taint file on a real directory: saved on every change, restored at start-up under the
reboot rules, an unreadable one moved aside with every GPU tainted, admins' clears."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.taint_state import TaintState
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import HealthEvent
from dra_driver.slices import build_slices
from kubelet_plugin.health.monitor import HealthMonitor
from kubelet_plugin.health.service import Health
from kubelet_plugin.health.taint_store import (
    TAINT_FILE_NAME,
    TaintStore,
    load_taints,
    pending_clears,
    request_clear,
)

pytestmark = pytest.mark.component

DRIVER = "gpu.dra-driver.io"
UNREADABLE = f"{DRIVER}/taint-state-unreadable"
PROFILE = "2xH100-80GB"
WINDOW = timedelta(minutes=5)
T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class NoEvents:
    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        return None


@pytest.fixture
def mock() -> MockBackend:
    return MockBackend("node-a", PROFILE)


@pytest.fixture
def store(tmp_path: Path) -> TaintStore:
    return TaintStore(tmp_path / DRIVER / TAINT_FILE_NAME)


def gpus(mock: MockBackend) -> dict[str, str]:
    return {gpu.device_name: gpu.uuid for gpu in mock.inventory}


def start(
    mock: MockBackend, store: TaintStore, boot_id: str, clock: Callable[[], datetime]
) -> HealthMonitor:
    """What the plugin does at start-up: restore, build the monitor, apply clears, save."""
    monitor = HealthMonitor(
        driver_name=DRIVER,
        inventory=mock.inventory,
        device_names=[d.name for s in build_slices(mock.inventory) for d in s.spec.devices or []],
        events=NoEvents(),
        effects={"xid": "NoSchedule", "ecc-double-bit": "NoExecute", "gpu-lost": "NoExecute"},
        recovery=WINDOW,
        clock=clock,
        state=load_taints(store, boot_id=boot_id, gpus=gpus(mock), domain=DRIVER),
        save=store.save,
        clears_dir=store.path.parent,
    )
    monitor.apply_clears()
    monitor.persist()
    return monitor


def keys(monitor: HealthMonitor) -> dict[str, list[str]]:
    return {name: [t.key for t in taints] for name, taints in monitor.taints().items()}


def faulted(mock: MockBackend, store: TaintStore, clock: Clock) -> HealthMonitor:
    """gpu-0 with an XID, gpu-1 with a double-bit ECC error, saved in boot-a."""
    monitor = start(mock, store, "boot-a", clock)
    gpu0, gpu1 = (gpu.uuid for gpu in mock.inventory)
    monitor.handle(HealthEvent(kind="xid", gpu_uuid=gpu0, xid=79))
    monitor.handle(HealthEvent(kind="ecc-double-bit", gpu_uuid=gpu1))
    return monitor


def test_every_change_is_saved_with_its_cause_and_restored_as_it_was(
    mock: MockBackend, store: TaintStore
) -> None:
    clock = Clock()
    before = faulted(mock, store, clock)
    saved = json.loads(store.path.read_text())
    assert saved["bootId"] == "boot-a"
    (xid,) = saved["gpus"]["gpu-0"]["taints"]
    assert xid["cause"] == {
        "kind": "xid",
        "xid": 79,
        "gpuUuid": mock.inventory.gpus[0].uuid,
        "seenAt": "2026-11-27T10:00:00Z",
    }
    assert (xid["key"], xid["value"], xid["effect"], xid["timeAdded"]) == (
        f"{DRIVER}/xid",
        "79",
        "NoExecute",
        "2026-11-27T10:00:00Z",
    )
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"

    clock.now = T0 + timedelta(minutes=1)
    after = start(mock, store, "boot-a", clock)  # a plugin restart, same boot
    assert after.taints() == before.taints()
    assert {d.device: d.health for d in after.snapshot()}["gpu-1"] == Health.UNHEALTHY

    # The recovery window runs from the event, not from the restart.
    clock.now = T0 + WINDOW
    assert after.expire() is True
    assert after.taints() == {}
    assert json.loads(store.path.read_text())["gpus"] == {}


def test_a_reboot_drops_the_taints_a_reboot_clears_and_keeps_the_others(
    mock: MockBackend, store: TaintStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    faulted(mock, store, clock)
    caplog.set_level(logging.INFO)

    rebooted = start(mock, store, "boot-b", clock)

    # XID 79: the driver reloads and resets the GPU; ECC: the memory fault stays a fact.
    assert keys(rebooted) == {"gpu-1": [f"{DRIVER}/ecc"]}
    assert "gpu-0: taint gpu.dra-driver.io/xid (xid) dropped: the node rebooted" in caplog.text
    saved = json.loads(store.path.read_text())
    assert saved["bootId"] == "boot-b"
    assert list(saved["gpus"]) == ["gpu-1"]
    # A restart later in the same boot keeps what the reboot left.
    assert keys(start(mock, store, "boot-b", clock)) == {"gpu-1": [f"{DRIVER}/ecc"]}


def test_a_lost_gpu_keeps_its_taint_across_restarts_until_a_reboot(
    mock: MockBackend, store: TaintStore
) -> None:
    clock = Clock()
    monitor = start(mock, store, "boot-a", clock)
    monitor.handle(HealthEvent(kind="gpu-lost", gpu_uuid=mock.inventory.gpus[1].uuid))
    clock.now = T0 + 2 * WINDOW
    restarted = start(mock, store, "boot-a", clock)
    assert restarted.expire() is False  # silence says nothing about a lost GPU
    assert keys(restarted) == {"gpu-1": [f"{DRIVER}/gpu-lost"]}
    assert keys(start(mock, store, "boot-b", clock)) == {}


def test_the_taints_of_a_gpu_swapped_under_the_same_name_are_dropped(
    mock: MockBackend, store: TaintStore
) -> None:
    faulted(mock, store, Clock())
    swapped = MockBackend("node-b", PROFILE)  # other UUIDs, same device names
    assert gpus(swapped).keys() == gpus(mock).keys()
    assert keys(start(swapped, store, "boot-a", Clock())) == {}


def _fifo(path: Path) -> None:
    os.mkfifo(path)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "garbage": lambda p: p.write_bytes(b"\x00\xff{"),
    "truncated": lambda p: p.write_text('{"version": 1, "bootId": "boot-a", "gpus": {"gpu-0"'),
    "empty": lambda p: p.write_bytes(b""),
    "newer version": lambda p: p.write_text('{"version": 2, "gpus": {}}'),
    "wrong field": lambda p: p.write_text('{"version": 1, "gpus": {"gpu-0": {"uuid": 7}}}'),
    "link to /dev/zero": lambda p: p.symlink_to("/dev/zero"),
    "directory": lambda p: p.mkdir(),
    "fifo": _fifo,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_unreadable_file_is_moved_aside_and_every_gpu_stays_tainted(
    mock: MockBackend, store: TaintStore, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    store.path.parent.mkdir(mode=0o700)
    DAMAGE[damage](store.path)

    monitor = start(mock, store, "boot-a", Clock())

    assert keys(monitor) == {"gpu-0": [UNREADABLE], "gpu-1": [UNREADABLE]}
    assert {t.effect for ts in monitor.taints().values() for t in ts} == {"NoSchedule"}
    assert {d.health for d in monitor.snapshot()} == {Health.UNHEALTHY}  # MIG devices too
    (moved,) = store.path.parent.glob(f"{TAINT_FILE_NAME}.corrupt-*")
    assert "TaintStateCorruptError: taint file" in caplog.text
    assert str(moved) in caplog.text
    # The stand-in taint is saved in a new file, so a restart does not lose it either.
    assert store.path.is_file() and not store.path.is_symlink()
    assert keys(start(mock, store, "boot-a", Clock())) == keys(monitor)
    # No recovery window for it, nor a reboot: only an admin clears it.
    monitor.handle(HealthEvent(kind="xid", gpu_uuid=mock.inventory.gpus[0].uuid, xid=48))
    assert keys(start(mock, store, "boot-b", Clock())) == {
        "gpu-0": [UNREADABLE],
        "gpu-1": [UNREADABLE],
    }


def test_an_admin_clear_is_applied_saved_and_kept(mock: MockBackend, store: TaintStore) -> None:
    clock = Clock()
    monitor = faulted(mock, store, clock)
    mig = next(d.device for d in monitor.snapshot() if d.device.startswith("gpu-1-mig-"))
    request_clear(store.path.parent, mig)  # a MIG device clears its GPU
    request_clear(store.path.parent, "gpu-7")  # no such device: refused, kept for a person

    assert monitor.apply_clears() is True

    assert keys(monitor) == {"gpu-0": [f"{DRIVER}/xid"]}
    assert pending_clears(store.path.parent) == []
    assert len(list((store.path.parent / "taint-clears").glob("*.rejected"))) == 1
    assert keys(start(mock, store, "boot-a", clock)) == {"gpu-0": [f"{DRIVER}/xid"]}

    request_clear(store.path.parent, None)  # --all, queued while no plugin runs
    assert keys(start(mock, store, "boot-a", clock)) == {}
    assert TaintState.model_validate_json(store.path.read_text()).gpus == {}
