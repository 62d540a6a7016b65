"""The controller and ``explain claim`` honour DeviceTaintRules, as the kube-scheduler does:
placement keeps off the devices a rule taints unless the claim tolerates the taint, a rule
removed frees the devices for the pods that waited, and the explanation names the rule.
"""

from __future__ import annotations

import io
import json
from typing import Any

from controller_fixtures import (
    DRIVER,
    GATE,
    Harness,
    add_gpu_nodes,
    claim,
    device_class,
    node,
    node_slice,
    pod,
    scheduling_gates,
)

from controller.app import run_explain_claim
from tests.fakes.cluster import FakeCluster

KEY = "example.com/maintenance"


def taint_rule(
    name: str, selector: dict[str, str], *, effect: str = "NoSchedule"
) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceTaintRule",
        "metadata": {"name": name},
        "spec": {"deviceSelector": selector, "taint": {"key": KEY, "effect": effect}},
    }


def tolerant(name: str) -> dict[str, Any]:
    """Claim ``name`` for one GPU, tolerating the maintenance taint."""
    body = claim(name)
    body["spec"]["devices"]["requests"][0]["exactly"]["tolerations"] = [
        {"key": KEY, "operator": "Exists"}
    ]
    return body


def test_placement_keeps_off_a_device_a_rule_taints() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2})
    h.add("devicetaintrules", taint_rule("gpu-0-out", {"pool": "node_a", "device": "gpu-0"}))
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-1")]
    assert scheduling_gates(h, "p") == []


def test_a_claim_that_tolerates_the_taint_may_have_the_device() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 1})
    h.add("devicetaintrules", taint_rule("all", {"driver": DRIVER}, effect="NoExecute"))
    h.add("resourceclaims", tolerant("c"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-0")]


def test_a_pool_under_a_rule_sends_the_pod_to_another_node() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2, "node_b": 2})
    # binpack would pick node_a (listed first) without the rule.
    h.add("devicetaintrules", taint_rule("drain-a", {"pool": "node_a"}))
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    assert h.devices("c") == [("node_b", "gpu-0")]


def test_the_unplaceable_event_names_the_rule_and_deleting_it_places_the_pod() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 1})
    h.add("devicetaintrules", taint_rule("drain-a", {"pool": "node_a"}))
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    assert h.reconcile("default/p").backoff is True
    assert scheduling_gates(h, "p") == [GATE]
    (event,) = h.events_for("Pod", "p")
    assert event["reason"] == "Unplaceable"
    assert f"{KEY}:NoSchedule (DeviceTaintRule drain-a)" in event["message"]
    assert "default/p" in h.cache.waiting
    h.cluster.delete("devicetaintrules", "drain-a")
    h.drain()
    assert h.devices("c") == [("node_a", "gpu-0")]
    assert scheduling_gates(h, "p") == []


def test_a_new_rule_reaches_the_next_decision_and_its_status_alone_changes_nothing() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2})
    h.sync()
    h.cache.snapshot()
    h.add("devicetaintrules", taint_rule("gpu-0-out", {"device": "gpu-0"}))
    h.sync()
    h.cache.snapshot()
    rebuilds = h.cache.rebuilds
    stored = h.cluster.get("devicetaintrules", "gpu-0-out")
    stored["status"] = {
        "conditions": [
            {
                "type": "EvictionInProgress",
                "status": "False",
                "reason": "NoEffect",
                "message": "",
                "lastTransitionTime": "2026-12-07T12:00:00Z",
            }
        ]
    }
    h.cluster.put("devicetaintrules", stored)
    h.sync()
    h.cache.snapshot()
    assert h.cache.rebuilds == rebuilds
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-1")]


def test_explain_claim_names_the_rule_that_blocks_a_device() -> None:
    cluster = FakeCluster()
    cluster.create("deviceclasses", device_class())
    cluster.create("nodes", node("node-a"))
    cluster.create("resourceslices", node_slice("node-a", 2))
    cluster.create("devicetaintrules", taint_rule("gpu-1-out", {"device": "gpu-1"}))
    cluster.create("resourceclaims", claim("two", count=2))
    out = io.StringIO()
    code = run_explain_claim(
        ["claim", "default/two"], node=None, output="json", out=out, client=cluster
    )
    assert code == 0
    report = json.loads(out.getvalue())
    assert report["allocatable"] is False
    (request,) = report["nodes"][0]["claims"][0]["requests"]
    assert [(t["device"], t["key"], t["rule"]) for t in request["taintedDevices"]] == [
        (f"{DRIVER}/node-a/gpu-1", KEY, "gpu-1-out")
    ]
    table = io.StringIO()
    run_explain_claim(
        ["claim", "default/two"], node=None, output="table", out=table, client=cluster
    )
    assert f"gpu-1 tainted {KEY}:NoSchedule (DeviceTaintRule gpu-1-out)" in table.getvalue()
