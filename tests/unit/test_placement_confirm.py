"""The confirm step: a gated pod's allocations settle, are checked again, then the gate goes.

The race it closes: the kube-scheduler, allocating for an ungated pod, picks a
device from its own view just before its informer sees our write, and writes
it to another claim after our write (two objects: no conflict). These tests
play the scheduler by writing to the fake API server between our write and
the confirm.
"""

from __future__ import annotations

from typing import Any

import allocator_fixtures as af
import pytest
from controller_fixtures import (
    DRIVER,
    GATE,
    RESOURCES,
    Harness,
    SwitchFence,
    add_gpu_nodes,
    allocation,
    claim,
    object_writes,
    pod,
    scheduling_gates,
)

from agent_kit.events import EventRecorder
from api.resource_v1 import ResourceClaim
from controller.cache import ClusterCache
from controller.metrics import ControllerMetrics
from controller.placement import Placer, Result
from dra_driver.allocator import Snapshot
from dra_driver.allocator.conflicts import DeviceConflict, device_conflicts

SETTLE = 2.0
PLACED_FOR = f"{DRIVER}/placed-for"


def _harness(nodes: dict[str, int], *, settle_s: float = SETTLE, **options: Any) -> Harness:
    h = Harness(**options)
    h.placer.settle_s = settle_s
    add_gpu_nodes(h, nodes)
    return h


def _reasons(h: Harness, kind: str, name: str) -> list[str]:
    return [e["reason"] for e in h.events_for(kind, name)]


def _scheduler_allocates(h: Harness, name: str, device: str, *, for_pod: str | None) -> None:
    """What the kube-scheduler writes for an ungated pod: a stamped allocation, reserved."""
    current = h.claim(name)
    status: dict[str, Any] = {
        "allocation": {
            **allocation("node_a", device),
            "allocationTimestamp": "2026-11-27T12:00:00Z",
        }
    }
    if for_pod is not None:
        uid = h.pod(for_pod)["metadata"]["uid"]
        status["reservedFor"] = [{"resource": "pods", "name": for_pod, "uid": uid}]
    current["status"] = status
    h.cluster.put("resourceclaims", current)


def _conflicts(h: Harness, kind: str, outcome: str) -> float:
    value: float = h.metrics.device_conflicts.labels(kind, outcome)._value.get()
    return value


# -- no conflict: the gate goes after the delay ---------------------------------------------


def test_the_gate_stays_on_until_the_allocation_has_settled() -> None:
    h = _harness({"node_a": 2})
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    assert h.reconcile("default/p") == Result(requeue_after=SETTLE)
    assert h.devices("c") == [("node_a", "gpu-0")]
    assert scheduling_gates(h, "p") == [GATE]
    # The watch delivers our own write and brings the pod back early: it keeps waiting,
    # for what is left of the delay, and writes nothing.
    h.clock.advance(0.5)
    before = len(h.cluster.calls)
    result = h.reconcile("default/p")
    assert result.requeue_after == pytest.approx(SETTLE - 0.5)
    assert object_writes(h.cluster.calls[before:]) == []
    assert scheduling_gates(h, "p") == [GATE]
    h.clock.advance(SETTLE - 0.5)
    assert h.reconcile("default/p") == Result()
    assert scheduling_gates(h, "p") == []
    assert h.devices("c") == [("node_a", "gpu-0")]
    assert object_writes(h.cluster.calls[before:]) == [("patch", "pods", "p")]
    assert "Placed" in _reasons(h, "Pod", "p")
    # The latency from gate seen to gate removed includes the delay.
    assert h.metrics.latency._sum.get() == pytest.approx(SETTLE)


