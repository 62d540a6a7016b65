"""A GPU tainted or recovered, told to operators: Node Events and the health metrics."""

from __future__ import annotations

from typing import Any

from api.resource_v1 import DeviceTaint
from dra_driver.discovery.mock import MockBackend
from kubelet_plugin.health.notices import NodeHealthNotices
from kubelet_plugin.health.recovery import Lifted
from kubelet_plugin.metrics import PluginMetrics
from tests.fakes.cluster import FakeCluster

NODE = "node-a"
XID = DeviceTaint(key="gpu.dra-driver.io/xid", value="48", effect="NoExecute", time_added=None)


def value(metrics: PluginMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_taints_and_recoveries_are_node_events_and_metrics() -> None:
    cluster = FakeCluster()
    cluster.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    metrics = PluginMetrics()
    gpu = MockBackend(NODE, "2xH100-80GB").inventory.gpus[1]
    notices = NodeHealthNotices(metrics, cluster, NODE, "uid-node-a")

    notices.tainted(gpu, XID, 0.2)
    notices.recovered(gpu, Lifted((XID.key,), "quiet-window", "not-supported", 300.0))
    notices.stop()  # writes what waits

    events: list[dict[str, Any]] = cluster.objects("events")
    assert [(e["type"], e["reason"]) for e in events] == [
        ("Warning", "GpuTainted"),
        ("Normal", "GpuRecovered"),
    ]
    assert all(e["involvedObject"]["kind"] == "Node" for e in events)
    assert all(e["involvedObject"]["uid"] == "uid-node-a" for e in events)
    assert events[0]["message"].startswith(
        f"gpu-1 ({gpu.uuid}): device taint {XID.key}=48:NoExecute"
    )
    assert "(the driver reports no recovery action)" in events[1]["message"]
    name = "dra_driver_health_taint_delay_seconds_count"
    assert value(metrics, name, key=XID.key) == 1
    recovered = "dra_driver_health_recovery_seconds_sum"
    assert value(metrics, recovered, method="quiet-window", field="not-supported") == 300.0


def test_taints_by_key_and_effect_and_stream_clients_are_read_at_scrape() -> None:
    metrics = PluginMetrics()
    taints: dict[str, list[DeviceTaint]] = {}
    clients = [0]
    metrics.track_taints(lambda: taints)
    metrics.track_health_clients(lambda: clients[0])
    assert value(metrics, "dra_driver_device_taints", key=XID.key, effect="NoExecute") is None

    taints.update({"gpu-0": [XID], "gpu-1": [XID]})
    clients[0] = 2
    assert value(metrics, "dra_driver_device_taints", key=XID.key, effect="NoExecute") == 2
    assert value(metrics, "dra_driver_health_stream_clients") == 2
