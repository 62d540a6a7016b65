"""Per-claim GPU usage against real cgroups: a pod the real kubelet runs with containerd, its
process's cgroup read from the host's /proc, its claim's ``status.reservedFor`` and its
container's name from the real API server.

Only the GPU is fake: the container's real PID is started as a process on a mock GPU, and
the plugin's checkpoint entry for the claim is written by hand (no kubelet plugin runs in
this module, so the pod holds the claim by reservation only, which the resourceclaim
controller keeps while the pod runs).
"""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import pytest
from cluster_access import ClusterUnderTest, core_api, pod_report, read_json, resource_api, wait_for
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent_kit.kube import KubernetesClient
from api.checkpoint import ClaimEntry, DeviceRecord
from dra_driver.discovery.mock import MockBackend
from e2e.cluster import BUSYBOX_IMAGE
from kubelet_plugin.usage import CgroupOwner, ProcCgroups, usage_collector

DRIVER = "gpu.dra-driver.io"
GIB = 1 << 30


def _running_pod(api: Any, namespace: str, cluster: ClusterUnderTest) -> dict[str, Any]:
    core = core_api(api)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "worker"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "trainer",
                        "image": BUSYBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"],
                    }
                ],
            },
        },
    )

    def running() -> dict[str, Any] | None:
        pod = read_json(core.read_namespaced_pod, "worker", namespace)
        statuses = pod.get("status", {}).get("containerStatuses") or []
        return pod if statuses and "running" in statuses[0].get("state", {}) else None

    found: dict[str, Any] = wait_for(
        "pod worker running",
        running,
        cluster=cluster,
        timeout_s=90,
        context=lambda: pod_report(api, namespace, "worker"),
    )
    return found


def _task_pid(cluster: ClusterUnderTest, container_id: str) -> int:
    """The container's process as containerd knows it (``ctr task ls``), a host PID."""
    assert cluster.local is not None
    listed = subprocess.run(
        [
            str(cluster.local.bin_dir / "ctr"),
            "--address",
            str(cluster.local.node_paths.containerd_socket),
            "-n",
            "k8s.io",
            "task",
            "ls",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    for line in listed.splitlines()[1:]:
        task, pid, *_ = line.split()
        if task == container_id:
            return int(pid)
    raise AssertionError(f"containerd runs no task {container_id}:\n{listed}")


def _reserve(api: Any, namespace: str, node: str, pod: dict[str, Any]) -> dict[str, Any]:
    """A claim allocated gpu-0 of the node and reserved for the pod, as the scheduler would."""
    resources = resource_api(api)
    resources.create_namespaced_resource_claim(
        namespace,
        {
            "metadata": {"name": "held"},
            "spec": {
                "devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}
            },
        },
    )
    claim = read_json(resources.read_namespaced_resource_claim, "held", namespace)
    claim["status"] = {
        "allocation": {
            "devices": {
                "results": [{"request": "gpu", "driver": DRIVER, "pool": node, "device": "gpu-0"}]
            }
        },
        "reservedFor": [
            {"resource": "pods", "name": "worker", "uid": pod["metadata"]["uid"]},
        ],
    }
    resources.replace_namespaced_resource_claim_status("held", namespace, claim)
    return claim


def collector_text(api: Any, namespace: str, node: str, claim: dict[str, Any], pid: int) -> str:
    """The metrics text of the plugin's usage collector with ``claim`` prepared (as
    ``held``) on mock gpu-0 of ``node``, and a 12 GiB, 25 % GPU process ``pid`` on it."""
    backend = MockBackend(node, "1xH100-80GB")
    gpu = backend.inventory.gpus[0]
    backend.gpu_processes.start(gpu.uuid, pid, memory_bytes=12 * GIB, sm_utilisation=0.25)
    prepared = {
        claim["metadata"]["uid"]: ClaimEntry(
            namespace=namespace,
            name="held",
            state="PrepareCompleted",
            boot_id=str(uuid.uuid4()),
            cdi_spec_path="/var/run/cdi/unused.json",
            devices=(
                DeviceRecord(
                    requests=("gpu",),
                    pool=node,
                    device="gpu-0",
                    cdi_device_ids=(f"{DRIVER}/gpu=held-gpu-0",),
                    uuid=gpu.uuid,
                    device_node=gpu.device_node,
                ),
            ),
        )
    }
    registry = CollectorRegistry()
    registry.register(
        usage_collector(backend, lambda: prepared, KubernetesClient(api), backend.inventory)
    )
    return generate_latest(registry).decode()


def test_a_running_containers_gpu_process_counts_for_its_claim(
    local_cluster: ClusterUnderTest, namespace: str
) -> None:
    if local_cluster.local is None:
        pytest.skip("reads the node's /proc and containerd: the local tier only")
    api = local_cluster.api_client
    pod = _running_pod(api, namespace, local_cluster)
    container_id = pod["status"]["containerStatuses"][0]["containerID"].partition("://")[2]
    pid = _task_pid(local_cluster, container_id)

    # The real kubelet's cgroup (cgroupfs driver, under its cgroup root) and containerd's.
    assert ProcCgroups().owner(pid) == CgroupOwner(pod["metadata"]["uid"], container_id)

    claim = _reserve(api, namespace, local_cluster.node_name, pod)
    text = collector_text(api, namespace, local_cluster.node_name, claim, pid)
    series = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    labels = tuple(
        sorted(
            {
                "namespace": namespace,
                "pod": "worker",
                "container": "trainer",
                "claim": "held",
                "device": "gpu-0",
            }.items()
        )
    )
    assert series == {
        ("dra_driver_gpu_memory_used_bytes", labels): 12 * GIB,
        ("dra_driver_gpu_utilisation", labels): 0.25,
    }, text
