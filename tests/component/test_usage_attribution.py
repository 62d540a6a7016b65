"""Per-claim GPU usage end to end without a cluster: claims prepared by GpuDriver on mock
GPUs (a whole GPU held by a claim two pods share, a dynamic MIG device, two consumable
shares of one GPU), processes started on the mock devices, their PIDs in a /proc tree laid
out as a kubelet and containerd lay out cgroups, the claims and pods in the fake API
server; the metrics read through the plugin's registry as a scrape reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dra_driver.discovery.mock import MockBackend
from kubelet_plugin.cdi_writer import CdiWriter, scan_host_files
from kubelet_plugin.checkpoint_store import CheckpointStore
from kubelet_plugin.devnodes import DevNodeMigManager, create_device_nodes
from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.node_driver import ClaimRef
from kubelet_plugin.usage import usage_collector
from tests.component.driver_fixtures import (
    BOOT_ID,
    DRIVER,
    NODE,
    cdi_root,
    checkpoint_path,
    claim,
    claim_uid,
)
from tests.fakes.claim_source import FakeClaimSource
from tests.fakes.cluster import FakeCluster

NS = "team-a"
MIG = "gpu-1-mig-1g10gb-19-0"
GIB = 1 << 30


def pod_uid(n: int) -> str:
    return f"7c0d{n:04x}-1a2b-4c3d-8e9f-0a1b2c3d4e5f"


def container_id(n: int) -> str:
    return f"{n:02x}" * 32


def write_cgroup(proc: Path, pid: int, text: str) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(text)


def cgroupfs_v1(pod: int, container: int) -> str:
    """A process of a Burstable pod's container: the kubelet's cgroupfs driver, cgroup v1
    (as the local cluster's kubelet runs), containerd naming the container's cgroup by ID."""
    path = f"/kubepods/burstable/pod{pod_uid(pod)}/{container_id(container)}"
    return (
        "".join(
            f"{n}:{controller}:{path}\n"
            for n, controller in ((12, "pids"), (7, "memory"), (4, "devices"), (1, "name=systemd"))
        )
        + "0::/\n"
    )


def systemd_v2(pod: int, container: int) -> str:
    """The same under the systemd driver and cgroup v2 (most current distributions)."""
    slice_ = f"kubepods-besteffort-pod{pod_uid(pod).replace('-', '_')}.slice"
    return (
        f"0::/kubepods.slice/kubepods-besteffort.slice/{slice_}/"
        f"cri-containerd-{container_id(container)}.scope\n"
    )


def reserved(*pods: tuple[str, int]) -> list[dict[str, str]]:
    return [{"resource": "pods", "name": name, "uid": pod_uid(n)} for name, n in pods]


def api_claim(n: int, *pods: tuple[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": f"claim-{n}", "namespace": NS, "uid": claim_uid(n)},
        "spec": {"devices": {"requests": []}},
        "status": {"reservedFor": reserved(*pods)},
    }


def api_pod(name: str, n: int, containers: dict[str, int]) -> dict[str, Any]:
    statuses = [
        {"name": c, "containerID": f"containerd://{container_id(cid)}"}
        for c, cid in containers.items()
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": pod_uid(n)},
        "status": {"containerStatuses": statuses},
    }


def share(n: int, share_id: str) -> dict[str, Any]:
    document = claim(n, ["gpu-2"], namespace=NS)
    (result,) = document["status"]["allocation"]["devices"]["results"]
    result.update(shareID=share_id, consumedCapacity={"memory": "10Gi", "compute": "50"})
    return document


class Node:
    """The node: mock GPUs, the driver with its claims prepared, a /proc, the API server."""

    def __init__(self, root: Path) -> None:
        self.backend = MockBackend(NODE, "2xH100-80GB,L4")
        create_device_nodes(root / "host", self.backend.inventory)
        claims = [
            claim(1, ["gpu-0"], namespace=NS),
            claim(2, [MIG], namespace=NS),
            share(3, "0b4d2f5e-aaaa-4c1e-9d54-000000000003"),
            share(4, "0b4d2f5e-aaaa-4c1e-9d54-000000000004"),
        ]
        self.driver = GpuDriver(
            driver_name=DRIVER,
            inventory=self.backend.inventory,
            claim_source=FakeClaimSource(claims),
            checkpoints=CheckpointStore(checkpoint_path(root)),
            cdi=CdiWriter(cdi_root(root), DRIVER),
            host=scan_host_files(root / "host", root / "driver", None),
            boot_id=BOOT_ID,
            mig_manager=DevNodeMigManager(self.backend.mig_manager, root / "host"),
        )
        self.driver.start()
        self.refs = [ClaimRef(NS, f"claim-{n}", claim_uid(n)) for n in (1, 2, 3, 4)]
        answers = self.driver.prepare(self.refs)
        assert all(a.error is None for a in answers.values()), answers
        self.api = FakeCluster()
        # claim-1 (a whole GPU) is shared by two pods; each other claim has its pod.
        for document in (
            api_claim(1, ("train-0", 1), ("train-1", 2)),
            api_claim(2, ("infer", 3)),
            api_claim(3, ("half-a", 4)),
            api_claim(4, ("half-b", 5)),
            api_pod("train-0", 1, {"trainer": 1, "sidecar": 9}),
            api_pod("train-1", 2, {"trainer": 2}),
            api_pod("infer", 3, {"server": 3}),
            api_pod("half-a", 4, {"main": 4}),
            api_pod("half-b", 5, {"main": 5}),
        ):
            self.api.put("pods" if document["kind"] == "Pod" else "resourceclaims", document)
        self.proc = root / "proc"
        self.proc.mkdir()
        self.registry = CollectorRegistry()
        self.registry.register(
            usage_collector(
                self.backend,
                self.driver.prepared,
                self.api,
                self.backend.inventory,
                proc_root=self.proc,
            )
        )

    def uuid(self, device: str) -> str:
        """The UUID the checkpoint records for a prepared device."""
        for entry in self.driver.prepared().values():
            for record in entry.devices:
                if record.device == device and record.uuid:
                    return record.uuid
        raise AssertionError(f"{device} is not prepared")

    def run(self, pid: int, device: str, cgroup: str, memory: int | None, sm: float = 0.0) -> None:
        write_cgroup(self.proc, pid, cgroup)
        self.backend.gpu_processes.start(
            self.uuid(device), pid, memory_bytes=memory, sm_utilisation=sm
        )

    def scrape(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Metric name to (sorted labels) to value, from the text the endpoint serves."""
        found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        text = generate_latest(self.registry).decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                    sample.value
                )
        return found


