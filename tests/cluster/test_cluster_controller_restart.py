"""`dra-driver controller` when the cluster misbehaves: a real API server restart, and a
placed pod the scheduler then refuses on the chosen node.

The fleet of fake GPU nodes, the controller started in-process with the RBAC of
deploy/controller/, and the pod and template helpers are those of
test_cluster_controller.py (see its docstring): pods tolerate every taint and
never start; "placed" means ungated, allocated, and bound by the real scheduler.
"""

# The shared fixtures are imported by name, and pytest hands them to the tests as
# parameters of the same name: that is what F811 (redefinition) would flag.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cluster_access import ClusterUnderTest, pod_phase, pod_report, read_json, wait_for
from kubernetes import client
from test_cluster_controller import (  # noqa: F401  (fixtures are found by name)
    GATE,
    Fleet,
    _claim_of,
    _core,
    _devices,
    _pod,
    _resources,
    _template,
    _wait_bound,
    controller_kubeconfig,
    fleet,
    ns,
    start_controller,
)

from agent_kit.kube import NotFoundError, api_errors
from controller.app import Controller
from e2e.cluster import BUSYBOX_IMAGE


@pytest.fixture
def late_class(local_cluster: ClusterUnderTest, fleet: Fleet) -> Iterator[str]:
    """The name of a second DeviceClass for the fleet's devices, created by the test
    (after a restart, to show the DeviceClass watch recovered); deleted at the end."""
    name = f"late.{fleet.driver}"
    try:
        yield name
    finally:
        resources: Any = _resources(local_cluster.api_client)
        # The test may have failed before creating it.
        with contextlib.suppress(NotFoundError), api_errors(f"delete deviceclass {name}"):
            resources.delete_device_class(name)


def _node_ready(api_client: Any, name: str) -> bool:
    node = read_json(_core(api_client).read_node, name)
    conditions = node.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _lease_renewed_after(api_client: Any, node: str, moment: datetime) -> bool:
    """Whether the kubelet renewed its node Lease (its heartbeat) after ``moment``."""
    lease = read_json(
        client.CoordinationV1Api(api_client).read_namespaced_lease, node, "kube-node-lease"
    )
    renewed = lease.get("spec", {}).get("renewTime")
    if not renewed:
        return False
    return datetime.fromisoformat(renewed.replace("Z", "+00:00")) > moment


def test_a_restarted_api_server_does_not_wedge_the_controller_or_the_cluster(
    local_cluster: ClusterUnderTest,
    fleet: Fleet,
    ns: str,
    late_class: str,
    start_controller: Callable[..., Controller],
) -> None:
    """kube-apiserver is stopped and started again (same flags, etcd and port) while
    the controller runs. Afterwards every watch works again (objects of each watched
    kind created after the restart are acted on: a DeviceClass, a node and its slice,
    claims from a template, gated pods), the controller leads again, no device is
    allocated twice, and the rest of the cluster recovered too: the kubelet
    heartbeats, its node is Ready, and a plain pod runs."""
    local = local_cluster.local
    if local is None:
        pytest.skip("restarts the local cluster's kube-apiserver; not done to an external cluster")
    for suffix in ("a", "b"):
        fleet.add_node(suffix, 2)
    api = local_cluster.api_client
    resources: Any = _resources(api)
    core: Any = _core(api)
    resources.create_namespaced_resource_claim_template(ns, _template(fleet, "one"))
    controller = start_controller("--api-timeout-seconds", "5")
    core.create_namespaced_pod(ns, _pod("before", "one"))
    _wait_bound(local_cluster, ns, ["before"])
    watched_before = {r.resource: r.resource_version for r in controller.reflectors}

    restarted_at = datetime.now(UTC)
    down_s = local.restart_apiserver()
    back = time.monotonic()
    print(f"kube-apiserver restarted: {down_s:.1f} s without an API server")

    # New objects of every kind the controller watches, each needed by the placements
    # below: 2+2 GPUs minus "before" leave 3 on nodes a and b for 5 pods, so node c
    # (and its slice) must be seen; the pods' claims come from a template naming a
    # DeviceClass that exists only from now on.
    resources.create_device_class(
        {
            "metadata": {"name": late_class},
            "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{fleet.driver}"'}}]},
        }
    )
    node_c = fleet.add_node("c", 4)
    template = _template(fleet, "late")
    template["spec"]["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] = late_class
    resources.create_namespaced_resource_claim_template(ns, template)
    after = [f"after-{i}" for i in range(5)]
    for name in after:
        core.create_namespaced_pod(ns, _pod(name, "late"))
    bound = _wait_bound(local_cluster, ns, ["before", *after], timeout_s=180)
    print(
        f"{len(after)} pods created after the restart bound {time.monotonic() - back:.1f} s later"
    )

    assert controller.elector is not None
    wait_for("the controller to lead", controller.elector.can_write, cluster=local_cluster)
    assert node_c in set(bound.values())
    devices: list[tuple[str, str]] = []
    for name in ["before", *after]:
        pod = read_json(core.read_namespaced_pod, name, ns)
        assert not pod["spec"].get("schedulingGates"), name
        found = _devices(_claim_of(api, ns, name))
        assert [pool for pool, _ in found] == [bound[name]], name
        devices.extend(found)
    assert len(set(devices)) == len(devices), f"a device was allocated twice: {devices}"
    for reflector in controller.reflectors:
        assert reflector.synced.is_set(), reflector.resource
        assert reflector.failures == 0, reflector.resource
        assert reflector.resource_version != watched_before[reflector.resource], (
            f"the {reflector.resource} watch delivered nothing after the restart"
        )
    assert controller.liveness() is None
    relists = {
        r.resource: controller.metrics.relists.labels(r.resource)._value.get()
        for r in controller.reflectors
    }
    print(f"relists after the restart (410 Gone answered to an old resourceVersion): {relists}")

    # The rest of the cluster: the kubelet's heartbeat, its node, and a plain pod on it.
    wait_for(
        "the kubelet's node Lease renewed after the restart",
        lambda: _lease_renewed_after(api, local_cluster.node_name, restarted_at),
        cluster=local_cluster,
        timeout_s=60,
    )
    assert _node_ready(api, local_cluster.node_name)
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "plain"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "nodeSelector": {"kubernetes.io/hostname": local_cluster.node_name},
                "containers": [
                    {
                        "name": "main",
                        "image": BUSYBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "echo recovered"],
                    }
                ],
            },
        },
    )
    wait_for(
        "the plain pod to succeed",
        lambda: pod_phase(api, ns, "plain") in ("Succeeded", "Failed"),
        cluster=local_cluster,
        timeout_s=120,
        context=lambda: pod_report(api, ns, "plain"),
    )
    assert pod_phase(api, ns, "plain") == "Succeeded", pod_report(api, ns, "plain")
    assert core.read_namespaced_pod_log("plain", ns) == "recovered\n"


