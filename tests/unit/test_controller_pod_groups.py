"""Pod groups through the controller: the claims of every gated pod of a gang PodGroup are
placed in one decision, only when minCount pods exist and all of them fit; a group that
does not fit holds nothing and each pod says why; a failed write leaves no partial group.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
from controller_fixtures import (
    GATE,
    NS,
    Harness,
    add_gpu_nodes,
    claim,
    device_class,
    node,
    node_slice,
    pod,
    scheduling_gates,
)
from test_allocator_groups import _claim, _holding, _snapshot

from controller.app import Controller
from controller.cache.groups import GroupView
from controller.placement.grouping import _held_islands
from controller.settings import parse_settings
from dra_driver.allocator.groups import island_of
from tests.fakes.cluster import FakeCluster


def pod_group(name: str, min_count: int | None) -> dict[str, Any]:
    policy: dict[str, Any] = {"gang": {"minCount": min_count}} if min_count else {"basic": {}}
    return {
        "apiVersion": "scheduling.k8s.io/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"schedulingPolicy": policy},
    }


def member(name: str, group: str, count: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pod ``name`` of ``group`` with its own claim ``name-gpu`` of ``count`` GPUs."""
    body = pod(name, f"{name}-gpu")
    body["spec"]["schedulingGroup"] = {"podGroupName": group}
    return body, claim(f"{name}-gpu", count=count)


class GroupHarness(Harness):
    """The harness with PodGroups watched too (a cluster that serves them)."""

    def sync(self) -> None:
        super().sync()
        self.cache.replace("podgroups", self.cluster.list("podgroups").items)


def add_members(h: Harness, group: str, names: list[str], count: int = 1) -> None:
    for name in names:
        body, gpu_claim = member(name, group, count)
        h.add("resourceclaims", gpu_claim)
        h.add("pods", body)


def test_a_gang_is_placed_only_once_min_count_pods_exist_then_all_together() -> None:
    h = GroupHarness()
    add_gpu_nodes(h, {"node_a": 4, "node_b": 4})
    h.add("podgroups", pod_group("train", 4))
    add_members(h, "train", ["w0", "w1", "w2"])
    h.drain()
    assert all(h.devices(f"w{i}-gpu") == [] for i in range(3))
    assert all(scheduling_gates(h, f"w{i}") == [GATE] for i in range(3))
    add_members(h, "train", ["w3"])
    h.drain()
    devices = [d for i in range(4) for d in h.devices(f"w{i}-gpu")]
    assert len(set(devices)) == 4
    assert {pool for pool, _ in devices} == {"node_a"}  # kept together on one node
    assert all(scheduling_gates(h, f"w{i}") == [] for i in range(4))


def test_a_gang_that_does_not_fit_holds_nothing_and_each_pod_says_why() -> None:
    h = GroupHarness()
    add_gpu_nodes(h, {"node_a": 4})
    h.add("podgroups", pod_group("train", 4))
    add_members(h, "train", ["w0", "w1", "w2", "w3"], count=2)
    h.drain()
    for i in range(4):
        assert h.devices(f"w{i}-gpu") == []
        assert scheduling_gates(h, f"w{i}") == [GATE]
        (event,) = [e for e in h.events_for("Pod", f"w{i}") if e["reason"] == "GroupUnplaceable"]
        assert "minCount 4" in event["message"]
        assert "need 8 device(s)" in event["message"]
        assert "closest option places 2 of 4 pods" in event["message"]


def test_a_competing_gang_waits_holding_nothing_until_the_first_is_gone() -> None:
    h = GroupHarness()
    add_gpu_nodes(h, {"node_a": 4})
    h.add("podgroups", pod_group("a", 2), pod_group("b", 2))
    # Interleaved: each gang alone fits, both together do not.
    add_members(h, "a", ["a0"], count=2)
    add_members(h, "b", ["b0"], count=2)
    add_members(h, "a", ["a1"], count=2)
    add_members(h, "b", ["b1"], count=2)
    h.drain()
    placed = {name: bool(h.devices(f"{name}-gpu")) for name in ("a0", "a1", "b0", "b1")}
    assert placed == {"a0": True, "a1": True, "b0": False, "b1": False}
    # Gang a finishes: its pods and claims go; gang b gets the GPUs, both pods at once.
    for name in ("a0", "a1"):
        h.cluster.delete("pods", name, namespace=NS)
        h.cluster.remove("resourceclaims", f"{name}-gpu", namespace=NS)
    h.clock.advance(600)
    h.drain(rounds=40)
    assert len(h.devices("b0-gpu")) == 2 and len(h.devices("b1-gpu")) == 2
    assert scheduling_gates(h, "b0") == [] and scheduling_gates(h, "b1") == []


