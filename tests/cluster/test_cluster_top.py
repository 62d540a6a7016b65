"""``kubectl dra top`` through a real kubectl and the real API server's pod proxy.

A pod runs on the local cluster's node and holds a claim on a mock GPU (reserved for it as
the scheduler would, as in test_cluster_usage.py); the plugin's own usage collector
attributes a mock GPU process with the container's real host PID, through its real cgroup
and the real API server, and renders its metrics text. Stand-ins for the kubelet plugin
pods serve it: pods labelled as the chart labels the plugin's, running busybox's httpd on
the port they name ``metrics``, on the cluster's pod network. ``kubectl dra top`` finds
them by that label, reads each through ``/api/v1/namespaces/NS/pods/POD:PORT/proxy/metrics``
(the API server dials the pod's IP) and shows the claim's row; a stand-in serving a
plugin's metrics without the usage families shows a note, and one whose port nothing
serves shows the API server's error, neither failing the command.

The plugin itself is not run here (its per-claim usage needs processes on GPUs, which only
the in-process mock backend has); what the plugin serves is the collector's own text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cluster_access import ClusterUnderTest, core_api, pod_report, read_json, wait_for
from test_cluster_kubectl_plugin import kubectl, run_kubectl
from test_cluster_usage import _reserve, _running_pod, _task_pid, collector_text

from e2e.cluster import BUSYBOX_IMAGE

__all__ = ["kubectl"]  # the fixture, shared with test_cluster_kubectl_plugin

DRIVER = "gpu.dra-driver.io"
GIB = 1 << 30
PORT = 9400
#: What a plugin from before the usage metrics serves (one of its other families).
OLD_PLUGIN = "# HELP dra_driver_prepared_devices Devices prepared.\n" + (
    "# TYPE dra_driver_prepared_devices gauge\ndra_driver_prepared_devices 1.0\n"
)


def _usage_text(cluster: ClusterUnderTest, namespace: str) -> str:
    """The worker pod's claim on gpu-0 and a 12 GiB, 25 % process of its container on it,
    as the plugin's usage collector exposes them."""
    api = cluster.api_client
    pod = _running_pod(api, namespace, cluster)
    container_id = pod["status"]["containerStatuses"][0]["containerID"].partition("://")[2]
    claim = _reserve(api, namespace, cluster.node_name, pod)
    return collector_text(
        api, namespace, cluster.node_name, claim, _task_pid(cluster, container_id)
    )


def _stand_in(name: str, node: str, *, serves: str | None) -> dict[str, Any]:
    """A pod labelled as the chart labels the kubelet plugin's, its port named metrics;
    httpd serves the ConfigMap ``serves`` there (None: nothing listens on the port)."""
    container: dict[str, Any] = {
        "name": "plugin",
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "ports": [{"name": "metrics", "containerPort": PORT}],
    }
    spec: dict[str, Any] = {
        "nodeName": node,
        "terminationGracePeriodSeconds": 0,
        "containers": [container],
    }
    if serves is None:
        container["command"] = ["sleep", "3600"]
    else:
        container["command"] = ["httpd", "-f", "-p", str(PORT), "-h", "/www"]
        container["volumeMounts"] = [{"name": "www", "mountPath": "/www"}]
        container["readinessProbe"] = {"tcpSocket": {"port": PORT}, "periodSeconds": 1}
        spec["volumes"] = [{"name": "www", "configMap": {"name": serves}}]
    return {
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/name": "dra-driver-kubelet-plugin",
                "app.kubernetes.io/instance": "dra-driver",
            },
        },
        "spec": spec,
    }


def _ready(api: Any, namespace: str, name: str) -> bool:
    pod = read_json(core_api(api).read_namespaced_pod, name, namespace)
    status = pod.get("status") or {}
    if not (pod["spec"]["containers"][0].get("readinessProbe")):
        return status.get("phase") == "Running"
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