def labels(pod: str, container: str, claim_name: str, device: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted(
            {
                "namespace": NS,
                "pod": pod,
                "container": container,
                "claim": claim_name,
                "device": device,
            }.items()
        )
    )


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_each_process_is_attributed_to_its_pod_container_and_claim(node: Node) -> None:
    node.run(101, "gpu-0", cgroupfs_v1(1, 1), 30 * GIB, 0.6)  # train-0/trainer
    node.run(102, "gpu-0", cgroupfs_v1(1, 1), 2 * GIB, 0.1)  # a second process of it
    node.run(103, "gpu-0", cgroupfs_v1(1, 9), 1 * GIB, 0.05)  # train-0/sidecar
    node.run(201, "gpu-0", systemd_v2(2, 2), 20 * GIB, 0.2)  # train-1/trainer
    node.run(301, MIG, systemd_v2(3, 3), 5 * GIB)  # infer/server on the MIG device
    node.run(401, "gpu-2", cgroupfs_v1(4, 4), 8 * GIB, 0.4)  # half-a/main
    node.run(501, "gpu-2", systemd_v2(5, 5), 9 * GIB, 0.3)  # half-b/main

    metrics = node.scrape()

    assert metrics["dra_driver_gpu_memory_used_bytes"] == {
        labels("train-0", "trainer", "claim-1", "gpu-0"): 32 * GIB,
        labels("train-0", "sidecar", "claim-1", "gpu-0"): 1 * GIB,
        labels("train-1", "trainer", "claim-1", "gpu-0"): 20 * GIB,
        labels("infer", "server", "claim-2", MIG): 5 * GIB,
        labels("half-a", "main", "claim-3", "gpu-2"): 8 * GIB,
        labels("half-b", "main", "claim-4", "gpu-2"): 9 * GIB,
    }
    # NVML samples no per-process utilisation on MIG devices: no series for it.
    assert metrics["dra_driver_gpu_utilisation"] == pytest.approx(
        {
            labels("train-0", "trainer", "claim-1", "gpu-0"): 0.7,
            labels("train-0", "sidecar", "claim-1", "gpu-0"): 0.05,
            labels("train-1", "trainer", "claim-1", "gpu-0"): 0.2,
            labels("half-a", "main", "claim-3", "gpu-2"): 0.4,
            labels("half-b", "main", "claim-4", "gpu-2"): 0.3,
        }
    )
    assert "dra_driver_gpu_unattributed_memory_used_bytes" not in metrics


