"""GPU health events to device taints, recovery, device health, and mock fault files."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent_kit.kube import UnavailableError
from api.errors import DiscoveryError, InvalidInputError
from api.resource_v1 import DeviceTaint
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import HealthEvent, HealthEventKind
from dra_driver.slices import build_slices
from kubelet_plugin.health.faults import FaultSpool, write_fault
from kubelet_plugin.health.loop import run_health_loop
from kubelet_plugin.health.monitor import HealthMonitor, TaintAction
from kubelet_plugin.health.service import Health, HealthBroadcaster

DRIVER = "gpu.dra-driver.io"
T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)
POLICY: dict[HealthEventKind, str] = {
    "xid": "NoSchedule",
    "ecc-double-bit": "NoExecute",
    "ecc-single-bit": "NoSchedule",
    "gpu-lost": "NoExecute",
}
# gpu-0: an A100 in MIG mode with three MIG devices; gpu-1: an L4.
PROFILE = "1xA100-80GB:mig=3g.40gb/2x2g.20gb,1xL4"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class NoEvents:
    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        return None


class Scripted:
    """Hands out the given items (an event, None, or an exception to raise), then sets stop."""

    def __init__(self, stop: threading.Event, *items: HealthEvent | Exception | None) -> None:
        self._items = list(items)
        self._stop = stop

    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        if not self._items:
            self._stop.set()
            return None
        item = self._items.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


@pytest.fixture
def mock() -> MockBackend:
    return MockBackend("node-a", PROFILE)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def device_names(mock: MockBackend) -> list[str]:
    return [d.name for s in build_slices(mock.inventory) for d in s.spec.devices or []]


def monitor(
    mock: MockBackend,
    clock: Clock,
    *,
    effects: Mapping[HealthEventKind, str] = POLICY,
    events: object = None,
    **options: object,
) -> HealthMonitor:
    return HealthMonitor(
        driver_name=DRIVER,
        inventory=mock.inventory,
        device_names=device_names(mock),
        events=events or NoEvents(),  # type: ignore[arg-type]
        effects=effects,
        ignored_xids={13, 43},
        recovery=WINDOW,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


def uuid(mock: MockBackend, index: int) -> str:
    return mock.inventory.gpus[index].uuid


def xid(mock: MockBackend, index: int, number: int) -> HealthEvent:
    return HealthEvent(kind="xid", gpu_uuid=uuid(mock, index), xid=number)


def summary(taints: Mapping[str, Sequence[DeviceTaint]]) -> dict[str, list[tuple[object, ...]]]:
    return {
        name: [(t.key, t.value, t.effect, t.time_added) for t in items]
        for name, items in taints.items()
    }


def test_an_xid_taints_its_gpu_with_the_number_the_effect_and_the_time(
    mock: MockBackend, clock: Clock
) -> None:
    health = monitor(mock, clock)

    assert health.handle(xid(mock, 1, 79)) is True

    # XID 79 (fallen off the bus) needs a reboot: pods must leave.
    assert summary(health.taints()) == {
        "gpu-1": [(f"{DRIVER}/xid", "79", "NoExecute", "2026-11-27T10:00:00Z")]
    }
    assert health.tainted_device_count() == 1


def test_a_gpu_fault_taints_its_mig_devices_too(mock: MockBackend, clock: Clock) -> None:
    health = monitor(mock, clock)
    mig_uuid = mock.inventory.gpus[0].mig_devices[1].uuid

    # NVML may name a MIG device; the fault is its GPU's.
    assert health.handle(HealthEvent(kind="xid", gpu_uuid=mig_uuid, xid=48)) is True

    assert list(health.taints()) == ["gpu-0"]
    assert health.tainted_device_count() == 3
    slices = build_slices(mock.inventory, driver_name=DRIVER, taints=health.taints())
    tainted = {d.name for s in slices for d in s.spec.devices or [] if d.taints}
    assert tainted == {"gpu-0-mig-2g20gb-14-0", "gpu-0-mig-2g20gb-14-2", "gpu-0-mig-3g40gb-9-4"}


def test_application_xids_inform_and_kinds_outside_the_policy_taint_nothing(
    mock: MockBackend, clock: Clock
) -> None:
    seen: list[tuple[HealthEventKind, TaintAction]] = []
    health = monitor(
        mock,
        clock,
        effects={"xid": "NoSchedule"},
        on_event=lambda kind, action: seen.append((kind, action)),
    )

    assert health.handle(xid(mock, 0, 13)) is True
    assert health.handle(HealthEvent(kind="ecc-double-bit", gpu_uuid=uuid(mock, 0))) is False

    # An application XID is published for people to see (effect None), blocking nothing.
    assert summary(health.taints()) == {
        "gpu-0": [(f"{DRIVER}/xid", "13", "None", "2026-11-27T10:00:00Z")]
    }
    assert {d.device: d.health for d in health.snapshot()}["gpu-0-mig-3g40gb-9-4"] is Health.HEALTHY
    assert seen == [("xid", "tainted"), ("ecc-double-bit", "ignored")]


def test_an_event_for_a_gpu_of_another_node_changes_nothing(
    mock: MockBackend, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[TaintAction] = []
    health = monitor(mock, clock, on_event=lambda kind, action: seen.append(action))

    assert health.handle(HealthEvent(kind="xid", gpu_uuid="GPU-elsewhere", xid=79)) is False

    assert health.taints() == {}
    assert seen == ["unknown-gpu"]
    assert "XID 79 on unknown GPU GPU-elsewhere: not a GPU of this node" in caplog.text


def test_the_same_fault_again_keeps_the_taint_and_restarts_the_window(
    mock: MockBackend, clock: Clock
) -> None:
    seen: list[TaintAction] = []
    health = monitor(mock, clock, on_event=lambda kind, action: seen.append(action))
    health.handle(xid(mock, 1, 79))
    clock.advance(timedelta(minutes=4))

    assert health.handle(xid(mock, 1, 79)) is False
    clock.advance(timedelta(minutes=4))  # 8 minutes after the first, 4 after the second

    assert health.expire() is False
    assert summary(health.taints())["gpu-1"][0][3] == "2026-11-27T10:00:00Z"
    assert seen == ["tainted", "renewed"]


def test_another_xid_replaces_the_value_and_the_time(mock: MockBackend, clock: Clock) -> None:
    health = monitor(mock, clock)
    health.handle(xid(mock, 1, 94))
    clock.advance(timedelta(seconds=30))

    assert health.handle(xid(mock, 1, 95)) is True

    assert summary(health.taints()) == {
        "gpu-1": [(f"{DRIVER}/xid", "95", "NoSchedule", "2026-11-27T10:00:30Z")]
    }


def test_a_milder_ecc_event_does_not_weaken_the_taint(mock: MockBackend, clock: Clock) -> None:
    health = monitor(mock, clock)
    health.handle(HealthEvent(kind="ecc-double-bit", gpu_uuid=uuid(mock, 1)))

    assert health.handle(HealthEvent(kind="ecc-single-bit", gpu_uuid=uuid(mock, 1))) is False
    assert summary(health.taints()) == {
        "gpu-1": [(f"{DRIVER}/ecc", "double-bit", "NoExecute", "2026-11-27T10:00:00Z")]
    }

    # A stronger one does replace a milder one.
    health.handle(HealthEvent(kind="ecc-single-bit", gpu_uuid=uuid(mock, 0)))
    assert health.handle(HealthEvent(kind="ecc-double-bit", gpu_uuid=uuid(mock, 0))) is True
    assert summary(health.taints())["gpu-0"][0][1:3] == ("double-bit", "NoExecute")


def test_taints_go_after_the_recovery_window_without_events(
    mock: MockBackend, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    health = monitor(mock, clock)
    health.handle(xid(mock, 1, 79))
    health.handle(HealthEvent(kind="ecc-double-bit", gpu_uuid=uuid(mock, 1)))
    clock.advance(WINDOW - timedelta(seconds=1))

    assert health.expire() is False
    assert [t.key for t in health.taints()["gpu-1"]] == [f"{DRIVER}/ecc", f"{DRIVER}/xid"]

    clock.advance(timedelta(seconds=1))
    assert health.expire() is True
    assert health.taints() == {}
    assert health.tainted_device_count() == 0
    assert "gpu-1: no health event for 0:05:00: taints " in caplog.text
    assert health.expire() is False


def test_a_lost_gpu_stays_tainted_however_quiet_it_is(mock: MockBackend, clock: Clock) -> None:
    health = monitor(mock, clock)

    # NVML's GpuIsLost on the event set names no GPU: every GPU is lost.
    assert health.handle(HealthEvent(kind="gpu-lost", gpu_uuid=None)) is True
    clock.advance(WINDOW * 10)

    assert health.expire() is False
    assert summary(health.taints()) == {
        name: [(f"{DRIVER}/gpu-lost", None, "NoExecute", "2026-11-27T10:00:00Z")]
        for name in ("gpu-0", "gpu-1")
    }


def test_device_health_follows_the_taints(mock: MockBackend, clock: Clock) -> None:
    health = monitor(mock, clock, effects={"xid": "NoSchedule", "ecc-single-bit": "None"})
    health.handle(xid(mock, 0, 79))
    health.handle(HealthEvent(kind="ecc-single-bit", gpu_uuid=uuid(mock, 1)))
    clock.advance(timedelta(seconds=5))

    snapshot = {d.device: d for d in health.snapshot()}

    assert set(snapshot) == set(device_names(mock))
    assert all(d.pool == "node-a" and d.last_updated == clock.now for d in snapshot.values())
    for name in ("gpu-0-mig-2g20gb-14-0", "gpu-0-mig-2g20gb-14-2", "gpu-0-mig-3g40gb-9-4"):
        assert snapshot[name].health is Health.UNHEALTHY
        assert snapshot[name].message == (f"{DRIVER}/xid=79:NoExecute since 2026-11-27T10:00:00Z")
    # An effect of None informs; the scheduler and the kubelet treat the device as fine.
    assert snapshot["gpu-1"].health is Health.HEALTHY
    assert snapshot["gpu-1"].message == (f"{DRIVER}/ecc=single-bit:None since 2026-11-27T10:00:00Z")


def test_an_invalid_policy_is_refused(mock: MockBackend, clock: Clock) -> None:
    with pytest.raises(InvalidInputError, match="unknown effects \\['Evict'\\]"):
        monitor(mock, clock, effects={"xid": "Evict"})


# --- The loop ----------------------------------------------------------------------------


def test_run_republishes_taints_and_health_on_every_change(mock: MockBackend, clock: Clock) -> None:
    stop = threading.Event()
    published: list[dict[str, list[tuple[object, ...]]]] = []
    broadcaster = HealthBroadcaster()
    subscription = broadcaster.subscribe()
    health = monitor(
        mock,
        clock,
        events=Scripted(stop, xid(mock, 1, 79)),
        on_taints=lambda taints: published.append(summary(taints)),
        broadcaster=broadcaster,
    )

    run_health_loop(health, stop, poll_s=0, refresh_s=3600, retry_s=0)

    assert published == [{"gpu-1": [(f"{DRIVER}/xid", "79", "NoExecute", "2026-11-27T10:00:00Z")]}]
    latest = {d.device: d.health for d in next(iter(subscription))}
    subscription.close()
    assert latest["gpu-1"] is Health.UNHEALTHY
    assert latest["gpu-0-mig-3g40gb-9-4"] is Health.HEALTHY


def test_run_retries_a_failed_publish_and_survives_a_failing_source(
    mock: MockBackend, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    attempts: list[int] = []

    def publish(taints: Mapping[str, Sequence[DeviceTaint]]) -> None:
        attempts.append(len(taints))
        if len(attempts) == 1:
            raise UnavailableError("create resourceslice: 503 Service Unavailable", status=503)

    health = monitor(
        mock,
        clock,
        events=Scripted(stop, xid(mock, 0, 79), DiscoveryError("nvmlEventSetWait: Unknown"), None),
        on_taints=publish,
    )

    run_health_loop(health, stop, poll_s=0, refresh_s=3600, retry_s=0)

    assert attempts == [1, 1]
    assert "publishing device taints failed: create resourceslice: 503" in caplog.text
    assert "reading GPU health events failed: nvmlEventSetWait: Unknown" in caplog.text


def test_run_expires_taints_while_no_event_comes(mock: MockBackend, clock: Clock) -> None:
    stop = threading.Event()
    published: list[int] = []
    health = monitor(
        mock,
        clock,
        events=Scripted(stop, None),
        on_taints=lambda taints: published.append(len(taints)),
    )
    health.handle(xid(mock, 1, 79))
    clock.advance(WINDOW)

    run_health_loop(health, stop, poll_s=0, refresh_s=3600, retry_s=0)

    assert published == [0]
    assert health.taints() == {}


# --- Faults from files -------------------------------------------------------------------


@pytest.fixture
def spool(tmp_path: Path, mock: MockBackend) -> Iterator[FaultSpool]:
    yield FaultSpool(mock, tmp_path / "faults", poll_s=0.01)


def test_fault_files_become_events_of_the_mock_backend(
    spool: FaultSpool, mock: MockBackend
) -> None:
    write_fault(spool.directory, "xid", gpu="gpu-1", xid=79)
    write_fault(spool.directory, "ecc-double-bit", gpu=uuid(mock, 0))
    write_fault(spool.directory, "gpu-lost")

    def read(timeout_s: float) -> HealthEvent | None:
        event = spool.wait_health_event(timeout_s)
        # The file's name says when it was written: the fault's time.
        assert event is not None and event.occurred_at is not None
        return replace(event, occurred_at=None)

    assert read(1.0) == HealthEvent("xid", uuid(mock, 1), 79)
    assert read(0) == HealthEvent("ecc-double-bit", uuid(mock, 0))
    assert read(0) == HealthEvent("gpu-lost", None)
    assert spool.wait_health_event(0) is None
    assert list(spool.directory.iterdir()) == []


def test_a_fault_file_that_is_not_a_fault_is_set_aside(
    spool: FaultSpool, caplog: pytest.LogCaptureFixture
) -> None:
    spool.ensure_directory()
    (spool.directory / "a.json").write_text("{not json")
    (spool.directory / "b.json").write_text(json.dumps({"kind": "thermal", "gpu": "gpu-0"}))
    (spool.directory / "c.json").write_text(json.dumps({"kind": "xid", "gpu": "gpu-7", "xid": 1}))
    (spool.directory / "d.json").write_text(json.dumps({"kind": "xid", "gpu": "gpu-0"}))

    assert spool.collect() == 0

    assert sorted(p.name for p in spool.directory.iterdir()) == [
        "a.json.rejected",
        "b.json.rejected",
        "c.json.rejected",
        "d.json.rejected",
    ]
    assert "unknown fault kind 'thermal': use xid, ecc-double-bit" in caplog.text
    assert "no GPU with UUID 'gpu-7'" in caplog.text
    assert "'xid' must be a number, not None" in caplog.text


def test_a_missing_fault_directory_is_no_fault(spool: FaultSpool) -> None:
    assert spool.collect() == 0
    assert spool.wait_health_event(0) is None
