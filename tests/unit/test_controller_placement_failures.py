"""The placement reconciler against the in-memory API server when things go wrong.

Conflicts and all-or-nothing writes, the leader fence, pods that cannot be placed (and
the events that say why), and placed pods the scheduler then cannot bind.
"""

from __future__ import annotations

from controller_fixtures import (
    GATE,
    NS,
    Harness,
    SwitchFence,
    add_gpu_nodes,
    allocation,
    claim,
    node,
    node_slice,
    object_writes,
    pod,
    scheduling_gates,
    unschedulable,
)

from agent_kit.kube import api_error

# -- conflicts and all-or-nothing --------------------------------------------------------------


def test_a_conflict_rereads_and_decides_again() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 2})
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
    add_gpu_nodes(h, {"node_a": 2, "node_b": 2})
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
    add_gpu_nodes(h, {"node_a": 2})
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
    add_gpu_nodes(h, {"node_a": 2})
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
    add_gpu_nodes(h, {"node_a": 2})
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.cluster.before("patch", "pods", lambda: h.cluster.remove("pods", "p", namespace=NS))
    h.reconcile("default/p")
    assert h.devices("c") == []


# -- the leader fence ----------------------------------------------------------------------


def test_losing_the_leadership_mid_placement_stops_every_write() -> None:
    fence = SwitchFence()
    h = Harness(fence=fence)
    add_gpu_nodes(h, {"node_a": 2})
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
    add_gpu_nodes(h, {"node_a": 2})
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    before = len(h.cluster.calls)
    h.reconcile("default/p")
    assert object_writes(h.cluster.calls[before:]) == []


def test_a_new_leader_releases_a_partial_placement_that_no_longer_fits() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 1, "node_b": 2})
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


# -- pods that cannot be placed -----------------------------------------------------------------


def test_an_unplaceable_pod_gets_an_event_and_is_placed_once_devices_appear() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 1})
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


def test_a_claim_naming_a_missing_class_is_reported() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 1})
    h.add("resourceclaims", claim("c", device_class_name="nope"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    (event,) = h.events_for("Pod", "p")
    assert event["reason"] == "PlacementFailed" and '"nope"' in event["message"]


def test_a_pod_waits_for_its_template_claims() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 1})
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
    add_gpu_nodes(h, {"node_a": 1, "node_b": 1, "node_c": 1})
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-0")]
    # Reserved for its pod with the allocation, while the gate held the pod back.
    assert _reserved_for(h, "c") == [
        h.cluster.get("pods", "p", namespace="default")["metadata"]["uid"]
    ]
    h.set_status("p", unschedulable())
    h.reconcile("default/p")
    # First the reservation goes, the allocation stays (a binding that raced this would
    # still find its claim allocated); the next look releases and places again.
    assert _reserved_for(h, "c") == []
    assert h.devices("c") == [("node_a", "gpu-0")]
    h.reconcile("default/p")
    assert h.devices("c") == [("node_b", "gpu-0")]
    # Placed again for a pod without the gate: the scheduler reserves it when it binds.
    assert _reserved_for(h, "c") == []
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
    add_gpu_nodes(h, {"node_a": 1, "node_b": 1})
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
    add_gpu_nodes(h, {"node_a": 1})
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
    add_gpu_nodes(h, {"node_a": 1})
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
    add_gpu_nodes(h, {"node_a": 2})
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
    add_gpu_nodes(h, {"node_a": 2})
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
    # Our pod's own reservation did not keep the claim while the pod was gated; the
    # claim was written again, reserved for the pod once.
    uid = h.cluster.get("pods", "p", namespace="default")["metadata"]["uid"]
    assert _reserved_for(h, "c") == [uid]
    assert _reserved_for(h, "theirs") == []


def test_a_role_without_the_binding_subresource_is_an_error_not_a_conflict() -> None:
    h = Harness()
    add_gpu_nodes(h, {"node_a": 1})
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


def _reserved_for(h: Harness, name: str) -> list[str]:
    stored = h.cluster.get("resourceclaims", name, namespace="default")
    return [ref["uid"] for ref in (stored.get("status") or {}).get("reservedFor") or []]
