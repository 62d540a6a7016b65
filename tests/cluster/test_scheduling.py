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
    pod_report,
    read_json,
    wait_for,
)
from kubernetes import client

from e2e.cluster import BUSYBOX_IMAGE


def claim_template(name: str, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpu",
                            "exactly": {
                                "deviceClassName": "gpu.dra-driver.io",
                                "selectors": [{"cel": {"expression": selector}}],
                            },
                        }
                    ]
                }
            }
        },
    }


def pod_with_claim(name: str, template: str, command: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": template}],
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "resources": {"claims": [{"name": "gpu"}]},
                }
            ],
        },
    }


def generated_claim_name(api_client: Any, namespace: str, pod: str) -> str | None:
    """The claim the resourceclaim controller made for the pod's ``gpu`` entry, once it did."""
    stored = read_json(client.CoreV1Api(api_client).read_namespaced_pod, pod, namespace)
    for status in stored.get("status", {}).get("resourceClaimStatuses") or []:
        if status.get("name") == "gpu" and status.get("resourceClaimName"):
            return str(status["resourceClaimName"])
    return None


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
    resources = client.ResourceV1Api(api_client)
    resources.create_namespaced_resource_claim_template(
        namespace, claim_template("one-l4", selector)
    )
    client.CoreV1Api(api_client).create_namespaced_pod(
        namespace, pod_with_claim("uses-l4", "one-l4", ["sh", "-c", "ls /dev"])
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
    pod = read_json(client.CoreV1Api(api_client).read_namespaced_pod, "uses-l4", namespace)
    assert claim["status"]["reservedFor"] == [
        {"resource": "pods", "name": "uses-l4", "uid": pod["metadata"]["uid"]}
    ]
    assert claim["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    wait_for(
        "the scheduler to bind the pod",
        lambda: (
            read_json(client.CoreV1Api(api_client).read_namespaced_pod, "uses-l4", namespace)[
                "spec"
            ].get("nodeName")
            == local_cluster.node_name
        ),
        cluster=local_cluster,
        context=report,
    )

    # With no kubelet plugin for the driver the kubelet cannot prepare the claim:
    # the container must not start, and the pod says why.
    def waits_for_driver() -> bool:
        events = client.CoreV1Api(api_client).list_namespaced_event(
            namespace, field_selector="involvedObject.name=uses-l4"
        )
        return any("gpu.dra-driver.io" in (e.message or "") for e in events.items)

    wait_for(
        "an event naming the missing driver",
        waits_for_driver,
        cluster=local_cluster,
        context=report,
    )
    pod = read_json(client.CoreV1Api(api_client).read_namespaced_pod, "uses-l4", namespace)
    assert pod["status"]["phase"] == "Pending"
