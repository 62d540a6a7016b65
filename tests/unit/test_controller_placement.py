"""The placement reconciler against the in-memory API server: its decisions.

Which node and devices a gated pod gets, in what order the writes go, under each policy,
around other allocations and through the node filters. What happens when a write loses
or a pod cannot be placed is in test_controller_placement_failures.
"""

from __future__ import annotations

from typing import Any

import pytest
from controller_fixtures import (
    GATE,
    Harness,
    add_gpu_nodes,
    allocation,
    claim,
    device_class,
    node,
    node_slice,
    object_writes,
    pod,
    scheduling_gates,
)

# -- the happy path and the order of writes -----------------------------------------------


def test_gated_pod_gets_its_claim_placed_then_its_gate_removed() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2})
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    assert h.reconcile("default/p").backoff is False
    assert h.devices("c") == [("node_a", "gpu-0")]
    stored = h.claim("c")
    assert "resource.kubernetes.io/delete-protection" in stored["metadata"]["finalizers"]
    assert (
        stored["metadata"]["annotations"][f"{GATE.split('/')[0]}/placed-for"]
        == h.pod("p")["metadata"]["uid"]
    )
    # Stamped: the scheduler would otherwise stamp it and be refused (immutable allocation).
    assert stored["status"]["allocation"]["allocationTimestamp"].endswith("Z")
    selector = stored["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"][0]
    assert selector["matchFields"][0]["values"] == ["node_a"]
    assert scheduling_gates(h, "p") == []
    # Finalizer, then allocation, then (only then) the gate.
    assert object_writes(h.cluster.calls)[-3:] == [
        ("patch", "resourceclaims", "c"),
        ("replace_status", "resourceclaims", "c"),
        ("patch", "pods", "p"),
    ]
    (placed,) = h.events_for("Pod", "p")
    assert placed["reason"] == "Placed" and "node node_a" in placed["message"]
    assert h.metrics.placements.labels("binpack")._value.get() == 1


def test_other_gates_stay_and_ungated_pods_are_left_alone() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2})
    h.add("resourceclaims", claim("c"), claim("d"))
    gated = pod("p", "c")
    gated["spec"]["schedulingGates"].append({"name": "example.com/other"})
    h.add("pods", gated, pod("q", "d", gated=False))
    h.reconcile("default/p")
    h.reconcile("default/q")
    assert scheduling_gates(h, "p") == ["example.com/other"]
    assert h.devices("d") == []  # the scheduler's business


def test_all_claims_of_a_pod_go_to_one_node_together() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 1, "node_b": 2})
    h.add("resourceclaims", claim("x"), claim("y"))
    h.add("pods", pod("p", "x", "y"))
    h.reconcile("default/p")
    assert {pool for pool, _ in h.devices("x") + h.devices("y")} == {"node_b"}
    assert sorted(h.devices("x") + h.devices("y")) == [("node_b", "gpu-0"), ("node_b", "gpu-1")]


def test_decisions_in_a_row_never_share_a_device() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2, "node_b": 2})
    for i in range(4):
        h.add("resourceclaims", claim(f"c{i}"))
        h.add("pods", pod(f"p{i}", f"c{i}"))
    h.sync()
    # Decide all four before the watch delivers any write: the assumed cache keeps them apart.
    for i in range(4):
        h.placer.reconcile(f"default/p{i}")
    devices = [d for i in range(4) for d in h.devices(f"c{i}")]
    assert len(set(devices)) == 4


# -- policies ------------------------------------------------------------------------------


def _a100_then_h100(h: Harness) -> None:
    h.add("deviceclasses", device_class())
    h.add("nodes", node("gpu-node-a100"), node("gpu-node-h100"))
    h.add("resourceslices", node_slice("gpu-node-a100", 2, capability="8.0.0"))
    h.add("resourceslices", node_slice("gpu-node-h100", 2, capability="9.0.0"))


def test_most_capable_picks_the_h100_node_although_the_a100_node_comes_first() -> None:
    h = Harness(policy="most-capable")
    _a100_then_h100(h)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    assert h.devices("c")[0][0] == "gpu-node-h100"


def test_a_pod_annotation_overrides_the_policy_and_a_bad_one_is_reported() -> None:
    h = Harness(policy="most-capable")
    _a100_then_h100(h)
    h.add("resourceclaims", claim("c"), claim("d"))
    h.add("pods", pod("p", "c", annotations={"gpu.dra-driver.io/policy": "first-fit"}))
    h.add("pods", pod("q", "d", annotations={"gpu.dra-driver.io/policy": "fastest"}))
    h.reconcile("default/p")
    h.reconcile("default/q")
    assert h.devices("c")[0][0] == "gpu-node-a100"
    assert h.devices("d")[0][0] == "gpu-node-h100"  # the default policy
    (warning,) = [e for e in h.events_for("Pod", "q") if e["reason"] == "InvalidPolicy"]
    assert '"fastest"' in warning["message"] and "most-capable" in warning["message"]


