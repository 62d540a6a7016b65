"""The placement reconciler against the in-memory API server: decisions, writes, conflicts."""

from __future__ import annotations

from typing import Any

import pytest
from controller_fixtures import (
    GATE,
    NS,
    Harness,
    SwitchFence,
    add_gpu_nodes,
    allocation,
    claim,
    device_class,
    node,
    node_slice,
    object_writes,
    pod,
    scheduling_gates,
    unschedulable,
)

from agent_kit.kube import api_error


def _cluster(h: Harness, **nodes: int) -> None:
    add_gpu_nodes(h, nodes)


# -- the happy path and the order of writes -----------------------------------------------


def test_gated_pod_gets_its_claim_placed_then_its_gate_removed() -> None:
    h = Harness()
    _cluster(h, node_a=2)
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
    _cluster(h, node_a=2)
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
    _cluster(h, node_a=1, node_b=2)
    h.add("resourceclaims", claim("x"), claim("y"))
    h.add("pods", pod("p", "x", "y"))
    h.reconcile("default/p")
    assert {pool for pool, _ in h.devices("x") + h.devices("y")} == {"node_b"}
    assert sorted(h.devices("x") + h.devices("y")) == [("node_b", "gpu-0"), ("node_b", "gpu-1")]


def test_decisions_in_a_row_never_share_a_device() -> None:
    h = Harness()
    _cluster(h, node_a=2, node_b=2)
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
    _cluster(h, node_a=2, node_b=2)
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
    _cluster(h, node_a=2)
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
    _cluster(h, node_a=2, node_b=2)
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


# -- conflicts and all-or-nothing --------------------------------------------------------------


def test_a_conflict_rereads_and_decides_again() -> None:
    h = Harness()
    _cluster(h, node_a=2)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))

    def someone_labels_the_claim() -> None:
        current = h.claim("c")
        current["metadata"].setdefault("labels", {})["touched"] = "yes"
        h.cluster.put("resourceclaims", current)

    h.cluster.before("replace_status", "resourceclaims", someone_labels_the_claim)
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-0")]
    assert h.metrics.conflicts.labels("resourceclaims")._value.get() == 1
    assert scheduling_gates(h, "p") == []


def test_when_the_scheduler_wins_the_race_its_devices_are_respected() -> None:
    h = Harness()
    _cluster(h, node_a=2, node_b=2)
    h.add("resourceclaims", claim("x"), claim("y"), claim("other"))
    h.add("pods", pod("p", "x", "y"))

    def scheduler_allocates_y() -> None:
        # Meanwhile the scheduler gave y a device on node_b for another pod.
        current = h.claim("y")
        current["status"] = {"allocation": allocation("node_b", "gpu-0")}
        h.cluster.put("resourceclaims", current)

    h.cluster.before("patch", "resourceclaims", scheduler_allocates_y, name="y")
    h.reconcile("default/p")
    # x was rolled back from wherever it went first and placed next to y.
    assert h.devices("y") == [("node_b", "gpu-0")]
    assert h.devices("x") == [("node_b", "gpu-1")]
    assert scheduling_gates(h, "p") == []


def test_a_failed_write_leaves_nothing_allocated_and_the_gate_on() -> None:
    h = Harness()
    _cluster(h, node_a=2)
    h.add("resourceclaims", claim("x"), claim("y"))
    h.add("pods", pod("p", "x", "y"))
    h.cluster.fail("replace_status", "resourceclaims", 500, name="y")
    result = h.reconcile("default/p")
    assert result.backoff is True
    assert h.devices("x") == [] and h.devices("y") == []
    assert scheduling_gates(h, "p") == [GATE]
    assert h.cache.claim("default/x") is not None
    assert h.cache.snapshot().users("gpu.dra-driver.io/node_a/gpu-0") == []
    # The next attempt goes through.
    h.reconcile("default/p")
    assert len(h.devices("x") + h.devices("y")) == 2
    assert scheduling_gates(h, "p") == []


def test_a_gate_removal_conflict_rereads_the_pod() -> None:
    h = Harness()
    _cluster(h, node_a=2)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))

    def kubelet_touches_the_pod() -> None:
        current = h.pod("p")
        current["metadata"]["labels"] = {"touched": "yes"}
        h.cluster.put("pods", current)

    h.cluster.before("patch", "pods", kubelet_touches_the_pod)
    h.reconcile("default/p")
    assert scheduling_gates(h, "p") == []
    assert h.pod("p")["metadata"]["labels"] == {"touched": "yes"}
    assert h.metrics.conflicts.labels("pods")._value.get() == 1


def test_a_pod_deleted_before_its_gate_is_removed_gives_its_devices_back() -> None:
    h = Harness()
    _cluster(h, node_a=2)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.cluster.before("patch", "pods", lambda: h.cluster.remove("pods", "p", namespace=NS))
    h.reconcile("default/p")
    assert h.devices("c") == []


# -- the leader fence ----------------------------------------------------------------------


