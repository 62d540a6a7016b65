"""The controller/scheduler race on the real API server and scheduler, made to happen on purpose.

The race: the kube-scheduler, allocating for an ungated pod, decides on a
device from its informer's view just before it sees the controller's write for
a gated pod, and writes that device to another claim (a different object: no
conflict). Left alone both claims hold one device and the kubelet plugin
refuses the second prepare.

Here the test plays the scheduler's late write at the worst moment: as soon as
the controller's allocation of the gated pod's claim is stored, the same device
goes to another claim, stamped and reserved for another pod exactly as the
scheduler writes it, and that pod is released to the real scheduler. The
controller must notice at its confirm (``--settle-delay``), give its device
up, place the gated pod again on another device, and only then remove the gate.

Fake nodes as in test_cluster_controller.py (Node objects without a kubelet):
"placed" means the real scheduler bound the pod to the node the claim names.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cluster_access import ClusterUnderTest, core_api, pod_report, read_json, resource_api, wait_for

from agent_kit.kube import KubernetesClient, load_api_client
from controller.app import Controller
from controller.settings import parse_settings

GATE = "gpu.dra-driver.io/placement"
#: The other pod's own gate, so the real scheduler leaves it alone until the test has
#: written its claim's allocation, the way the scheduler would have.
HOLD = "example.com/hold"
#: Long enough for the test to land its write before the confirm, on a slow machine.
SETTLE_S = 6


@pytest.fixture
def race(local_cluster: ClusterUnderTest) -> Iterator[dict[str, str]]:
    """A fake node with two GPUs of a driver of this test's own, its class, a namespace."""
    api = local_cluster.api_client
    core, resources = core_api(api), resource_api(api)
    run = uuid.uuid4().hex[:6]
    driver = f"race-{run}.test"
    node = f"race-{run}"
    namespace = f"race-{run}"
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_node({"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}})
    allocatable = {"cpu": "64", "memory": "256Gi", "pods": "110"}
    core.patch_node_status(node, {"status": {"capacity": allocatable, "allocatable": allocatable}})
    resources.create_resource_slice(
        {
            "metadata": {"name": node},
            "spec": {
                "driver": driver,
                "nodeName": node,
                "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                "devices": [{"name": f"gpu-{i}"} for i in range(2)],
            },
        }
    )
    device_class = f"gpu.{driver}"
    resources.create_device_class(
        {
            "metadata": {"name": device_class},
            "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{driver}"'}}]},
        }
    )
    try:
        yield {"driver": driver, "node": node, "namespace": namespace, "class": device_class}
    finally:
        # No kubelet confirms a deletion on a fake node: force it.
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        core.delete_namespace(namespace)
        core.delete_node(node)
        resources.delete_resource_slice(node)
        resources.delete_device_class(device_class)


@pytest.fixture
def controller(local_cluster: ClusterUnderTest) -> Iterator[Callable[..., Controller]]:
    started: list[Controller] = []

    def start(*argv: str) -> Controller:
        settings = parse_settings(
            [
                "--kubeconfig",
                str(local_cluster.kubeconfig),
                "--no-leader-elect",
                "--no-manage-device-classes",
                "--watch-timeout-seconds",
                "20",
                *argv,
            ],
            environ={},
        )
        kube = KubernetesClient(load_api_client(str(local_cluster.kubeconfig)))
        running = Controller(settings, kube)
        running.start()
        started.append(running)
        assert running.wait_synced(30), running.readiness()
        return running

    yield start
    for running in started:
        running.shutdown(timeout_s=10)


def _claim(name: str, device_class: str) -> dict[str, Any]:
    request = {"name": "gpu", "exactly": {"deviceClassName": device_class}}
    return {"metadata": {"name": name}, "spec": {"devices": {"requests": [request]}}}


def _pod(name: str, claim: str, gate: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "schedulingGates": [{"name": gate}],
            "tolerations": [{"operator": "Exists"}],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": claim}],
            "containers": [
                {"name": "main", "image": "busybox", "resources": {"claims": [{"name": "gpu"}]}}
            ],
        },
    }


def _devices(claim: dict[str, Any]) -> list[str]:
    allocation = (claim.get("status") or {}).get("allocation") or {}
    results = (allocation.get("devices") or {}).get("results") or []
    return [f"{r['driver']}/{r['pool']}/{r['device']}" for r in results]


def test_the_controller_yields_a_device_the_scheduler_wrote_late_and_places_again(
    local_cluster: ClusterUnderTest,
    race: dict[str, str],
    controller: Callable[..., Controller],
) -> None:
    api = local_cluster.api_client
    core, resources = core_api(api), resource_api(api)
    ns, node = race["namespace"], race["node"]
    for name in ("ours", "theirs"):
        resources.create_namespaced_resource_claim(ns, _claim(name, race["class"]))
    running = controller("--policy", "first-fit", "--settle-delay", str(SETTLE_S))
    # Both pods at once: the gated one for the controller, the other held back only so
    # that the test, not the scheduler, decides when its allocation lands.
    core.create_namespaced_pod(ns, _pod("gated", "ours", GATE))
    core.create_namespaced_pod(ns, _pod("plain", "theirs", HOLD))

    def read(name: str) -> dict[str, Any]:
        return read_json(resources.read_namespaced_resource_claim, name, ns)

    first: list[str] = wait_for(
        "the controller's allocation of claim ours",
        lambda: _devices(read("ours")),
        cluster=local_cluster,
        timeout_s=30,
        interval_s=0.05,
        context=lambda: pod_report(api, ns, "gated"),
    )
    assert first == [f"{race['driver']}/{node}/gpu-0"]
    # The scheduler's late write: the same device, stamped, reserved for its pod.
    plain = read_json(core.read_namespaced_pod, "plain", ns)
    theirs = read("theirs")
    theirs["status"] = {
        "allocation": {
            "devices": {
                "results": [
                    {"request": "gpu", "driver": race["driver"], "pool": node, "device": "gpu-0"}
                ]
            },
            "nodeSelector": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            },
            "allocationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "reservedFor": [{"resource": "pods", "name": "plain", "uid": plain["metadata"]["uid"]}],
    }
    resources.replace_namespaced_resource_claim_status("theirs", ns, theirs)
    # The controller has not confirmed yet: the gate is still on.
    gated = read_json(core.read_namespaced_pod, "gated", ns)
    assert gated["spec"].get("schedulingGates") == [{"name": GATE}]
    core.patch_namespaced_pod("plain", ns, {"spec": {"schedulingGates": None}})

    def both_bound() -> bool:
        pods = [read_json(core.read_namespaced_pod, p, ns) for p in ("gated", "plain")]
        return all(p["spec"].get("nodeName") == node for p in pods)

    wait_for(
        "both pods bound",
        both_bound,
        cluster=local_cluster,
        timeout_s=90,
        context=lambda: pod_report(api, ns, "gated") + "\n" + pod_report(api, ns, "plain"),
    )
    assert _devices(read("theirs")) == first  # the scheduler's write stands
    assert _devices(read("ours")) == [f"{race['driver']}/{node}/gpu-1"]
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=gated").items
    conflict = [e for e in events if e.reason == "PlacementConflict"]
    assert conflict, pod_report(api, ns, "gated")
    assert f"{ns}/theirs" in conflict[0].message
    assert any(e.reason == "Placed" for e in events)
    assert running.metrics.device_conflicts.labels("exclusive", "yielded")._value.get() == 1
    assert running.metrics.device_conflicts.labels("exclusive", "after-gate")._value.get() == 0
    # Every claim's devices at the end: pairwise distinct.
    claims = read_json(resources.list_namespaced_resource_claim, ns)["items"]
    held = [d for c in claims for d in _devices(c)]
    assert len(held) == 2 and len(set(held)) == len(held)
