"""What the health monitor's unit tests share: a fake clock, a monitor over the mock
backend (its events and its recovery probe), and the taints read back in short form."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from api.taint_state import TaintState
from dra_driver.discovery.mock import MockBackend
from kubelet_plugin.health.monitor import HealthMonitor, HealthNotices

DRIVER = "gpu.dra-driver.io"
T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)


class Clock:
    """A clock the test moves (``now``), from ``T0``."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def mock_monitor(
    mock: MockBackend,
    clock: Clock,
    notices: HealthNotices,
    state: TaintState | None = None,
    *,
    ignored_xids: Iterable[int] = (),
) -> HealthMonitor:
    """A monitor of ``mock``'s GPUs: XIDs NoSchedule, double-bit ECC NoExecute, a
    ``WINDOW`` of quiet before recovery, NVML's recovery action from the mock."""
    return HealthMonitor(
        driver_name=DRIVER,
        inventory=mock.inventory,
        device_names=[g.device_name for g in mock.inventory],
        events=mock,
        effects={"xid": "NoSchedule", "ecc-double-bit": "NoExecute"},
        ignored_xids=ignored_xids,
        recovery=WINDOW,
        clock=clock,
        probe=mock.recovery,
        notices=notices,
        state=state,
    )


def uuid(mock: MockBackend, index: int) -> str:
    return mock.inventory.gpus[index].uuid


def effects(health: HealthMonitor) -> dict[str, list[tuple[str, str | None, str]]]:
    """GPU device name to its taints as (key, value, effect)."""
    return {n: [(t.key, t.value, t.effect) for t in ts] for n, ts in health.taints().items()}
