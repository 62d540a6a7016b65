"""NodeWatchResources (v1alpha1.DRAResourceHealth) as the kubelet's health manager opens it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import pytest
from fake_node_driver import POOL
from kubelet_standin import KubeletStandin
from plugin_factory import PluginFactory

from kubelet_plugin.health.service import DeviceHealth, Health, HealthBroadcaster
from kubelet_plugin.proto_gen.dra_health.v1alpha1 import api_pb2 as health_pb2

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
        assert "v1alpha1.DRAResourceHealth" not in kubelet.supported_versions
        stream = kubelet.watch_health()
        with pytest.raises(grpc.RpcError) as raised:
            stream.next()
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