def test_other_pods_are_placed_while_one_settles_and_never_on_its_devices() -> None:
    h = _harness({"node_a": 2})
    h.add("resourceclaims", claim("c"), claim("d"))
    h.add("pods", pod("p", "c"), pod("q", "d"))
    assert h.reconcile("default/p").requeue_after == SETTLE
    assert h.reconcile("default/q").requeue_after == SETTLE
    assert h.devices("c") == [("node_a", "gpu-0")]
    assert h.devices("d") == [("node_a", "gpu-1")]
    # The worker hands p back to the queue with the delay (the watches' keys taken first).
    while (key := h.queue.get(timeout_s=0)) is not None:
        h.queue.done(key)
    h.queue.add_after("default/p", SETTLE)
    assert h.queue.get(timeout_s=0) is None
    h.clock.advance(SETTLE)
    assert h.queue.get(timeout_s=0) == "default/p"


def test_a_zero_delay_confirms_right_after_the_write() -> None:
    h = _harness({"node_a": 2}, settle_s=0.0)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    assert h.reconcile("default/p") == Result()
    assert scheduling_gates(h, "p") == []


# -- the race: the scheduler's write lands after ours -----------------------------------------


def test_a_device_the_scheduler_took_meanwhile_is_given_up_and_the_pod_placed_again() -> None:
    h = _harness({"node_a": 2})
    h.add("resourceclaims", claim("c"), claim("theirs"))
    h.add("pods", pod("p", "c"), pod("q", "theirs", gated=False))
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-0")]
    # The scheduler decided on gpu-0 for q before its informer saw our write.
    _scheduler_allocates(h, "theirs", "gpu-0", for_pod="q")
    h.clock.advance(SETTLE)
    result = h.reconcile("default/p")
    assert h.devices("theirs") == [("node_a", "gpu-0")]  # never touched
    assert h.devices("c") == [("node_a", "gpu-1")]
    # The new allocation settles in its turn before the gate goes.
    assert result == Result(requeue_after=SETTLE)
    assert scheduling_gates(h, "p") == [GATE]
    (event,) = [e for e in h.events_for("Pod", "p") if e["reason"] == "PlacementConflict"]
    assert f"device {DRIVER}/node_a/gpu-0 of claim default/c" in event["message"]
    assert "default/theirs" in event["message"]
    assert "PlacementConflict" in _reasons(h, "ResourceClaim", "c")
    assert _conflicts(h, "exclusive", "yielded") == 1
    assert h.metrics.conflicts.labels("devices")._value.get() == 1
    h.clock.advance(SETTLE)
    h.reconcile("default/p")
    assert scheduling_gates(h, "p") == []
    assert h.devices("c") == [("node_a", "gpu-1")]


def test_a_pod_that_keeps_losing_its_devices_backs_off() -> None:
    h = _harness({"node_a": 3}, settle_s=0.0, max_retries=0)
    h.add("resourceclaims", claim("c"), claim("theirs"))
    h.add("pods", pod("p", "c"), pod("q", "theirs", gated=False))
    h.sync()

    def scheduler_takes_gpu_0() -> None:
        if not h.devices("theirs"):
            _scheduler_allocates(h, "theirs", "gpu-0", for_pod="q")
            h.cache.apply("resourceclaims", "MODIFIED", h.claim("theirs"))

    h.cluster.before("replace_status", "resourceclaims", scheduler_takes_gpu_0, name="c")
    # No retry allowed: the first yield ends the round, released, gate on, with a backoff.
    assert h.placer.reconcile("default/p") == Result(backoff=True)
    assert h.devices("c") == []
    assert scheduling_gates(h, "p") == [GATE]
    (event,) = [e for e in h.events_for("Pod", "p") if e["reason"] == "PlacementConflict"]
    assert "after a backoff" in event["message"]
    # The next round starts afresh and goes through.
    h.reconcile("default/p")
    assert h.devices("c") == [("node_a", "gpu-1")]
    assert scheduling_gates(h, "p") == []