def test_binpack_fills_one_nodes_gpus_before_touching_another() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2, "node_b": 2})
    h.add("resourceclaims", claim("warm"))
    h.cluster.put(
        "resourceclaims",
        {**h.claim("warm"), "status": {"allocation": allocation("node_b", "gpu-0")}},
    )
    for i in range(3):
        h.add("resourceclaims", claim(f"c{i}"))
        h.add("pods", pod(f"p{i}", f"c{i}"))
        h.reconcile(f"default/p{i}")
    assert [h.devices(f"c{i}")[0] for i in range(3)] == [
        ("node_b", "gpu-1"),
        ("node_a", "gpu-0"),
        ("node_a", "gpu-1"),
    ]


# -- respecting other allocations -----------------------------------------------------------


def test_devices_allocated_by_anyone_are_not_handed_out_again() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2})
    h.add("resourceclaims", claim("theirs"), claim("c"))
    h.cluster.put(
        "resourceclaims",
        {**h.claim("theirs"), "status": {"allocation": allocation("node_a", "gpu-0")}},
    )
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-1")]
    assert h.devices("theirs") == [("node_a", "gpu-0")]


def test_an_allocated_claim_of_the_pod_pins_the_others_to_its_node() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2, "node_b": 2})
    h.add("resourceclaims", claim("shared"), claim("c"))
    h.cluster.put(
        "resourceclaims",
        {**h.claim("shared"), "status": {"allocation": allocation("node_a", "gpu-1")}},
    )
    h.add("pods", pod("p", "shared", "c"))
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-0")]
    assert h.devices("shared") == [("node_a", "gpu-1")]  # untouched
    assert scheduling_gates(h, "p") == []


# -- node filtering ------------------------------------------------------------------------


def _two_nodes(h: Harness, a: dict[str, Any], b: dict[str, Any]) -> None:
    h.add("deviceclasses", device_class())
    h.add("nodes", a, b)
    h.add("resourceslices", node_slice(a["metadata"]["name"]), node_slice(b["metadata"]["name"]))
    h.add("resourceclaims", claim("c"))


@pytest.mark.parametrize(
    ("a", "b", "pod_options"),
    [
        (node("node_a"), node("node_b", labels={"zone": "z2"}), {"node_selector": {"zone": "z2"}}),
        (
            node("node_a", labels={"zone": "z1"}),
            node("node_b", labels={"zone": "z2"}),
            {
                "affinity": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "zone", "operator": "NotIn", "values": ["z1"]}
                            ]
                        }
                    ]
                }
            },
        ),
        (node("node_a", taints=[{"key": "k", "effect": "NoSchedule"}]), node("node_b"), {}),
        (node("node_a", unschedulable=True), node("node_b"), {}),
        (node("node_a", cpu="1"), node("node_b", cpu="4"), {"cpu": "2"}),
        (node("node_a", memory="1Gi"), node("node_b"), {"memory": "2Gi"}),
    ],
    ids=["node-selector", "affinity", "taint", "cordoned", "cpu", "memory"],
)
def test_the_pod_goes_only_where_it_can_run(
    a: dict[str, Any], b: dict[str, Any], pod_options: dict[str, Any]
) -> None:
    h = Harness(policy="first-fit")
    _two_nodes(h, a, b)
    h.add("pods", pod("p", "c", **pod_options))
    h.reconcile("default/p")
    assert h.devices("c")[0][0] == "node_b"


def test_a_tolerated_taint_does_not_filter() -> None:
    h = Harness(policy="first-fit")
    _two_nodes(
        h,
        node("node_a", taints=[{"key": "k", "value": "v", "effect": "NoExecute"}]),
        node("node_b"),
    )
    h.add("pods", pod("p", "c", tolerations=[{"key": "k", "operator": "Equal", "value": "v"}]))
    h.reconcile("default/p")
    assert h.devices("c")[0][0] == "node_a"


def test_bound_and_just_placed_pods_use_up_a_nodes_cpu() -> None:
    h = Harness(policy="first-fit")
    _two_nodes(h, node("node_a", cpu="4"), node("node_b", cpu="4"))
    h.add("resourceclaims", claim("d"))
    h.add("pods", pod("running", gated=False, cpu="2", node_name="node_a"))
    h.add("pods", pod("p", "c", cpu="2"), pod("q", "d", cpu="1"))
    h.reconcile("default/p")
    assert h.devices("c")[0][0] == "node_a"  # 2 of 4 cpus left there
    h.reconcile("default/q")  # p is not bound yet, but nominated to node_a
    assert h.devices("d")[0][0] == "node_b"


def test_the_event_names_the_node_filters_when_no_node_can_run_the_pod() -> None:
    h = Harness()
    _two_nodes(h, node("node_a", cpu="1"), node("node_b", labels={"zone": "z"}, cpu="1"))
    h.add("pods", pod("p", "c", cpu="2", node_selector={"zone": "z"}))
    h.reconcile("default/p")
    (event,) = h.events_for("Pod", "p")
    assert "0/2 nodes are available" in event["message"]
    assert "1 Insufficient cpu" in event["message"]
    assert "1 node(s) didn't match Pod's node affinity/selector" in event["message"]
