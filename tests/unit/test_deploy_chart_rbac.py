"""The chart grants each component exactly what its code calls, and no more.

The plugin's ClusterRole is checked against the client calls in kubelet_plugin/, the
controller's roles against deploy/controller/rbac.yaml (what test_controller_rbac and the
cluster tests run with); the admission policies hold the plugin to its own node's slices and
the controller to the writes of its placement (what they refuse and allow on a real API
server: tests/cluster/test_cluster_controller_policy.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from chart_fixtures import (
    CONTROLLER,
    CONTROLLER_RBAC,
    DEFAULT,
    DRIVER,
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

from agent_kit.kube import RESOURCES
from api import limits
from controller import pools
from controller import settings as controller_settings
from controller.placement.marks import Marks

# The plugin reaches the API server only through agent_kit.kube.ClusterClient, whose verbs
# take the resource first: client.get("nodes", name), self.client.list(\n "resourceslices", ...).
_CLIENT_CALL = re.compile(
    r"\.(get|list|watch|create|replace|replace_status|patch|patch_status|delete)\(\s*\"([a-z]+)\""
)
# The API group of each of the client's groups, and the RBAC verb of each client verb.
_GROUPS = {
    "core": "",
    "resource": "resource.k8s.io",
    "resource_alpha": "resource.k8s.io",
    "coordination": "coordination.k8s.io",
    "scheduling": "scheduling.k8s.io",
}
_GROUP_OF = {resource: _GROUPS[binding.group] for resource, binding in RESOURCES.items()}
_VERBS = {"replace": "update", "replace_status": "update", "patch_status": "patch"}


def _grants(text: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every ClusterClient call in ``text``; ``.get("spec")``
    on a dict names no resource and is not a call to the API."""
    needed: set[tuple[str, str, str]] = set()
    for verb, resource in _CLIENT_CALL.findall(text):
        if resource not in _GROUP_OF:
            continue
        suffix = "/status" if verb.endswith("_status") else ""
        needed.add((_GROUP_OF[resource], resource + suffix, _VERBS.get(verb, verb)))
    return needed


def _plugin_grants() -> set[tuple[str, str, str]]:
    needed: set[tuple[str, str, str]] = set()
    sources = [p.read_text() for p in sorted((ROOT / "kubelet_plugin").rglob("*.py"))]
    for text in sources:
        needed |= _grants(text)
    # The toolkit's Event recorder calls the API for whoever uses it.
    if any("from agent_kit.events import" in text for text in sources):
        needed |= _grants((ROOT / "agent_kit" / "events.py").read_text())
    # Changing a claim's status.devices also needs the synthetic resourceclaims/driver
    # subresource, which no client call names: the API server checks it on the write.
    for verb in ("update", "patch"):
        if ("resource.k8s.io", "resourceclaims/status", verb) in needed:
            needed.add(("resource.k8s.io", "resourceclaims/driver", f"associated-node:{verb}"))
    return needed


def test_the_call_scan_finds_client_methods_and_not_the_plugins_own() -> None:
    text = (
        'self.client.create("resourceslices", body) client.get("nodes", n) '
        'self.client.watch(\n    "resourceslices", resource_version=rv) '
        'self.client.replace_status("resourceclaims", c) '
        'data.get("spec") self.list_slices() self._client.list_slices("node-a")'
    )
    assert _grants(text) == {
        ("resource.k8s.io", "resourceslices", "create"),
        ("", "nodes", "get"),
        ("resource.k8s.io", "resourceslices", "watch"),
        ("resource.k8s.io", "resourceclaims/status", "update"),
    }


def test_the_plugin_may_write_status_devices_of_its_own_driver_only() -> None:
    (rule,) = [
        r
        for r in find_one(DEFAULT, "ClusterRole", PLUGIN)["rules"]
        if "resourceclaims/driver" in r["resources"]
    ]
    assert rule["resourceNames"] == [DRIVER]
    assert rule["verbs"] == ["associated-node:patch"]  # not arbitrary-node: its own node only


def test_the_plugin_is_granted_exactly_what_it_calls() -> None:
    needed = _plugin_grants()
    # The publisher keeps its slices published by watching them.
    assert ("resource.k8s.io", "resourceslices", "watch") in needed
    assert rules_of(DEFAULT, "ClusterRole", PLUGIN) == needed, (
        "the plugin's ClusterRole in the chart is not what kubelet_plugin/ calls"
    )


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


