"""The real controller-manager and scheduler allocate from the slices we publish.

A Pod references a ResourceClaimTemplate whose request selects one GPU by a
CEL expression. The resourceclaim controller creates the Pod's claim, the
scheduler's DynamicResources plugin allocates a device from our pool, writes
the allocation and binds the Pod. No kubelet plugin runs in this module, so
the Pod then waits on the node for the driver.
"""

from __future__ import annotations

from typing import Any

from cluster_access import (
    ClusterUnderTest,
    PublishedPool,
    claim_template,
    core_api,
    generated_claim_name,
    pod_report,
    pod_with_claim,
    read_json,
    resource_api,
    wait_for,
)


def test_claim_from_template_is_allocated_by_the_scheduler_from_our_slices(
    api_client: Any,
    local_cluster: ClusterUnderTest,
    published_pool: PublishedPool,
    device_classes: list[str],
    namespace: str,
) -> None:
    l4 = next(g for g in published_pool.inventory.gpus if "L4" in g.product_name)
    selector = (
        'device.attributes["gpu.dra-driver.io"].productName == '
        f'"{l4.product_name}" && device.capacity["gpu.dra-driver.io"].memory'
        '.compareTo(quantity("20Gi")) >= 0'
    )
    resources = resource_api(api_client)
    resources.create_namespaced_resource_claim_template(
        namespace, claim_template("one-l4", selector)
    )
    core_api(api_client).create_namespaced_pod(
        namespace, pod_with_claim("uses-l4", ["sh", "-c", "ls /dev"], template="one-l4")
    )

    def report() -> str:
        return pod_report(api_client, namespace, "uses-l4")

    claim_name = wait_for(
        "the resourceclaim controller to create the pod's claim",
        lambda: generated_claim_name(api_client, namespace, "uses-l4"),
        cluster=local_cluster,
        context=report,
    )

    def allocation() -> dict[str, Any] | None:
        claim = read_json(resources.read_namespaced_resource_claim, claim_name, namespace)
        found: dict[str, Any] | None = claim.get("status", {}).get("allocation")
        return found

    allocated = wait_for(
        f"the scheduler to allocate claim {claim_name}",
        allocation,
        cluster=local_cluster,
        context=report,
    )
    (result,) = allocated["devices"]["results"]
    assert result == {
        "request": "gpu",
        "driver": "gpu.dra-driver.io",
        "pool": local_cluster.node_name,
        "device": f"gpu-{l4.index}",
    }
    node_terms = allocated["nodeSelector"]["nodeSelectorTerms"]
    assert node_terms == [
        {
            "matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [local_cluster.node_name]}
            ]
        }
    ]

    claim = read_json(resources.read_namespaced_resource_claim, claim_name, namespace)
    pod = read_json(core_api(api_client).read_namespaced_pod, "uses-l4", namespace)
    assert claim["status"]["reservedFor"] == [
        {"resource": "pods", "name": "uses-l4", "uid": pod["metadata"]["uid"]}
    ]
    assert claim["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    wait_for(
        "the scheduler to bind the pod",
        lambda: (
            read_json(core_api(api_client).read_namespaced_pod, "uses-l4", namespace)["spec"].get(
                "nodeName"
            )
            == local_cluster.node_name
        ),
        cluster=local_cluster,
        context=report,
    )

    # With no kubelet plugin for the driver the kubelet cannot prepare the claim:
    # the container must not start, and the pod says why.
    def waits_for_driver() -> bool:
        events = core_api(api_client).list_namespaced_event(
            namespace, field_selector="involvedObject.name=uses-l4"
        )
        return any("gpu.dra-driver.io" in (e.message or "") for e in events.items)

    wait_for(
        "an event naming the missing driver",
        waits_for_driver,
        cluster=local_cluster,
        context=report,
    )
    pod = read_json(core_api(api_client).read_namespaced_pod, "uses-l4", namespace)
    assert pod["status"]["phase"] == "Pending"
