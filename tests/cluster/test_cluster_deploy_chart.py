"""The objects of deploy/manifests/dra-driver.yaml (the Helm chart's default rendering) are
accepted by a real API server, and its admission policy keeps the plugin to its own node.

Each object is created with server-side dry-run, so the API server runs its full validation
(the ValidatingAdmissionPolicy's CEL expressions are compiled and type-checked, the
DaemonSet's and Deployment's pod templates validated, the RBAC rules checked) without
changing the cluster. Namespaced objects go to a fresh namespace in place of dra-driver. The
DeviceClasses are applied for real by test_cluster_deploy_manifests; the optional metrics
NetworkPolicies (off by default, so not in the manifests) are rendered with helm and
dry-run too. The controller's admission policies are at work in
test_cluster_controller_policy.

Then the plugin's ServiceAccount, ClusterRole and ValidatingAdmissionPolicy are installed for
real (renamed into the test's namespace) and a token bound to a pod on the node writes
ResourceSlices: its own node's are accepted, another node's are denied.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_access import (
    DEPLOY,
    ClusterUnderTest,
    core_api,
    helm_binary,
    new_api_client,
    read_json,
    render_chart,
    resource_api,
)
from kubernetes import client

from e2e.cluster import BUSYBOX_IMAGE

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


def test_the_api_server_accepts_the_optional_network_policies(
    api_client: Any, namespace: str, tmp_path: Path
) -> None:
    # Off by default, so not in the manifests: rendered with metrics.networkPolicy on.
    values = {"metrics": {"networkPolicy": {"enabled": True, "namespace": "prometheus"}}}
    objects = render_chart(helm_binary(), values, tmp_path)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert sorted(p["metadata"]["name"] for p in policies) == [
        "dra-driver-controller-metrics",
        "dra-driver-kubelet-plugin-metrics",
    ]
    networking = client.NetworkingV1Api(api_client)
    for policy in policies:
        body = {**policy, "metadata": {**policy["metadata"], "namespace": namespace}}
        try:
            stored = read_json(
                networking.create_namespaced_network_policy, namespace, body, dry_run="All"
            )
        except client.ApiException as err:
            pytest.fail(f"{_label(policy)}: {err.status} {err.body}")
        (rule,) = stored["spec"]["ingress"]
        assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "prometheus"
        }
        port = 9400 if "plugin" in _label(policy) else 8080
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]


# --- The admission policy at work -----------------------------------------------------------

PLUGIN = "dra-driver-kubelet-plugin"
DRIVER = "gpu.dra-driver.io"


def _manifest(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in OBJECTS if d["kind"] == kind and d["metadata"]["name"].startswith(PLUGIN)]
    return doc


def _slice(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": [],
        },
    }


def _token_kubeconfig(cluster: ClusterUnderTest, token: str, path: Path) -> Path:
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    entry = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [entry],
                "users": [{"name": "plugin", "user": {"token": token}}],
                "contexts": [
                    {"name": "plugin", "context": {"cluster": entry["name"], "user": "plugin"}}
                ],
                "current-context": "plugin",
            }
        )
    )
    return path


@pytest.fixture
def plugin_api(
    local_cluster: ClusterUnderTest, namespace: str, tmp_path: Path
) -> Iterator[tuple[Any, str]]:
    """ResourceV1Api as the plugin's ServiceAccount on a pod of the node; the test's prefix.

    The chart's ClusterRole, binding and admission policy are installed under names of the
    test's namespace, with the policy matching that namespace's ServiceAccount.
    """
    admin = local_cluster.api_client
    core, rbac = core_api(admin), client.RbacAuthorizationV1Api(admin)
    admission = client.AdmissionregistrationV1Api(admin)
    undo: list[Callable[[], Any]] = []
    name = f"{namespace}-plugin"
    role = _manifest("ClusterRole")
    policy = _manifest("ValidatingAdmissionPolicy")
    binding = _manifest("ValidatingAdmissionPolicyBinding")
    expression = policy["spec"]["matchConditions"][0]["expression"]
    assert f"system:serviceaccount:dra-driver:{PLUGIN}" in expression
    try:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": PLUGIN}})
        rbac.create_cluster_role({**role, "metadata": {"name": name}})
        undo.append(lambda: rbac.delete_cluster_role(name))
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [{"kind": "ServiceAccount", "name": PLUGIN, "namespace": namespace}],
            }
        )
        undo.append(lambda: rbac.delete_cluster_role_binding(name))
        spec = dict(policy["spec"])
        spec["matchConditions"] = [
            {
                "name": "is-kubelet-plugin",
                "expression": expression.replace(
                    "serviceaccount:dra-driver:", f"serviceaccount:{namespace}:"
                ),
            }
        ]
        admission.create_validating_admission_policy(
            {**policy, "metadata": {"name": name}, "spec": spec}
        )
        undo.append(lambda: admission.delete_validating_admission_policy(name))
        admission.create_validating_admission_policy_binding(
            {**binding, "metadata": {"name": name}, "spec": {**binding["spec"], "policyName": name}}
        )
        undo.append(lambda: admission.delete_validating_admission_policy_binding(name))
        pod = core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": "plugin"},
                "spec": {
                    "serviceAccountName": PLUGIN,
                    "nodeName": local_cluster.node_name,
                    "containers": [
                        {"name": "c", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"]}
                    ],
                    "terminationGracePeriodSeconds": 0,
                },
            },
        )
        token = core.create_namespaced_service_account_token(
            PLUGIN,
            namespace,
            {
                "spec": {
                    "expirationSeconds": 600,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": "plugin",
                        "uid": pod.metadata.uid,
                    },
                }
            },
        ).status.token
        kubeconfig = _token_kubeconfig(local_cluster, token, tmp_path / "kubeconfig")
        yield resource_api(new_api_client(str(kubeconfig))), namespace
    finally:
        for slice_ in resource_api(admin).list_resource_slice().items:
            if slice_.metadata.name.startswith(namespace):
                resource_api(admin).delete_resource_slice(slice_.metadata.name)
        for step in reversed(undo):
            step()


def _denied(call: Callable[[], Any]) -> str | None:
    """The API server's refusal, or None when the call went through."""
    try:
        call()
    except client.ApiException as err:
        return f"{err.status} {err.body}"
    return None