def _controller_policy(kind: str, resource: str) -> dict[str, Any]:
    return find_one(DEFAULT, kind, f"{CONTROLLER}-{resource}")


@pytest.mark.parametrize(
    ("resource", "group"), [("pods", ""), ("resourceclaims", "resource.k8s.io")]
)
def test_the_admission_policies_match_every_write_of_the_controller(
    resource: str, group: str
) -> None:
    policy = _controller_policy("ValidatingAdmissionPolicy", resource)
    binding = _controller_policy("ValidatingAdmissionPolicyBinding", resource)
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    # The resource and every subresource, each operation: whatever RBAC may grant later.
    assert rule["apiGroups"] == [group]
    assert rule["resources"] == [resource, f"{resource}/*"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE"}
    (condition,) = policy["spec"]["matchConditions"]
    user = f"system:serviceaccount:{NAMESPACE}:{CONTROLLER}"
    assert condition["expression"] == f'request.userInfo.username == "{user}"'
    # The first rule refuses anything but an update; every other looks at updates only.
    # (The pods' gate rule compares variables that are empty but in an update.)
    first, *others = policy["spec"]["validations"]
    assert first["expression"] == "variables.isUpdate"
    guarded = [v for v in others if "variables.gates ==" not in v["expression"]]
    assert len(guarded) == len(others) - (resource == "pods")
    assert all(v["expression"].startswith("!variables.isUpdate ||") for v in guarded)


def test_the_admission_policies_name_the_marks_the_controller_writes() -> None:
    # The chart spells the gate, the annotation and the finalizer out; they must be the
    # ones controller/placement writes, or the policy refuses the controller's own writes.
    marks = Marks.of(DRIVER)
    pods = _controller_policy("ValidatingAdmissionPolicy", "pods")["spec"]
    gates = next(v for v in pods["validations"] if "oldGates" in v["expression"])
    assert gates["expression"] == (
        "variables.gates == variables.oldGates || "
        f'variables.gates == variables.oldGates.filter(g, g != "{marks.gate}")'
    )
    claims = _controller_policy("ValidatingAdmissionPolicy", "resourceclaims")["spec"]
    text = " ".join(v["expression"] for v in claims["validations"])
    assert f'"{marks.placed_for}"' in text
    assert f'"{limits.DELETE_PROTECTION_FINALIZER}"' in text
    # The status: only the allocation; reservedFor and devices compared to the old object.
    assert "status.?reservedFor" in text and "status.?devices" in text
    assert "allocation" in text


def test_the_controller_writes_only_the_slices_of_its_cluster_pools() -> None:
    policy = _controller_policy("ValidatingAdmissionPolicy", "resourceslices")
    binding = _controller_policy("ValidatingAdmissionPolicyBinding", "resourceslices")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["resourceslices"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE"}
    (condition,) = policy["spec"]["matchConditions"]
    assert f"system:serviceaccount:{NAMESPACE}:{CONTROLLER}" in condition["expression"]
    # The marks of controller/pools.py's slices; an update is judged on both objects.
    (validation,) = policy["spec"]["validations"]
    text = validation["expression"]
    assert f'"{DRIVER}"' in text and "!s.spec.?nodeName.hasValue()" in text
    assert f"'{pools.MANAGED_BY_LABEL}'" in text and f"'{pools.MANAGED_BY}'" in text
    (variable,) = policy["spec"]["variables"]
    assert "[object, oldObject]" in variable["expression"]


def test_without_the_controller_there_is_no_controller_policy(helm: str) -> None:
    # The GpuConfig policy is no agent's: it stays (tests/unit/test_deploy_chart_config_policy.py).
    objects = documents(helm_template(helm, "--set", "controller.enabled=false"))
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "ValidatingAdmissionPolicy"}
    assert names == {f"{PLUGIN}-resourceslices", "dra-driver-gpu-configs"}
    objects = documents(helm_template(helm, "--set", "controllerPolicy.enabled=false"))
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "ValidatingAdmissionPolicy"}
    assert names == {f"{PLUGIN}-resourceslices", "dra-driver-gpu-configs"}
