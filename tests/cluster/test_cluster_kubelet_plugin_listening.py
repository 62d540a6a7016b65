"""Where the chart's kubelet plugin listens: its metrics and its gRPC liveness service on the
pod's IP (the downward API's status.podIP), not on loopback or every interface, and the
kubelet's gRPC liveness probe reaches it there.

The plugin is the chart's DaemonSet as test_cluster_kubelet_plugin runs it (its values: mock
GPUs, on the host's network, since this machine's API server listens on loopback only), so
the pod's IP is the node's and the ports are on this machine: the test dials them itself.
Without the session's driver image there is no DaemonSet to run, and the module is skipped.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from cluster_access import ClusterUnderTest, core_api, read_json
from test_cluster_kubelet_plugin import NAMESPACE, PluginPod, _plugin_pod

from kubelet_plugin.proto_gen.grpc_health.v1 import health_pb2, health_pb2_grpc

#: The DaemonSet's liveness probe: every 10 s, restart after 3 failures.
PROBE_PERIOD_S = 10


@pytest.fixture(scope="module")
def plugin_pod(local_cluster: ClusterUnderTest) -> Iterator[dict[str, Any]]:
    """The running plugin pod, as the API server returns it."""
    if local_cluster.local is None or not local_cluster.driver_image:
        pytest.skip("runs the chart's DaemonSet from the session's driver image")
    plugins: Iterator[PluginPod] = _plugin_pod(local_cluster)
    plugin = next(plugins)
    assert plugin.pod is not None
    core = core_api(local_cluster.api_client)
    yield read_json(core.read_namespaced_pod, plugin.pod["metadata"]["name"], NAMESPACE)
    # The rest of the generator stops the pod and removes the chart's objects.
    for _ in plugins:
        pass


def _ports(pod: dict[str, Any]) -> dict[str, int]:
    (container,) = pod["spec"]["containers"]
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_metrics_and_liveness_listen_on_the_pod_ip_and_not_on_loopback(
    plugin_pod: dict[str, Any],
) -> None:
    pod_ip = plugin_pod["status"]["podIP"]
    assert not ipaddress.ip_address(pod_ip).is_loopback, pod_ip
    ports = _ports(plugin_pod)
    url = f"http://{pod_ip}:{ports['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert b"dra_driver_published_devices" in response.read()
    with grpc.insecure_channel(f"{pod_ip}:{ports['liveness']}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    # Not every interface: the node's loopback has neither.
    for name in ("metrics", "liveness"):
        assert _refused("127.0.0.1", ports[name]), f"the {name} port answers on 127.0.0.1"


def test_the_kubelets_liveness_probe_reaches_the_plugin(
    local_cluster: ClusterUnderTest, plugin_pod: dict[str, Any]
) -> None:
    core = core_api(local_cluster.api_client)
    name = plugin_pod["metadata"]["name"]
    (container,) = plugin_pod["spec"]["containers"]
    probe = container["livenessProbe"]
    assert probe["grpc"]["port"] == _ports(plugin_pod)["liveness"]
    assert probe["periodSeconds"] == PROBE_PERIOD_S
    (status,) = plugin_pod["status"]["containerStatuses"]
    started = datetime.datetime.fromisoformat(status["state"]["running"]["startedAt"])
    # Two probe periods after the start, with one second to spare.
    running_s = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    time.sleep(max(0.0, 2 * PROBE_PERIOD_S + 1 - running_s))
    events = read_json(
        core.list_namespaced_event, NAMESPACE, field_selector=f"involvedObject.name={name}"
    )["items"]
    failures = [e["message"] for e in events if e["reason"] == "Unhealthy"]
    assert not failures, failures
    pod = read_json(core.read_namespaced_pod, name, NAMESPACE)
    (status,) = pod["status"]["containerStatuses"]
    assert status["restartCount"] == 0 and status["ready"], status