def test_the_plugin_writes_only_its_own_nodes_slices(
    local_cluster: ClusterUnderTest, plugin_api: tuple[Any, str]
) -> None:
    api, prefix = plugin_api
    node = local_cluster.node_name
    admin = resource_api(local_cluster.api_client)
    # The API server starts enforcing a new policy within a second or so.
    deadline = time.monotonic() + 30
    while True:
        refusal = _denied(
            lambda: api.create_resource_slice(_slice(f"{prefix}-other", "other-node"))
        )
        if refusal is not None:
            break
        admin.delete_resource_slice(f"{prefix}-other")
        assert time.monotonic() < deadline, "the policy never denied a slice of another node"
        time.sleep(0.5)
    assert "may not write ResourceSlices of node other-node" in refusal, refusal
    assert f"on node {node}" in refusal
    # Its own node's slices: created, updated and deleted.
    created = api.create_resource_slice(_slice(f"{prefix}-own", node))
    created.spec.pool.generation = 2
    api.replace_resource_slice(f"{prefix}-own", created)
    api.delete_resource_slice(f"{prefix}-own")
    # Another node's slice, made by someone else, it may neither change nor delete.
    admin.create_resource_slice(_slice(f"{prefix}-theirs", "other-node"))
    refusal = _denied(lambda: api.delete_resource_slice(f"{prefix}-theirs"))
    assert refusal is not None and "may not write" in refusal, refusal
    # A slice without a node (a cluster-level pool) is not the plugin's either.
    nodeless = _slice(f"{prefix}-pool", node)
    del nodeless["spec"]["nodeName"]
    nodeless["spec"]["allNodes"] = True
    refusal = _denied(lambda: api.create_resource_slice(nodeless))
    assert refusal is not None and "ResourceSlices without a node" in refusal, refusal
