"""Pod groups and NVLink islands with the real API server and scheduler (GenericWorkload on:
the scheduler's gang plugin runs, PodGroups are served).

- A 4-pod gang PodGroup is placed by the in-process controller only when all four pods fit:
  while a blocker holds one GPU nothing of the group is allocated and each pod says why;
  a second gang competing for the same GPUs holds nothing while the first runs, so it
  never deadlocks it, and gets all four pods placed once the first is gone.
- A 4-GPU claim with a matchAttribute constraint on the NVLink island lands on one island
  of a dgx-h100 node, and is refused on a pcie-4xL40S node with the reason.

The fleet's nodes have no kubelet: "starts" here means bound by the scheduler.
"""

from __future__ import annotations

from typing import Any

from cluster_access import ClusterUnderTest, pod_report, read_json, wait_for
from cluster_controller_fixtures import (  # noqa: F401  (fixtures are found by name)
    GATE,
    Fleet,
    _bound_node,
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
from kubernetes import client

from api import limits
from api.resource_v1 import dump
from dra_driver.discovery.mock import MockBackend
from dra_driver.slices import build_slices


def _scheduling(api_client: Any) -> Any:
    return client.SchedulingV1beta1Api(api_client)


def _gang(api_client: Any, namespace: str, name: str, min_count: int) -> None:
    _scheduling(api_client).create_namespaced_pod_group(
        namespace,
        {
            "apiVersion": "scheduling.k8s.io/v1beta1",
            "kind": "PodGroup",
            "metadata": {"name": name},
            "spec": {"schedulingPolicy": {"gang": {"minCount": min_count}}},
        },
    )


def _member(name: str, template: str, group: str) -> dict[str, Any]:
    body = _pod(name, template)
    body["spec"]["schedulingGroup"] = {"podGroupName": group}
    return body


def _allocated(api_client: Any, namespace: str, pod: str) -> bool:
    stored = read_json(_core(api_client).read_namespaced_pod, pod, namespace)
    statuses = stored.get("status", {}).get("resourceClaimStatuses") or []
    if not statuses:
        return False
    claim = read_json(
        _resources(api_client).read_namespaced_resource_claim,
        statuses[0]["resourceClaimName"],
        namespace,
    )
    return bool((claim.get("status") or {}).get("allocation"))


def _reasons(api_client: Any, namespace: str, pod: str) -> list[str]:
    events = _core(api_client).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={pod}"
    )
    return [f"{e.reason}: {e.message}" for e in events.items]


def _force_delete(api_client: Any, namespace: str, pods: list[str]) -> None:
    for name in pods:
        _core(api_client).delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def test_a_gang_starts_only_when_all_four_fit_and_a_competing_gang_does_not_deadlock_it(
    local_cluster: ClusterUnderTest,
    fleet: Fleet,  # noqa: F811
    ns: str,  # noqa: F811
    start_controller: Any,  # noqa: F811
) -> None:
    api = local_cluster.api_client
    core: Any = _core(api)
    fleet.add_node("a", 8)
    resources: Any = _resources(api)
    resources.create_namespaced_resource_claim_template(ns, _template(fleet, "one"))
    resources.create_namespaced_resource_claim_template(ns, _template(fleet, "two", count=2))
    start_controller()
    core.create_namespaced_pod(ns, _pod("blocker", "one"))
    _wait_bound(local_cluster, ns, ["blocker"])

    gangs = {"red": [f"red-{i}" for i in range(4)], "blue": [f"blue-{i}" for i in range(4)]}
    for group in gangs:
        _gang(api, ns, group, 4)
    for index in range(4):  # interleaved, as two jobs submitted at once
        for group, pods in gangs.items():
            core.create_namespaced_pod(ns, _member(pods[index], "two", group))
    everyone = [p for pods in gangs.values() for p in pods]

    # 7 GPUs free, each gang needs 8: nothing of either is allocated, each pod says why.
    wait_for(
        "a GroupUnplaceable Event on each pod of both gangs",
        lambda: all(
            any(r.startswith("GroupUnplaceable") for r in _reasons(api, ns, p)) for p in everyone
        ),
        cluster=local_cluster,
        timeout_s=90,
        context=lambda: pod_report(api, ns, everyone[0]),
    )
    message = next(r for r in _reasons(api, ns, "red-0") if r.startswith("GroupUnplaceable"))
    assert "minCount 4" in message and "need 8 device(s)" in message, message
    assert "7 whole device(s) are free" in message, message
    assert not any(_allocated(api, ns, p) for p in everyone)
    assert not any(_bound_node(api, ns, p) for p in everyone)

    # The blocker goes: exactly one gang gets all eight GPUs, the other holds nothing.
    _force_delete(api, ns, ["blocker"])

    def winner() -> str | None:
        for group, pods in gangs.items():
            if all(_bound_node(api, ns, p) for p in pods):
                return group
        return None

    first: str = wait_for(
        "one gang bound whole",
        winner,
        cluster=local_cluster,
        timeout_s=120,
        context=lambda: "\n".join(pod_report(api, ns, p) for p in everyone[:2]),
    )
    second = next(g for g in gangs if g != first)
    # The scheduler admitted it as a gang (its pod-group cycle writes this condition).
    stored = read_json(_scheduling(api).read_namespaced_pod_group, first, ns)
    conditions = {c["type"]: c["status"] for c in stored["status"].get("conditions") or []}
    assert conditions.get("PodGroupInitiallyScheduled") == "True", stored["status"]
    devices = [d for p in gangs[first] for d in _devices(_claim_of(api, ns, p))]
    assert len(set(devices)) == 8
    assert not any(_allocated(api, ns, p) for p in gangs[second])
    assert not any(_bound_node(api, ns, p) for p in gangs[second])

    # The first gang finishes: the second is placed and bound, all four pods.
    _force_delete(api, ns, gangs[first])
    _wait_bound(local_cluster, ns, gangs[second], timeout_s=120)
    devices = [d for p in gangs[second] for d in _devices(_claim_of(api, ns, p))]
    assert len(set(devices)) == 8


