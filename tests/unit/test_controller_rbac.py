"""deploy/controller/rbac.yaml grants every call the controller makes.

The controller runs over the in-memory API server through placements with
conflicts, leader election, Events, the configuration ConfigMap, cluster pools and
DeviceClasses; every recorded call is then checked against the ClusterRole and the
Role. The cluster tests run the controller with this RBAC on the real API server.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from controller_fixtures import claim, device_class, node, node_slice, pod

from controller.app import Controller
from controller.settings import parse_settings
from tests.fakes.cluster import FakeCluster

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "controller" / "rbac.yaml"
GROUPS = {
    "pods": "",
    "nodes": "",
    "events": "",
    "configmaps": "",
    "leases": "coordination.k8s.io",
    "resourceslices": "resource.k8s.io",
    "deviceclasses": "resource.k8s.io",
    "resourceclaims": "resource.k8s.io",
    "devicetaintrules": "resource.k8s.io",
    "podgroups": "scheduling.k8s.io",
}
VERBS = {
    "list": ["list"],
    "watch": ["watch"],
    "get": ["get"],
    "create": ["create"],
    "replace": ["update"],
    "patch": ["patch"],
    "delete": ["delete"],
}
CONFIG = """
pools:
- name: shared
  allNodes: true
  devices: [{name: fpga-0, attributes: {type: {string: fpga}}}]
"""


def _rules(kind: str) -> list[dict[str, Any]]:
    return [
        rule
        for doc in yaml.safe_load_all(RBAC.read_text())
        if doc["kind"] == kind
        for rule in doc["rules"]
    ]


def _allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in rules
    )


def _gated(cluster: FakeCluster) -> bool:
    (placed,) = cluster.objects("pods")
    return bool(placed["spec"].get("schedulingGates"))


def test_every_call_of_the_controller_is_granted() -> None:
    cluster = FakeCluster()
    # The test's own writes go through put(), which records no call.
    cluster.put("deviceclasses", device_class())
    cluster.put("nodes", node("node-a"))
    cluster.put("resourceslices", node_slice("node-a", 2))
    cluster.put(
        "configmaps",
        {"metadata": {"name": "cfg", "namespace": "dra-driver"}, "data": {"config.yaml": CONFIG}},
    )
    settings = parse_settings(
        ["--config-map", "dra-driver/cfg", "--watch-timeout-seconds", "0.2"], environ={}
    )
    controller = Controller(settings, cluster, workers=1)
    cluster.fail("patch", "pods", 409)  # the pod is re-read
    cluster.fail("replace_status", "resourceclaims", 409)  # the claim is re-read
    controller.start()
    try:
        cluster.put("resourceclaims", claim("c"))
        cluster.put("pods", pod("p", "c"))
        deadline = time.monotonic() + 10
        while _gated(cluster) or not [
            s for s in cluster.objects("resourceslices") if s["spec"]["pool"]["name"] == "shared"
        ]:
            assert time.monotonic() < deadline, "nothing placed or published"
            time.sleep(0.01)
    finally:
        controller.shutdown(timeout_s=5)
    cluster_rules, namespace_rules = _rules("ClusterRole"), _rules("Role")
    seen = set()
    for call in cluster.calls:
        if call.verb == "replace_status":
            needed = [("resourceclaims/status", "update"), ("resourceclaims/binding", "update")]
        else:
            needed = [(call.resource, verb) for verb in VERBS[call.verb]]
        for resource, verb in needed:
            group = GROUPS[call.resource]
            rules = namespace_rules if call.resource in ("leases", "configmaps") else cluster_rules
            assert _allowed(rules, group, resource, verb), f"{verb} {resource} is not granted"
            seen.add((resource, verb))
    # The scenario went through the paths that need the less obvious rules.
    assert {("pods", "get"), ("resourceclaims", "get"), ("configmaps", "get")} <= seen
    assert {("leases", "create"), ("events", "create"), ("resourceslices", "create")} <= seen