def test_no_release_of_a_claim_a_pod_has_reserved_meanwhile() -> None:
    h = _harness({"node_a": 2})
    h.add("resourceclaims", claim("c"), claim("theirs"))
    h.add("pods", pod("p", "c"), pod("q", "theirs", gated=False))
    h.reconcile("default/p")
    _scheduler_allocates(h, "theirs", "gpu-0", for_pod="q")
    # Ours reserved too (it cannot be, while the pod is gated; but never release it).
    ours = h.claim("c")
    ours["status"]["reservedFor"] = [{"resource": "pods", "name": "p", "uid": "u"}]
    h.cluster.put("resourceclaims", ours)
    h.clock.advance(SETTLE)
    before = len(h.cluster.calls)
    assert h.reconcile("default/p") == Result(backoff=True)
    assert object_writes(h.cluster.calls[before:]) == []
    assert h.devices("c") == [("node_a", "gpu-0")]
    assert scheduling_gates(h, "p") == [GATE]


# -- both claims ours ------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["pa", "pb"])
def test_two_claims_of_ours_on_one_device_resolve_the_same_way_in_any_order(first: str) -> None:
    h = _harness({"node_a": 2}, settle_s=0.0)
    h.add("resourceclaims", claim("ca"), claim("cb"))
    h.add("pods", pod("pa", "ca"), pod("pb", "cb"))
    for claim_name, pod_name in (("ca", "pa"), ("cb", "pb")):
        current = h.claim(claim_name)
        current["metadata"]["annotations"] = {PLACED_FOR: h.pod(pod_name)["metadata"]["uid"]}
        current["status"] = {"allocation": allocation("node_a", "gpu-0")}
        h.cluster.put("resourceclaims", current)
    second = "pb" if first == "pa" else "pa"
    h.reconcile(f"default/{first}")
    h.reconcile(f"default/{second}")
    # The claim whose key sorts first keeps the device; the other one moves.
    assert h.devices("ca") == [("node_a", "gpu-0")]
    assert h.devices("cb") == [("node_a", "gpu-1")]
    assert scheduling_gates(h, "pa") == [] and scheduling_gates(h, "pb") == []
    assert _conflicts(h, "exclusive", "yielded") == 1


# -- a leader change between the write and the confirm ----------------------------------------


def _replica(h: Harness) -> tuple[Placer, ClusterCache]:
    """A second replica over the same API server: its own cache, metrics and Events."""
    cache = ClusterCache(gate=GATE, clock=h.clock)
    placer = Placer(
        h.cluster,
        cache,
        EventRecorder(
            h.cluster,
            component="dra-driver-controller",
            instance="b",
            interval_s=60.0,
            clock=h.clock,
        ),
        ControllerMetrics(),
        driver_name=DRIVER,
        settle_s=SETTLE,
        clock=h.clock,
    )
    return placer, cache


def _sync(h: Harness, cache: ClusterCache) -> None:
    for resource in RESOURCES:
        cache.replace(resource, h.cluster.list(resource).items)


def test_a_new_leader_confirms_written_allocations_instead_of_placing_again() -> None:
    fence = SwitchFence()
    h = _harness({"node_a": 2}, fence=fence)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    fence.open = False  # the leader loses its lease while the allocation settles
    h.clock.advance(SETTLE)
    before = len(h.cluster.calls)
    h.reconcile("default/p")
    assert object_writes(h.cluster.calls[before:]) == []
    new_leader, cache = _replica(h)
    _sync(h, cache)
    # It cannot know when the allocation was written: it waits a whole delay, writing nothing.
    assert new_leader.reconcile("default/p") == Result(requeue_after=SETTLE)
    assert object_writes(h.cluster.calls[before:]) == []
    h.clock.advance(SETTLE)
    _sync(h, cache)
    assert new_leader.reconcile("default/p") == Result()
    assert object_writes(h.cluster.calls[before:]) == [("patch", "pods", "p")]
    assert h.devices("c") == [("node_a", "gpu-0")]
    assert scheduling_gates(h, "p") == []