def test_losing_the_leadership_mid_placement_stops_every_write() -> None:
    fence = SwitchFence()
    h = Harness(fence=fence)
    _cluster(h, node_a=2)
    h.add("resourceclaims", claim("x"), claim("y"))
    h.add("pods", pod("p", "x", "y"))

    def lose() -> None:
        fence.open = False

    h.cluster.before("replace_status", "resourceclaims", lose, name="x")
    h.reconcile("default/p")
    writes = object_writes(h.cluster.calls)
    # The x status write was already on its way; nothing after it was sent.
    assert writes[-1] == ("replace_status", "resourceclaims", "x")
    assert ("patch", "pods", "p") not in writes
    assert scheduling_gates(h, "p") == [GATE]
    assert h.metrics.failures.labels("not-leader")._value.get() == 1


def test_a_standby_does_nothing() -> None:
    fence = SwitchFence()
    fence.open = False
    h = Harness(fence=fence)
    _cluster(h, node_a=2)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    before = len(h.cluster.calls)
    h.reconcile("default/p")
    assert object_writes(h.cluster.calls[before:]) == []


def test_a_new_leader_releases_a_partial_placement_that_no_longer_fits() -> None:
    h = Harness()
    _cluster(h, node_a=1, node_b=2)
    h.add("resourceclaims", claim("x"), claim("y"))
    h.add("pods", pod("p", "x", "y"))
    uid = h.pod("p")["metadata"]["uid"]
    # A previous leader placed x on node_a for this pod and died before y.
    current = h.claim("x")
    current["metadata"]["annotations"] = {"gpu.dra-driver.io/placed-for": uid}
    current["status"] = {"allocation": allocation("node_a", "gpu-0")}
    h.cluster.put("resourceclaims", current)
    h.reconcile("default/p")
    assert {pool for pool, _ in h.devices("x") + h.devices("y")} == {"node_b"}


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


# -- pods that cannot be placed -----------------------------------------------------------------


def test_an_unplaceable_pod_gets_an_event_and_is_placed_once_devices_appear() -> None:
    h = Harness()
    _cluster(h, node_a=1)
    h.add("resourceclaims", claim("c", count=2))
    h.add("pods", pod("p", "c"))
    assert h.reconcile("default/p").backoff is True
    assert scheduling_gates(h, "p") == [GATE]
    (pod_event,) = h.events_for("Pod", "p")
    assert pod_event["reason"] == "Unplaceable" and pod_event["type"] == "Warning"
    assert "needs 2, 1 eligible" in pod_event["message"]
    (claim_event,) = h.events_for("ResourceClaim", "c")
    assert "needs 2, 1 eligible" in claim_event["message"]
    assert "default/p" in h.cache.waiting
    # The same reason is not repeated within the interval.
    h.reconcile("default/p")
    assert len(h.events_for("Pod", "p")) == 1
    # A second node arrives: the waiting pod is queued again and placed.
    h.add("nodes", node("node_b"))
    h.add("resourceslices", node_slice("node_b", 2))
    h.drain()
    assert h.devices("c") == [("node_b", "gpu-0"), ("node_b", "gpu-1")]
    assert scheduling_gates(h, "p") == []


def test_the_event_names_the_node_filters_when_no_node_can_run_the_pod() -> None:
    h = Harness()
    _two_nodes(h, node("node_a", cpu="1"), node("node_b", labels={"zone": "z"}, cpu="1"))
    h.add("pods", pod("p", "c", cpu="2", node_selector={"zone": "z"}))
    h.reconcile("default/p")
    (event,) = h.events_for("Pod", "p")
    assert "0/2 nodes are available" in event["message"]
    assert "1 Insufficient cpu" in event["message"]
    assert "1 node(s) didn't match Pod's node affinity/selector" in event["message"]


def test_a_claim_naming_a_missing_class_is_reported() -> None:
    h = Harness()
    _cluster(h, node_a=1)
    h.add("resourceclaims", claim("c", device_class_name="nope"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    (event,) = h.events_for("Pod", "p")
    assert event["reason"] == "PlacementFailed" and '"nope"' in event["message"]


def test_a_pod_waits_for_its_template_claims() -> None:
    h = Harness()
    _cluster(h, node_a=1)
    h.add("pods", pod("p", templates={"gpu": "one-gpu"}))
    h.reconcile("default/p")
    assert scheduling_gates(h, "p") == [GATE]
    # The claim controller creates the claim and records it in the pod's status.
    h.add("resourceclaims", claim("p-gpu-abcde", owner="p"))
    h.set_status(
        "p", {"resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": "p-gpu-abcde"}]}
    )
    h.drain()
    assert h.devices("p-gpu-abcde") == [("node_a", "gpu-0")]
    assert scheduling_gates(h, "p") == []


# -- after the gate: pods the scheduler cannot bind ----------------------------------------------


