"""The objects of deploy/manifests/dra-driver.yaml (the Helm chart's default rendering) are
accepted by a real API server.

Each object is created with server-side dry-run, so the API server runs its full validation
(the ValidatingAdmissionPolicy's CEL expressions are compiled and type-checked, the
DaemonSet's and Deployment's pod templates validated, the RBAC rules checked) without
changing the cluster. Namespaced objects go to a fresh namespace in place of dra-driver. The
DeviceClasses are applied for real by test_cluster_deploy_manifests.
"""

from __future__ import annotations

from typing import Any

import yaml
from cluster_access import DEPLOY

MANIFESTS = DEPLOY / "manifests" / "dra-driver.yaml"
OBJECTS = [
    doc for doc in yaml.safe_load_all(MANIFESTS.read_text()) if doc and doc["kind"] != "DeviceClass"
]


def _label(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def test_the_manifests_hold_objects_to_check() -> None:
    kinds = {obj["kind"] for obj in OBJECTS}
    assert {"DaemonSet", "Deployment", "ValidatingAdmissionPolicy", "ClusterRole"} <= kinds


def test_the_api_server_accepts_every_object(api_client: Any, namespace: str) -> None:
    # One namespace for all: each fresh one costs seconds to delete.
    from kubernetes import dynamic
    from kubernetes.client import ApiException

    client = dynamic.DynamicClient(api_client)
    refused: list[str] = []
    for obj in OBJECTS:
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        body = {**obj, "metadata": dict(obj["metadata"])}
        if resource.namespaced:
            body["metadata"]["namespace"] = namespace
        try:
            created = resource.create(
                body=body,
                namespace=namespace if resource.namespaced else None,
                query_params=[("dryRun", "All")],
            )
        except ApiException as err:
            refused.append(f"{_label(obj)}: {err.status} {err.body}")
            continue
        assert created.metadata.name == obj["metadata"]["name"]
    assert not refused, f"{MANIFESTS.name}: " + "\n".join(refused)