def _machine(nodes: Fleet, api_client: Any, suffix: str, profile: str) -> str:
    """A fleet node whose slice is the mock machine ``profile`` (whole GPUs only)."""
    core: Any = _core(api_client)
    name = f"ctl-{nodes.run}-{suffix}"
    core.create_node({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
    nodes.nodes.append(name)
    resources = {"cpu": "64", "memory": "256Gi", "pods": "110"}
    core.patch_node_status(name, {"status": {"capacity": resources, "allocatable": resources}})
    inventory = MockBackend(name, profile).discover()
    (only,) = build_slices(inventory, driver_name=nodes.driver, partitionable=False)
    body = dump(only)
    body["metadata"] = {"name": f"{name}-gpus"}  # the fleet fixture deletes it by this name
    _resources(api_client).create_resource_slice(body)
    return name


def _island_template(nodes: Fleet, name: str) -> dict[str, Any]:
    island = f"{nodes.driver}/{limits.ATTRIBUTE_NVLINK_ISLAND}"
    whole = f'device.attributes["{nodes.driver}"].type == "gpu"'
    request = {
        "name": "gpu",
        "exactly": {
            "deviceClassName": nodes.device_class,
            "count": 4,
            "selectors": [{"cel": {"expression": whole}}],
        },
    }
    return {
        "metadata": {"name": name},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [request],
                    "constraints": [{"requests": ["gpu"], "matchAttribute": island}],
                }
            }
        },
    }


def test_an_island_constraint_lands_on_one_island_or_is_refused_with_the_reason(
    local_cluster: ClusterUnderTest,
    fleet: Fleet,  # noqa: F811
    ns: str,  # noqa: F811
    start_controller: Any,  # noqa: F811
) -> None:
    api = local_cluster.api_client
    core: Any = _core(api)
    resources: Any = _resources(api)
    pcie = _machine(fleet, api, "pcie", "pcie-4xL40S")
    resources.create_namespaced_resource_claim_template(ns, _island_template(fleet, "island"))
    start_controller()

    core.create_namespaced_pod(ns, _pod("on-pcie", "island"))
    wait_for(
        "the island constraint refused on the PCIe-only node",
        lambda: any(
            r.startswith("Unplaceable") and "the most one value offers is 1" in r
            for r in _reasons(api, ns, "on-pcie")
        ),
        cluster=local_cluster,
        timeout_s=90,
        context=lambda: pod_report(api, ns, "on-pcie"),
    )
    reason = next(r for r in _reasons(api, ns, "on-pcie") if r.startswith("Unplaceable"))
    assert limits.ATTRIBUTE_NVLINK_ISLAND in reason, reason
    assert pcie in reason, reason
    assert not _allocated(api, ns, "on-pcie")

    dgx = _machine(fleet, api, "dgx", "dgx-h100")
    bound = _wait_bound(local_cluster, ns, ["on-pcie"], timeout_s=120)
    assert bound == {"on-pcie": dgx}
    claim = _claim_of(api, ns, "on-pcie")
    devices = [device for _, device in _devices(claim)]
    assert len(devices) == 4
    islands = {
        d["attributes"][limits.ATTRIBUTE_NVLINK_ISLAND]["string"]
        for s in resources.list_resource_slice(field_selector=f"spec.nodeName={dgx}").items
        for d in s.to_dict()["spec"]["devices"]
        if d["name"] in devices
    }
    assert len(islands) == 1