@pytest.fixture
def plugins(local_cluster: ClusterUnderTest, namespace: str) -> Iterator[dict[str, str]]:
    """Three stand-in plugin pods in ``namespace``, ready: the worker's usage, an old
    plugin's metrics, and a port nothing serves. Their names by role."""
    if local_cluster.local is None:
        pytest.skip("reads the node's /proc and containerd: the local tier only")
    api = local_cluster.api_client
    core = core_api(api)
    texts = {"usage": _usage_text(local_cluster, namespace), "old": OLD_PLUGIN}
    names = {"usage": "plugin-new", "old": "plugin-old", "dead": "plugin-dead"}
    for role, text in texts.items():
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": role}, "data": {"metrics": text}}
        )
    for role, name in names.items():
        pod = _stand_in(name, local_cluster.node_name, serves=role if role in texts else None)
        core.create_namespaced_pod(namespace, pod)
    for name in names.values():
        wait_for(
            f"stand-in plugin pod {name} ready",
            partial(_ready, api, namespace, name),
            cluster=local_cluster,
            timeout_s=90,
            context=partial(pod_report, api, namespace, name),
        )
    yield names


def _top(kubectl: Path, cluster: ClusterUnderTest, namespace: str, *args: str) -> Any:
    return run_kubectl(
        kubectl, "dra", "top", "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, *args
    )


def test_kubectl_dra_top_shows_the_claims_usage_read_through_the_pod_proxy(
    kubectl: Path, local_cluster: ClusterUnderTest, namespace: str, plugins: dict[str, str]
) -> None:
    node = local_cluster.node_name
    shown = _top(kubectl, local_cluster, namespace, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    # The product comes from the driver's slices for the node, if a module published any.
    assert all(isinstance(row.pop("product"), str | None) for row in doc["usage"])
    assert doc["usage"] == [
        {
            "cluster": None,
            "node": node,
            "namespace": namespace,
            "pod": "worker",
            "container": "trainer",
            "claim": "held",
            "device": "gpu-0",
            "memoryBytes": 12 * GIB,
            "utilisation": 0.25,
            "unattributed": None,
        }
    ]
    notes = {p["pod"]: p for p in doc["plugins"]}
    assert set(notes) == {f"{namespace}/{plugins['old']}", f"{namespace}/{plugins['dead']}"}
    assert "serves no per-claim usage metrics" in notes[f"{namespace}/{plugins['old']}"]["note"]
    dead = notes[f"{namespace}/{plugins['dead']}"]["error"]
    # The API server's own answer for a port nothing listens on.
    assert f"{plugins['dead']}:{PORT}/proxy/metrics" in dead and "refused" in dead, dead
    assert doc["totals"]["node"] == {
        node: {"memoryBytes": 12 * GIB, "unattributedMemoryBytes": 0, "claims": 1}
    }


def test_kubectl_dra_top_table_has_the_claims_row_and_the_nodes_total(
    kubectl: Path, local_cluster: ClusterUnderTest, namespace: str, plugins: dict[str, str]
) -> None:
    node = local_cluster.node_name
    shown = _top(kubectl, local_cluster, namespace, "--node", node)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == [
        "NODE",
        "NAMESPACE",
        "POD",
        "CONTAINER",
        "CLAIM",
        "DEVICE",
        "MEMORY",
        "UTIL",
    ]
    assert lines[1].split() == [
        node,
        namespace,
        "worker",
        "trainer",
        "held",
        "gpu-0",
        "12.0Gi",
        "25%",
    ]
    assert lines[-1] == f"nodes: {node} 12.0Gi by 1 claim(s)"
    # Another workload namespace: no row, the plugins' notes and the total all the same.
    other = _top(kubectl, local_cluster, namespace, "--namespace-filter", "elsewhere")
    assert other.returncode == 0, other.stderr
    assert "worker" not in other.stdout and f"nodes: {node} " in other.stdout