def test_a_new_leader_finds_the_race_its_predecessor_did_not_live_to_see() -> None:
    fence = SwitchFence()
    h = _harness({"node_a": 2}, fence=fence)
    h.add("resourceclaims", claim("c"), claim("theirs"))
    h.add("pods", pod("p", "c"), pod("q", "theirs", gated=False))
    h.reconcile("default/p")
    fence.open = False
    _scheduler_allocates(h, "theirs", "gpu-0", for_pod="q")
    new_leader, cache = _replica(h)
    _sync(h, cache)
    new_leader.reconcile("default/p")
    h.clock.advance(SETTLE)
    _sync(h, cache)
    assert new_leader.reconcile("default/p") == Result(requeue_after=SETTLE)
    assert h.devices("c") == [("node_a", "gpu-1")]
    assert scheduling_gates(h, "p") == [GATE]
    h.clock.advance(SETTLE)
    _sync(h, cache)
    new_leader.reconcile("default/p")
    assert scheduling_gates(h, "p") == []


# -- after the gate: too late to undo, so tell an admin ----------------------------------------


def test_a_conflict_found_after_the_gate_is_reported_once_on_the_pod_and_both_claims() -> None:
    h = _harness({"node_a": 2}, settle_s=0.0)
    h.add("resourceclaims", claim("c"), claim("theirs"))
    h.add("pods", pod("p", "c"), pod("q", "theirs", gated=False))
    h.reconcile("default/p")
    assert scheduling_gates(h, "p") == []
    _scheduler_allocates(h, "theirs", "gpu-0", for_pod="q")
    h.reconcile("default/p")
    h.reconcile("default/p")
    (event,) = [e for e in h.events_for("Pod", "p") if e["reason"] == "DeviceConflict"]
    assert event["type"] == "Warning"
    assert f"device {DRIVER}/node_a/gpu-0" in event["message"]
    assert "claim default/c" in event["message"] and "claim default/theirs" in event["message"]
    assert "DeviceConflict" in _reasons(h, "ResourceClaim", "c")
    assert "DeviceConflict" in _reasons(h, "ResourceClaim", "theirs")
    assert _conflicts(h, "exclusive", "after-gate") == 1
    # Nothing is released: the pod may be bound any moment.
    assert h.devices("c") == [("node_a", "gpu-0")]


def test_a_late_write_after_our_pod_is_bound_is_reported_through_the_other_pod() -> None:
    h = _harness({"node_a": 2}, settle_s=0.0)
    h.add("resourceclaims", claim("c"), claim("theirs"))
    h.add("pods", pod("p", "c"), pod("q", "theirs", gated=False))
    h.reconcile("default/p")
    bound = h.pod("p")
    bound["spec"]["nodeName"] = "node_a"
    h.cluster.put("pods", bound)
    h.reconcile("default/p")
    assert h.placer.placed_pods() == {}
    # The scheduler's write lands now; the watch brings back q, the pod of that claim.
    _scheduler_allocates(h, "theirs", "gpu-0", for_pod="q")
    h.reconcile("default/q")
    h.reconcile("default/q")
    for kind, name in (("Pod", "p"), ("Pod", "q"), ("ResourceClaim", "c")):
        (event,) = [e for e in h.events_for(kind, name) if e["reason"] == "DeviceConflict"]
        assert "default/p" in event["message"] and "default/q" in event["message"]
    assert _conflicts(h, "exclusive", "after-gate") == 1


def test_two_claims_the_scheduler_wrote_are_not_ours_to_report() -> None:
    h = _harness({"node_a": 2}, settle_s=0.0)
    h.add("resourceclaims", claim("x"), claim("y"))
    h.add("pods", pod("q", "x", gated=False), pod("r", "y", gated=False))
    _scheduler_allocates(h, "x", "gpu-0", for_pod="q")
    _scheduler_allocates(h, "y", "gpu-0", for_pod="r")
    h.reconcile("default/q")
    assert "DeviceConflict" not in _reasons(h, "Pod", "q")
    assert _conflicts(h, "exclusive", "after-gate") == 0