def test_series_go_with_their_claim_and_their_processes(node: Node) -> None:
    node.run(401, "gpu-2", cgroupfs_v1(4, 4), 8 * GIB, 0.4)
    node.run(501, "gpu-2", cgroupfs_v1(5, 5), 9 * GIB, 0.3)
    node.run(301, MIG, cgroupfs_v1(3, 3), 5 * GIB)
    assert len(node.scrape()["dra_driver_gpu_memory_used_bytes"]) == 3

    # half-b's claim is unprepared (its pod is gone); its process lingers a moment on the
    # GPU: it no longer counts for the claim.
    assert node.driver.unprepare([node.refs[3]]) == {claim_uid(4): None}
    node.backend.gpu_processes.stop(301)
    metrics = node.scrape()
    assert metrics["dra_driver_gpu_memory_used_bytes"] == {
        labels("half-a", "main", "claim-3", "gpu-2"): 8 * GIB
    }
    assert metrics["dra_driver_gpu_unattributed_memory_used_bytes"] == {
        (("device", "gpu-2"), ("reason", "no-claim")): 9 * GIB
    }


def test_under_mps_only_the_server_is_listed_and_the_claims_lose_their_usage(
    node: Node,
) -> None:
    # With MPS, NVML may list only the MPS server, which the plugin runs outside any pod:
    # the memory of both shares' clients is the server's, attributed to no claim.
    node.run(900, "gpu-2", "0::/system.slice/containerd.service\n", 17 * GIB, 0.7)
    metrics = node.scrape()
    assert "dra_driver_gpu_memory_used_bytes" not in metrics
    assert metrics["dra_driver_gpu_unattributed_memory_used_bytes"] == {
        (("device", "gpu-2"), ("reason", "not-in-a-pod")): 17 * GIB
    }
    assert metrics["dra_driver_gpu_unattributed_utilisation"] == {
        (("device", "gpu-2"), ("reason", "not-in-a-pod")): pytest.approx(0.7)
    }


def test_a_pid_not_in_this_proc_is_unreadable_and_a_stranger_has_no_claim(node: Node) -> None:
    # No /proc/<pid>: the plugin does not see the host's PID namespace (or it ended).
    node.backend.gpu_processes.start(node.uuid("gpu-0"), 4242, memory_bytes=GIB)
    # A pod the claim does not list (a privileged pod using the GPU past DRA).
    node.run(600, "gpu-0", cgroupfs_v1(7, 7), 2 * GIB)
    # A GPU no claim holds: named after the inventory.
    gpu_1 = node.backend.inventory.gpus[1].uuid
    write_cgroup(node.proc, 700, cgroupfs_v1(8, 8))
    node.backend.gpu_processes.start(gpu_1, 700, memory_bytes=3 * GIB)
    lost = node.scrape()["dra_driver_gpu_unattributed_memory_used_bytes"]
    assert lost == {
        (("device", "gpu-0"), ("reason", "unreadable")): GIB,
        (("device", "gpu-0"), ("reason", "no-claim")): 2 * GIB,
        (("device", "gpu-1"), ("reason", "no-claim")): 3 * GIB,
    }


def test_holders_are_read_once_and_again_only_for_a_new_pod(node: Node) -> None:
    node.run(101, "gpu-0", cgroupfs_v1(1, 1), GIB)
    node.scrape()
    node.scrape()
    reads = [(c.verb, c.resource) for c in node.api.calls if c.verb == "get"]
    assert reads == [("get", "resourceclaims"), ("get", "pods")]


def test_without_pod_reads_the_container_is_named_by_its_short_id(node: Node) -> None:
    node.api.fail("get", "pods", status=403, times=10)
    node.run(401, "gpu-2", cgroupfs_v1(4, 4), 8 * GIB)
    (series,) = node.scrape()["dra_driver_gpu_memory_used_bytes"]
    assert dict(series)["container"] == container_id(4)[:12]
    assert dict(series)["pod"] == "half-a"