def test_a_failed_write_leaves_no_member_of_the_gang_allocated() -> None:
    h = GroupHarness()
    add_gpu_nodes(h, {"node_a": 4})
    h.add("podgroups", pod_group("train", 2))
    add_members(h, "train", ["w0", "w1"])
    h.cluster.fail("replace_status", "resourceclaims", 500, name="w1-gpu")
    h.sync()
    h.placer.reconcile(f"{NS}/w0")
    assert h.devices("w0-gpu") == [] and h.devices("w1-gpu") == []
    assert scheduling_gates(h, "w0") == [GATE] and scheduling_gates(h, "w1") == [GATE]


def test_pods_of_a_basic_group_or_where_pod_groups_are_not_served_are_placed_alone() -> None:
    h = GroupHarness()
    add_gpu_nodes(h, {"node_a": 4})
    h.add("podgroups", pod_group("loose", None))
    add_members(h, "loose", ["l0"])
    h.drain()
    assert h.devices("l0-gpu") != []
    plain = Harness()  # PodGroups never listed: the cluster does not serve them
    add_gpu_nodes(plain, {"node_a": 4})
    add_members(plain, "train", ["w0"])
    plain.drain()
    assert plain.devices("w0-gpu") != []


@pytest.mark.parametrize("status", [404, 403])
def test_a_cluster_without_pod_groups_does_not_hold_placement_up(status: int) -> None:
    cluster = FakeCluster()
    cluster.fail("list", "podgroups", status, times=1000)
    settings = parse_settings(["--identity", "c0", "--watch-timeout-seconds", "0.2"], environ={})
    controller = Controller(settings, cluster, workers=1)
    controller.start()
    try:
        assert controller.wait_synced(10)
        assert "podgroups" not in {r.resource for r in controller.reflectors}
    finally:
        controller.shutdown(timeout_s=5)


def test_the_running_controller_watches_pod_groups_and_places_a_gang_whole() -> None:
    cluster = FakeCluster()
    settings = parse_settings(
        ["--identity", "c0", "--watch-timeout-seconds", "0.2", "--no-manage-device-classes"],
        environ={},
    )
    controller = Controller(settings, cluster, workers=2)
    controller.start()
    try:
        assert controller.wait_synced(10)
        cluster.create("deviceclasses", device_class())
        cluster.create("nodes", node("node_a"))
        cluster.create("resourceslices", node_slice("node_a", 4))
        cluster.create("podgroups", pod_group("train", 2))
        body, gpu_claim = member("w0", "train", 2)
        cluster.create("resourceclaims", gpu_claim)
        cluster.create("pods", body)
        time.sleep(1.0)  # the controller had time to act; a lone member must wait
        assert not _allocation(cluster, "w0-gpu")
        body, gpu_claim = member("w1", "train", 2)
        cluster.create("resourceclaims", gpu_claim)
        cluster.create("pods", body)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            _allocation(cluster, "w0-gpu") and _allocation(cluster, "w1-gpu")
        ):
            time.sleep(0.05)
        assert _allocation(cluster, "w0-gpu") and _allocation(cluster, "w1-gpu")
    finally:
        controller.shutdown(timeout_s=5)


def _allocation(cluster: FakeCluster, name: str) -> dict[str, Any]:
    stored = cluster.get("resourceclaims", name, namespace=NS)
    found: dict[str, Any] = (stored.get("status") or {}).get("allocation") or {}
    return found


def test_a_member_placed_again_is_steered_to_the_islands_its_group_holds() -> None:
    # The islands come from the devices the group's claims hold: allocated claims count,
    # pending ones and claims not created yet do not.
    snapshot = _snapshot({"x": "dgx-h100", "y": "pairs-4xA100"})
    held = _holding(snapshot, "w0-gpu", 1, "y")
    view = SimpleNamespace(claims={"ml/w0": [held], "ml/w1": [_claim("w1-gpu", 1), None]})
    assert held.status is not None and held.status.allocation is not None
    (result,) = held.status.allocation.devices.results or []  # type: ignore[union-attr]
    on_y = island_of(snapshot, f"{result.driver}/{result.pool}/{result.device}", "y")
    on_x = island_of(snapshot, f"{result.driver}/x/gpu-0", "x")
    assert on_y is not None and on_x is not None and on_y != on_x
    assert _held_islands(cast(GroupView, view), snapshot) == {on_y}
    assert _held_islands(cast(GroupView, SimpleNamespace(claims={})), snapshot) == set()
