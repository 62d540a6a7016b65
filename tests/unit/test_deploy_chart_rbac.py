"""The chart grants each component exactly what its code calls, and no more.

The plugin's ClusterRole is checked against the client calls in kubelet_plugin/, the
controller's roles against deploy/controller/rbac.yaml (what test_controller_rbac and the
cluster tests run with); the admission policy holds the plugin to its own node's slices.
"""

from __future__ import annotations

import re

from chart_fixtures import (
    CONTROLLER,
    CONTROLLER_RBAC,
    DEFAULT,
    NAMESPACE,
    PLUGIN,
    ROOT,
    container_of,
    documents,
    env_of,
    find_one,
    helm_fixture,  # noqa: F401  (pytest finds it as `helm`)
    helm_template,
    rules_of,
)

from controller import settings as controller_settings

# The kubernetes client methods the plugin calls, and what each needs.
PLUGIN_CALLS = {
    "read_namespaced_resource_claim": ("resource.k8s.io", "resourceclaims", "get"),
    "list_resource_slice": ("resource.k8s.io", "resourceslices", "list"),
    "create_resource_slice": ("resource.k8s.io", "resourceslices", "create"),
    "replace_resource_slice": ("resource.k8s.io", "resourceslices", "update"),
    "delete_resource_slice": ("resource.k8s.io", "resourceslices", "delete"),
    "read_node": ("", "nodes", "get"),
}

# A client method named after a Kubernetes resource, called or passed on (the publisher hands
# methods to its error wrapper); the plugin's own ports (list_slices...) do not match.
_CLIENT_CALL = re.compile(
    r"\.((?:read|list|create|replace|patch|delete)_(?:namespaced_)?"
    r"(?:resource_claim|resource_slice|device_class|node|pod|event|lease|config_map|secret)"
    r"(?:_status)?)\b"
)


def _plugin_calls() -> set[str]:
    calls: set[str] = set()
    for path in sorted((ROOT / "kubelet_plugin").glob("*.py")):
        calls.update(_CLIENT_CALL.findall(path.read_text()))
    return calls


def test_the_call_scan_finds_client_methods_and_not_the_plugins_own() -> None:
    text = "api.create_resource_slice, x.read_node(n) self.list_slices() y.replace_resource_slice("
    assert set(_CLIENT_CALL.findall(text)) == {
        "create_resource_slice",
        "read_node",
        "replace_resource_slice",
    }


def test_the_plugin_is_granted_exactly_what_it_calls() -> None:
    calls = _plugin_calls()
    unknown = calls - set(PLUGIN_CALLS)
    assert not unknown, (
        f"kubelet_plugin calls {sorted(unknown)}: add them to PLUGIN_CALLS and the chart"
    )
    needed = {PLUGIN_CALLS[name] for name in calls}
    # The publisher watches its slices: a list with watch=True.
    publisher = (ROOT / "kubelet_plugin" / "publisher.py").read_text()
    assert "watch=True" in publisher
    needed.add(("resource.k8s.io", "resourceslices", "watch"))
    assert rules_of(DEFAULT, "ClusterRole", PLUGIN) == needed


def _controller_reference() -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    reference = documents(CONTROLLER_RBAC.read_text())
    return (
        rules_of(reference, "ClusterRole", CONTROLLER),
        rules_of(reference, "Role", CONTROLLER),
    )


def test_the_controller_is_granted_what_the_cluster_tests_proved_less_class_writes() -> None:
    # deploy/controller/rbac.yaml is what test_controller_rbac and the cluster tests run with.
    cluster_rules, namespace_rules = _controller_reference()
    writes = {("resource.k8s.io", "deviceclasses", verb) for verb in ("create", "update", "delete")}
    assert rules_of(DEFAULT, "ClusterRole", CONTROLLER) == cluster_rules - writes
    assert rules_of(DEFAULT, "Role", CONTROLLER) == namespace_rules


def test_a_controller_managing_classes_gets_exactly_the_proven_rbac(helm: str) -> None:
    objects = documents(
        helm_template(
            helm,
            "--set",
            "controller.manageDeviceClasses=true",
            "--set",
            "deviceClasses.create=false",
        )
    )
    cluster_rules, namespace_rules = _controller_reference()
    assert rules_of(objects, "ClusterRole", CONTROLLER) == cluster_rules
    assert rules_of(objects, "Role", CONTROLLER) == namespace_rules
    assert not [o for o in objects if o["kind"] == "DeviceClass"]
    env = env_of(container_of(find_one(objects, "Deployment", CONTROLLER)))
    assert controller_settings.parse_settings([], environ=env).manage_device_classes


def test_the_admission_policy_holds_the_plugin_to_its_own_node() -> None:
    policy = find_one(DEFAULT, "ValidatingAdmissionPolicy", f"{PLUGIN}-resourceslices")
    binding = find_one(DEFAULT, "ValidatingAdmissionPolicyBinding", f"{PLUGIN}-resourceslices")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["resourceslices"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE"}
    (condition,) = policy["spec"]["matchConditions"]
    assert f'"system:serviceaccount:{NAMESPACE}:{PLUGIN}"' in condition["expression"]
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "variables.userNodeName == variables.objectNodeName" in expressions
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert "authentication.kubernetes.io/node-name" in variables["userNodeName"]
    assert "oldObject" in variables["objectNodeName"]  # a DELETE has no object
