"""The node: registered by a real kubelet, Ready, and running pods from the local images."""

from __future__ import annotations

from typing import Any

import pytest
from cluster_access import (
    ClusterUnderTest,
    core_api,
    pod_phase,
    pod_report,
    read_json,
    wait_for,
)

from e2e.cluster import BUSYBOX_IMAGE


def test_node_is_ready_and_reports_the_kubelet(
    api_client: Any, local_cluster: ClusterUnderTest
) -> None:
    node = read_json(core_api(api_client).read_node, local_cluster.node_name)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert node["status"]["addresses"]
    if local_cluster.local is not None:
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.7.")
        assert {"type": "InternalIP", "address": local_cluster.local.node_ip} in node["status"][
            "addresses"
        ]


def test_busybox_pod_runs_and_its_log_is_read(
    api_client: Any, local_cluster: ClusterUnderTest, namespace: str
) -> None:
    if local_cluster.local is None:
        pytest.skip("the busybox image is built into the local node only")
    core = core_api(api_client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "hello",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", 'echo "hello from $(hostname) as $(id -u)"'],
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        "pod hello to succeed",
        lambda: pod_phase(api_client, namespace, "hello") in ("Succeeded", "Failed"),
        cluster=local_cluster,
        timeout_s=120,
        context=lambda: pod_report(api_client, namespace, "hello"),
    )
    assert pod_phase(api_client, namespace, "hello") == "Succeeded", pod_report(
        api_client, namespace, "hello"
    )
    stored = read_json(core.read_namespaced_pod, "hello", namespace)
    assert stored["spec"]["nodeName"] == local_cluster.node_name
    assert core.read_namespaced_pod_log("hello", namespace) == "hello from hello as 0\n"
