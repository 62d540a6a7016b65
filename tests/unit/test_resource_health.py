"""Device health snapshots, their wire form and the in-process broadcaster."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest

from kubelet_plugin.health.service import (
    MAX_MESSAGE_LENGTH,
    DeviceHealth,
    Health,
    HealthBroadcaster,
    to_wire,
    truncate_message,
)
from kubelet_plugin.proto_gen.dra_health.v1alpha1 import api_pb2 as health_pb2

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def _device(
    name: str,
    health: Health = Health.HEALTHY,
    *,
    at: datetime = T0,
    message: str = "",
    timeout_seconds: int = 0,
) -> DeviceHealth:
    return DeviceHealth("node-a", name, health, at, message, timeout_seconds)


def test_last_updated_must_be_timezone_aware() -> None:
    with pytest.raises(
        ValueError, match=r"device node-a/gpu-0: last_updated must be timezone-aware"
    ):
        DeviceHealth("node-a", "gpu-0", Health.HEALTHY, datetime(2026, 11, 27, 10, 0))


def test_a_negative_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout_seconds must not be negative"):
        _device("gpu-0", timeout_seconds=-1)


def test_wire_form_of_a_snapshot() -> None:
    cet = timezone(timedelta(hours=1))
    response = to_wire(
        [
            _device("gpu-0"),
            _device("gpu-1", Health.UNHEALTHY, message="XID 79", timeout_seconds=60),
            _device("gpu-2", Health.UNKNOWN, at=T0.astimezone(cet)),
        ]
    )
    wire = [
        (
            d.device.pool_name,
            d.device.device_name,
            d.health,
            d.last_updated_time,
            d.health_check_timeout_seconds,
            d.message,
        )
        for d in response.devices
    ]
    seconds = int(T0.timestamp())
    assert wire == [
        ("node-a", "gpu-0", health_pb2.HEALTHY, seconds, 0, ""),
        ("node-a", "gpu-1", health_pb2.UNHEALTHY, seconds, 60, "XID 79"),
        ("node-a", "gpu-2", health_pb2.UNKNOWN, seconds, 0, ""),
    ]


def test_long_messages_are_truncated_as_the_kubelet_would() -> None:
    exact, long = "x" * 1024, "y" * 1025
    response = to_wire([_device("gpu-0", message=exact), _device("gpu-1", message=long)])
    assert response.devices[0].message == exact
    assert response.devices[1].message == "y" * 1021 + "..."


def test_a_subscriber_gets_the_current_snapshot_first() -> None:
    broadcaster = HealthBroadcaster()
    broadcaster.publish([_device("gpu-0")])
    subscription = iter(broadcaster.subscribe())
    assert [d.device for d in next(subscription)] == ["gpu-0"]


def test_a_slow_subscriber_gets_only_the_latest_snapshot() -> None:
    broadcaster = HealthBroadcaster()
    subscription = broadcaster.subscribe()
    broadcaster.publish([_device("gpu-0", Health.HEALTHY)])
    broadcaster.publish([_device("gpu-0", Health.UNHEALTHY)])
    (snapshot,) = [next(iter(subscription))]
    assert [d.health for d in snapshot] == [Health.UNHEALTHY]


def test_every_subscriber_gets_every_publication() -> None:
    broadcaster = HealthBroadcaster()
    first, second = broadcaster.subscribe(), broadcaster.subscribe()
    broadcaster.publish([_device("gpu-0")])
    assert next(iter(first)) == next(iter(second)) == (_device("gpu-0"),)


def test_close_from_another_thread_ends_a_waiting_iteration() -> None:
    broadcaster = HealthBroadcaster()
    subscription = broadcaster.subscribe()
    received: list[Sequence[DeviceHealth]] = []
    waiting = threading.Thread(target=lambda: received.extend(subscription))
    waiting.start()

    subscription.close()
    waiting.join(timeout=10)

    assert not waiting.is_alive()
    assert received == []
    assert broadcaster.subscriber_count == 0
    subscription.close()  # harmless twice


def test_a_closed_subscription_gets_no_more_snapshots() -> None:
    broadcaster = HealthBroadcaster()
    subscription = broadcaster.subscribe()
    assert broadcaster.subscriber_count == 1
    subscription.close()
    broadcaster.publish([_device("gpu-0")])
    assert list(subscription) == []


def test_a_message_is_cut_to_1024_bytes_of_utf8_on_a_character_boundary() -> None:
    three_bytes = "€" * 400  # 1,200 bytes: the kubelet's byte cut would split a character
    cut = truncate_message(three_bytes)
    assert cut == "€" * 340 + "..."  # 1,020 bytes of whole characters, then the marker
    assert len(cut.encode()) <= MAX_MESSAGE_LENGTH
    assert truncate_message("€" * 341) == "€" * 341  # 1,023 bytes: kept whole