def test_a_placed_pod_the_scheduler_cannot_bind_is_placed_again_elsewhere() -> None:
    h = Harness(policy="first-fit", max_retries=1, grace_s=30)
    _cluster(h, node_a=1, node_b=1, node_c=1)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-0")]
    h.set_status("p", unschedulable())
    h.reconcile("default/p")
    assert h.devices("c") == [("node_b", "gpu-0")]
    (retry,) = [e for e in h.events_for("Pod", "p") if e["reason"] == "PlacementRetry"]
    assert "node node_a" in retry["message"] and "attempt 2 of 2" in retry["message"]
    assert h.metrics.retries._value.get() == 1
    # Still unschedulable: later retries wait for the grace period, then give up (max 1).
    h.reconcile("default/p")
    assert h.devices("c") == [("node_b", "gpu-0")]
    h.clock.advance(31)
    h.reconcile("default/p")
    (abandoned,) = [e for e in h.events_for("Pod", "p") if e["reason"] == "PlacementAbandoned"]
    assert "after 2 placement(s)" in abandoned["message"]


def test_a_reserved_claim_is_never_released() -> None:
    h = Harness(policy="first-fit")
    _cluster(h, node_a=1, node_b=1)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    current = h.claim("c")
    current["status"]["reservedFor"] = [{"resource": "pods", "name": "p", "uid": "u"}]
    h.cluster.put("resourceclaims", current)
    h.set_status("p", unschedulable())
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-0")]


def test_a_pending_pod_the_scheduler_fails_on_claims_gets_an_explanation() -> None:
    h = Harness()
    _cluster(h, node_a=1)
    h.add("resourceclaims", claim("c", count=3))
    h.add("pods", pod("p", "c", gated=False))
    h.set_status("p", unschedulable("0/1 nodes are available: 1 cannot allocate all claims."))
    h.reconcile("default/p")
    (event,) = h.events_for("Pod", "p")
    assert event["reason"] == "UnallocatableClaims"
    assert "cannot allocate all claims" in event["message"] and "needs 3" in event["message"]
    assert h.events_for("ResourceClaim", "c")[0]["reason"] == "UnallocatableClaims"
    assert h.devices("c") == []  # explained, not placed


def test_an_api_error_reading_back_is_not_fatal() -> None:
    h = Harness()
    _cluster(h, node_a=1)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.cluster.fail("patch", "resourceclaims", 503)
    assert h.reconcile("default/p").backoff is True
    assert h.metrics.failures.labels("api-error")._value.get() == 1
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-0")]


def test_api_error_statuses() -> None:
    assert api_error("x", status=503).retryable
    assert not api_error("x", status=409).retryable


def test_a_stale_gated_pod_is_not_placed_twice() -> None:
    h = Harness()
    _cluster(h, node_a=2)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.sync()
    h.placer.reconcile("default/p")
    # The watch has not delivered the ungated pod yet when the key comes round again.
    h.placer.reconcile("default/p")
    assert h.metrics.placements.labels("binpack")._value.get() == 1
    assert len([e for e in h.events_for("Pod", "p") if e["reason"] == "Placed"]) == 1


def test_a_device_the_scheduler_allocates_meanwhile_is_given_up_before_the_gate() -> None:
    h = Harness()
    _cluster(h, node_a=2)
    h.add("resourceclaims", claim("c"), claim("theirs"))
    h.add("pods", pod("p", "c"))
    h.sync()

    def scheduler_allocates_gpu_0() -> None:
        # The scheduler, for an ungated pod, took gpu-0 from its own in-memory view;
        # its write lands while ours is on its way, and the watch delivers it.
        current = h.claim("theirs")
        current["status"] = {"allocation": allocation("node_a", "gpu-0")}
        h.cache.apply("resourceclaims", "MODIFIED", h.cluster.put("resourceclaims", current))

    h.cluster.before("replace_status", "resourceclaims", scheduler_allocates_gpu_0, name="c")
    h.placer.reconcile("default/p")
    assert h.devices("theirs") == [("node_a", "gpu-0")]
    assert h.devices("c") == [("node_a", "gpu-1")]
    assert scheduling_gates(h, "p") == []
    assert h.metrics.conflicts.labels("devices")._value.get() == 1


def test_a_role_without_the_binding_subresource_is_an_error_not_a_conflict() -> None:
    h = Harness()
    _cluster(h, node_a=1)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    # What the API server answers (validation, not authorization, does the check).
    words = 'cannot update resource "resourceclaims/binding" in API group "resource.k8s.io"'
    h.cluster.fail("replace_status", "resourceclaims", 422, message=words)
    assert h.reconcile("default/p").backoff is True
    assert h.metrics.conflicts.labels("resourceclaims")._value.get() == 0
    assert h.metrics.failures.labels("api-error")._value.get() == 1
    # An allocation that changed under us (422 "immutable") is a conflict: decide again.
    h.cluster.fail("replace_status", "resourceclaims", 422, message="field is immutable")
    h.reconcile("default/p")
    assert h.metrics.conflicts.labels("resourceclaims")._value.get() == 1
    assert h.devices("c") == [("node_a", "gpu-0")]