def test_a_placed_pod_the_scheduler_refuses_is_placed_again_on_another_node(
    local_cluster: ClusterUnderTest,
    fleet: Fleet,
    ns: str,
    start_controller: Callable[..., Controller],
) -> None:
    """The controller places a gated pod on node a (``most-capable``: a has the stronger
    GPUs), but the pod asks for a host port that a pod already bound to a holds: the
    controller does not look at host ports, the scheduler does and reports the pod
    Unschedulable. The claim's allocation on a is released, the controller says so in
    a PlacementRetry Event and places the claim on node b, and the scheduler binds
    the pod there.

    Who releases is a race, by design (controller/placement/): the scheduler's
    PostFilter deallocates an allocated claim that no pod uses when the pod fits
    nowhere (spec/allocator.md), usually before the controller sees the pod
    Unschedulable; otherwise the controller releases it. Either way the allocation
    moves from a to b, which the API server allows only through a release."""
    node_a = fleet.add_node("a", 2, capability="9.0.0")
    node_b = fleet.add_node("b", 2, capability="8.0.0")
    api = local_cluster.api_client
    resources: Any = _resources(api)
    core: Any = _core(api)
    resources.create_namespaced_resource_claim_template(ns, _template(fleet, "one"))
    port = {"containerPort": 8080, "hostPort": 18080, "protocol": "TCP"}
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "port-holder"},
            "spec": {
                "nodeName": node_a,
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "main", "image": "busybox", "ports": [port]}],
            },
        },
    )
    # A long grace: exactly one retry, however long the scheduler takes to bind.
    controller = start_controller(
        "--policy", "most-capable", "--unschedulable-grace-seconds", "600"
    )
    pod = _pod("mover", "one")
    pod["spec"]["containers"][0]["ports"] = [port]
    core.create_namespaced_pod(ns, pod)

    bound = _wait_bound(local_cluster, ns, ["mover"], timeout_s=120)
    assert bound == {"mover": node_b}
    stored = read_json(core.read_namespaced_pod, "mover", ns)
    assert GATE not in [g["name"] for g in stored["spec"].get("schedulingGates") or []]
    claim = _claim_of(api, ns, "mover")
    label = f"{ns}/{claim['metadata']['name']}"
    assert _devices(claim) == [(node_b, "gpu-0")]
    assert claim["status"]["reservedFor"][0]["name"] == "mover"

    def retry_events() -> list[str]:
        events = core.list_namespaced_event(ns, field_selector="involvedObject.name=mover")
        return [e.message for e in events.items if e.reason == "PlacementRetry"]

    (retry,) = wait_for("a PlacementRetry event", retry_events, cluster=local_cluster)
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=mover").items
    placed = [e.message for e in events if e.reason == "Placed"]
    assert len(placed) == 1 and f"{label} allocated on node {node_a}" in placed[0], placed
    assert f"could not bind the pod to node {node_a}" in retry
    assert "didn't have free ports" in retry
    assert re.search(rf"released (no claim|{re.escape(label)}) and placing again", retry), retry
    assert "(attempt 2 of 4)" in retry
    assert controller.metrics.retries._value.get() == 1
    owners = [
        entry["manager"]
        for entry in claim["metadata"].get("managedFields") or []
        if "f:allocation" in (entry.get("fieldsV1") or {}).get("f:status", {})
    ]
    print(f"the allocation on {node_b} was written by {owners}")
