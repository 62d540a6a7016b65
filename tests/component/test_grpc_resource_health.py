"""NodeWatchResources (DRAResourceHealth v1 and v1alpha1) as the kubelet's health manager
opens it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import pytest
from fake_node_driver import POOL
from kubelet_standin import HEALTH_SERVICE, HEALTH_SERVICE_V1, KubeletStandin
from plugin_factory import PluginFactory

from kubelet_plugin.health.service import (
    MAX_MESSAGE_LENGTH,
    DeviceHealth,
    Health,
    HealthBroadcaster,
)
from kubelet_plugin.proto_gen.dra_health.v1 import api_pb2 as health_pb2

pytestmark = pytest.mark.component

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def _until(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def _summary(response: health_pb2.NodeWatchResourcesResponse) -> list[tuple[str, str, str, int]]:
    return [
        (
            d.device.pool_name,
            d.device.device_name,
            health_pb2.HealthStatus.Name(d.health),
            d.last_updated_time,
        )
        for d in response.devices
    ]


def test_the_kubelet_receives_complete_snapshots(make_plugin: PluginFactory) -> None:
    source = HealthBroadcaster()
    source.publish(
        [
            DeviceHealth(POOL, "gpu-0", Health.HEALTHY, T0),
            DeviceHealth(POOL, "gpu-1", Health.HEALTHY, T0),
        ]
    )
    plugin = make_plugin(health_source=source)

    with KubeletStandin().register(plugin.registration_socket) as kubelet:
        stream = kubelet.watch_health()
        first = stream.next()
        assert _summary(first) == [
            (POOL, "gpu-0", "HEALTHY", int(T0.timestamp())),
            (POOL, "gpu-1", "HEALTHY", int(T0.timestamp())),
        ]

        later = T0.replace(minute=5)
        source.publish(
            [
                DeviceHealth(POOL, "gpu-0", Health.HEALTHY, later),
                DeviceHealth(POOL, "gpu-1", Health.UNHEALTHY, later, message="XID 79"),
            ]
        )
        second = stream.next()
        assert _summary(second) == [
            (POOL, "gpu-0", "HEALTHY", int(later.timestamp())),
            (POOL, "gpu-1", "UNHEALTHY", int(later.timestamp())),
        ]
        assert second.devices[1].message == "XID 79"
        stream.cancel()


def test_a_cancelled_stream_releases_its_subscription(make_plugin: PluginFactory) -> None:
    source = HealthBroadcaster()
    plugin = make_plugin(health_source=source)

    with KubeletStandin().register(plugin.registration_socket) as kubelet:
        stream = kubelet.watch_health()
        _until(lambda: source.subscriber_count == 1, "the stream subscribed")
        # Nothing published yet: the server is blocked waiting for a snapshot.
        stream.cancel()
        _until(lambda: source.subscriber_count == 0, "the subscription was closed")

        # The kubelet reconnects and gets the current state at once.
        source.publish([DeviceHealth(POOL, "gpu-0", Health.UNKNOWN, T0)])
        again = kubelet.watch_health()
        assert _summary(again.next()) == [(POOL, "gpu-0", "UNKNOWN", int(T0.timestamp()))]
        again.cancel()


def test_stopping_the_plugin_ends_open_streams(make_plugin: PluginFactory) -> None:
    source = HealthBroadcaster()
    source.publish([DeviceHealth(POOL, "gpu-0", Health.HEALTHY, T0)])
    plugin = make_plugin(health_source=source)

    with KubeletStandin().register(plugin.registration_socket) as kubelet:
        stream = kubelet.watch_health()
        stream.next()
        plugin.stop()
        assert list(stream) == []
        assert stream.code() == grpc.StatusCode.OK
    assert source.subscriber_count == 0


def test_without_a_health_source_the_service_is_not_served(make_plugin: PluginFactory) -> None:
    plugin = make_plugin()
    with KubeletStandin().register(plugin.registration_socket) as kubelet:
        assert HEALTH_SERVICE not in kubelet.supported_versions
        assert HEALTH_SERVICE_V1 not in kubelet.supported_versions
        assert kubelet.health_service == ""  # the kubelet opens no stream
        for service in (HEALTH_SERVICE_V1, HEALTH_SERVICE):
            stream = kubelet.watch_health(service)
            with pytest.raises(grpc.RpcError) as raised:
                stream.next()
            # Unimplemented: the kubelet stops watching instead of retrying.
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _wire(response: health_pb2.NodeWatchResourcesResponse) -> list[tuple[object, ...]]:
    return [
        (*row, d.health_check_timeout_seconds, d.message)
        for row, d in zip(_summary(response), response.devices, strict=True)
    ]


def test_both_versions_stream_the_same_health(make_plugin: PluginFactory) -> None:
    source = HealthBroadcaster()
    source.publish([DeviceHealth(POOL, "gpu-0", Health.HEALTHY, T0, timeout_seconds=60)])
    plugin = make_plugin(health_source=source)

    with KubeletStandin().register(plugin.registration_socket) as kubelet:
        assert kubelet.health_service == HEALTH_SERVICE_V1
        current = kubelet.watch_health()
        previous = kubelet.watch_health(HEALTH_SERVICE)
        assert _wire(current.next()) == _wire(previous.next())

        later = T0.replace(minute=5)
        source.publish(
            [DeviceHealth(POOL, "gpu-0", Health.UNHEALTHY, later, "XID 79", timeout_seconds=60)]
        )
        changed = _wire(current.next())
        assert changed == _wire(previous.next())
        assert changed == [(POOL, "gpu-0", "UNHEALTHY", int(later.timestamp()), 60, "XID 79")]
        current.cancel()
        previous.cancel()


@pytest.mark.parametrize("service", [HEALTH_SERVICE_V1, HEALTH_SERVICE])
def test_an_unchanged_health_is_sent_again_within_its_timeout(
    make_plugin: PluginFactory, service: str
) -> None:
    timeout = 2  # seconds, announced in health_check_timeout_seconds
    source = HealthBroadcaster()
    source.publish([DeviceHealth(POOL, "gpu-0", Health.UNHEALTHY, T0, timeout_seconds=timeout)])
    plugin = make_plugin(health_source=source)

    with KubeletStandin().register(plugin.registration_socket) as kubelet:
        stream = kubelet.watch_health(service)
        stream.next()
        received = time.monotonic()
        for _ in range(4):  # nothing changes at the source meanwhile
            response = stream.next()
            now = time.monotonic()
            # The kubelet's health cache: an entry older than its timeout reads Unknown.
            assert now - received <= timeout, "the kubelet would have read gpu-0 as Unknown"
            received = now
            (device,) = response.devices
            assert (device.health, device.health_check_timeout_seconds) == (
                health_pb2.UNHEALTHY,
                timeout,
            )
            assert device.last_updated_time > int(T0.timestamp())  # a fresh statement
        stream.cancel()


@pytest.mark.parametrize("service", [HEALTH_SERVICE_V1, HEALTH_SERVICE])
def test_a_long_message_is_cut_within_the_limit_on_a_character_boundary(
    make_plugin: PluginFactory, service: str
) -> None:
    long = "XID 79 on GPU-é: " + "é" * 1200  # two bytes each in UTF-8
    short = "ü" * 512  # exactly 1,024 bytes: sent as it is
    source = HealthBroadcaster()
    source.publish(
        [
            DeviceHealth(POOL, "gpu-0", Health.UNHEALTHY, T0, long),
            DeviceHealth(POOL, "gpu-1", Health.UNHEALTHY, T0, short),
        ]
    )
    plugin = make_plugin(health_source=source)

    with KubeletStandin().register(plugin.registration_socket) as kubelet:
        stream = kubelet.watch_health(service)
        cut, kept = (d.message for d in stream.next().devices)
        stream.cancel()
    assert len(cut.encode()) <= MAX_MESSAGE_LENGTH
    assert cut.endswith("...")
    assert long.startswith(cut.removesuffix("..."))
    assert len(cut.encode()) > MAX_MESSAGE_LENGTH - 5  # cut at the limit, not far before
    assert kept == short