def test_a_placed_pod_bound_without_conflict_reports_nothing() -> None:
    h = _harness({"node_a": 2}, settle_s=0.0)
    h.add("resourceclaims", claim("c"))
    h.add("pods", pod("p", "c"))
    h.reconcile("default/p")
    bound = h.pod("p")
    bound["spec"]["nodeName"] = "node_a"
    h.cluster.put("pods", bound)
    h.reconcile("default/p")
    assert "DeviceConflict" not in _reasons(h, "Pod", "p")
    assert h.placer.placed_pods() == {}


# -- device_conflicts: the allocator's notion of in use ---------------------------------------


def _snapshot(*claims: ResourceClaim, devices: list[dict[str, Any]] | None = None) -> Snapshot:
    slices = [af.resource_slice("s", devices if devices is not None else af.gpus(2))]
    return Snapshot.build(slices=slices, classes=[af.device_class()], claims=claims)


def test_two_exclusive_holders_conflict_and_admin_access_never_does() -> None:
    a = af.holding("a", "gpu-0")
    b = af.holding("b", "gpu-0")
    admin = af.holding("admin", "gpu-0", adminAccess=True)
    snapshot = _snapshot(a, b, admin)
    assert device_conflicts(snapshot, a) == [
        DeviceConflict("default/a", f"{af.DRIVER}/node-a/gpu-0", "exclusive", ("default/b",))
    ]
    assert device_conflicts(snapshot, admin) == []
    assert device_conflicts(_snapshot(a, admin), a) == []


def _share(name: str, memory: str, serial: int) -> ResourceClaim:
    return af.claim(
        name,
        af.exact("gpu"),
        results=[
            af.result(
                "gpu-0",
                shareID=f"00000000-0000-0000-0000-{serial:012d}",
                consumedCapacity={"memory": memory},
            )
        ],
    )


def test_shares_conflict_only_beyond_the_devices_capacity() -> None:
    shared = [af.device("gpu-0", allowMultipleAllocations=True, capacity={"memory": "80Gi"})]
    fits = [_share("a", "40Gi", 1), _share("b", "40Gi", 2)]
    assert device_conflicts(_snapshot(*fits, devices=shared), fits[0]) == []
    over = [_share("a", "50Gi", 1), _share("b", "40Gi", 2)]
    (conflict,) = device_conflicts(_snapshot(*over, devices=shared), over[0])
    assert (conflict.kind, conflict.others) == ("capacity", ("default/b",))
    # A whole-device holder conflicts with any share.
    whole = af.holding("w", "gpu-0")
    (conflict,) = device_conflicts(_snapshot(fits[0], whole, devices=shared), fits[0])
    assert (conflict.kind, conflict.others) == ("exclusive", ("default/w",))


def test_partitions_that_overcommit_their_counters_conflict() -> None:
    partitions = [
        af.device(name, counters={"gpu-0-counters": {"memory": "80Gi"}})
        for name in ("gpu-0-whole", "gpu-0-mig")
    ]
    slice_ = af.resource_slice(
        "s",
        partitions,
        counter_sets=[af.counter_set("gpu-0-counters", {"memory": "80Gi"})],
    )
    whole = af.holding("whole", "gpu-0-whole")
    mig = af.holding("mig", "gpu-0-mig")
    snapshot = Snapshot.build(slices=[slice_], classes=[af.device_class()], claims=[whole, mig])
    (conflict,) = device_conflicts(snapshot, whole)
    assert conflict == DeviceConflict(
        "default/whole", f"{af.DRIVER}/node-a/gpu-0-whole", "counters", ("default/mig",)
    )
    alone = Snapshot.build(slices=[slice_], classes=[af.device_class()], claims=[whole])
    assert device_conflicts(alone, whole) == []
