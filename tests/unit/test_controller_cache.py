"""The cache: decoding once, the allocator snapshot kept incrementally, assumed allocations,
node usage and which pods a change concerns."""

from __future__ import annotations

import threading
from typing import Any

from controller_fixtures import (
    GATE,
    FakeClock,
    allocation,
    claim,
    device_class,
    node,
    node_slice,
    pod,
)

from agent_kit.kube import Resource
from api.resource_v1 import ResourceClaim, ResourceClaimStatus
from controller.cache import ClusterCache, decode
from dra_driver.allocator import allocate
from tests.fakes.cluster import FakeCluster

DEVICE = "gpu.dra-driver.io/node-a/gpu-0"


def _stored(cluster: FakeCluster, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    return cluster.create(resource, obj)


def _cache() -> tuple[ClusterCache, list[str]]:
    notified: list[str] = []
    cache = ClusterCache(gate=GATE, on_change=notified.extend, clock=FakeClock())
    return cache, notified


def _base(cache: ClusterCache, cluster: FakeCluster) -> None:
    cache.replace("deviceclasses", [_stored(cluster, "deviceclasses", device_class())])
    cache.replace("nodes", [_stored(cluster, "nodes", node("node-a"))])
    cache.replace("resourceslices", [_stored(cluster, "resourceslices", node_slice("node-a", 2))])


def test_claim_changes_update_the_snapshot_without_a_rebuild() -> None:
    cluster = FakeCluster()
    cache, _ = _cache()
    _base(cache, cluster)
    snapshot = cache.snapshot()
    assert cache.rebuilds == 1
    held = _stored(cluster, "resourceclaims", claim("held"))
    held["status"] = {"allocation": allocation("node-a", "gpu-0")}
    cache.apply("resourceclaims", "MODIFIED", held)
    assert cache.snapshot() is snapshot and cache.rebuilds == 1
    assert snapshot.users(DEVICE) == ["claim default/held"]
    cache.apply("resourceclaims", "DELETED", held)
    assert snapshot.users(DEVICE) == []


def test_slice_content_changes_update_their_pool_and_version_bumps_do_nothing() -> None:
    cluster = FakeCluster()
    cache, _ = _cache()
    _base(cache, cluster)
    cache.snapshot()
    same = cluster.list("resourceslices").items[0]
    same["metadata"]["resourceVersion"] = "999"
    cache.apply("resourceslices", "MODIFIED", same)
    cache.snapshot()
    assert cache.rebuilds == 1 and cache.pool_updates == 0
    bigger = node_slice("node-a", 3, generation=2)
    cache.apply("resourceslices", "MODIFIED", bigger)
    assert len(cache.snapshot().view("node-a").candidates) == 3
    assert cache.rebuilds == 1 and cache.pool_updates == 1


def test_node_labels_rebuild_and_a_heartbeat_does_not() -> None:
    cluster = FakeCluster()
    cache, _ = _cache()
    _base(cache, cluster)
    cache.snapshot()
    beat = cluster.get("nodes", "node-a")
    beat["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    cache.apply("nodes", "MODIFIED", beat)
    cache.snapshot()
    assert cache.rebuilds == 1
    beat["metadata"]["labels"]["zone"] = "z"
    cache.apply("nodes", "MODIFIED", beat)
    cache.snapshot()
    assert cache.rebuilds == 2


def test_an_assumed_allocation_holds_until_the_watch_catches_up() -> None:
    cluster = FakeCluster()
    cache, _ = _cache()
    _base(cache, cluster)
    raw = _stored(cluster, "resourceclaims", claim("c"))
    cache.apply("resourceclaims", "ADDED", raw)
    snapshot = cache.snapshot()
    decided = allocate(snapshot, [cache.claim("default/c")])  # type: ignore[list-item]
    assumed = cache.claim("default/c")
    assert assumed is not None
    assumed = assumed.model_copy(deep=True)
    assumed.status = None
    assumed.status = ResourceClaimStatus(allocation=decided.results[0])
    cache.assume(assumed)
    assert snapshot.users(DEVICE) == ["claim default/c"]
    # An older version from the watch does not undo the decision while the write is in flight.
    cache.apply("resourceclaims", "MODIFIED", raw)
    assert snapshot.users(DEVICE) == ["claim default/c"]
    # The write returns version N; the watch still delivers N-1: kept. Then N: ours is gone,
    # the server's (identical) version counts.
    written = cluster.replace_status(
        "resourceclaims",
        {**raw, "status": {"allocation": allocation("node-a", "gpu-0")}},
    )
    cache.confirm(decode(ResourceClaim, written))
    cache.apply("resourceclaims", "MODIFIED", raw)
    assert snapshot.users(DEVICE) == ["claim default/c"]
    cache.apply("resourceclaims", "MODIFIED", written)
    assert cache.counts()["assumed"] == 0
    assert snapshot.users(DEVICE) == ["claim default/c"]


def test_forgetting_an_assumption_frees_its_devices() -> None:
    cluster = FakeCluster()
    cache, _ = _cache()
    _base(cache, cluster)
    raw = _stored(cluster, "resourceclaims", claim("c"))
    cache.apply("resourceclaims", "ADDED", raw)
    snapshot = cache.snapshot()
    with_allocation = {**raw, "status": {"allocation": allocation("node-a", "gpu-0")}}
    cache.assume(decode(ResourceClaim, with_allocation))
    assert snapshot.in_use(DEVICE)
    cache.forget("default/c")
    assert not snapshot.in_use(DEVICE)


def test_bound_pods_use_their_nodes_resources() -> None:
    cache, _ = _cache()
    cache.replace(
        "pods",
        [
            pod("a", gated=False, cpu="1", memory="1Gi", node_name="n"),
            pod("b", gated=False, cpu="500m", node_name="n"),
            pod("c", gated=False, cpu="8"),
        ],
    )
    usage = cache.node_usage()
    assert usage["n"].pods == 2
    assert usage["n"].requests.cpu == 1500
    assert "c" not in usage
    finished = pod("a", gated=False, cpu="1", node_name="n")
    finished["status"]["phase"] = "Succeeded"
    cache.apply("pods", "MODIFIED", finished)
    assert cache.node_usage()["n"].pods == 1
    # A pod released to the scheduler counts where it goes until it is bound.
    cache.apply("pods", "ADDED", pod("next", cpu="2"))
    next_pod = cache.pod("default/next")
    assert next_pod is not None
    cache.nominate(next_pod, "n")
    assert cache.node_usage()["n"].requests.cpu == 2500
    cache.apply("pods", "MODIFIED", pod("next", gated=False, cpu="2", node_name="n"))
    assert cache.node_usage()["n"].requests.cpu == 2500  # bound now, counted once
    assert cache.nominated_node("default/next") is None


def test_changes_notify_the_pods_they_concern() -> None:
    cluster = FakeCluster()
    cache, notified = _cache()
    _base(cache, cluster)
    cache.replace("pods", [pod("p", "c"), pod("running", gated=False, node_name="node-a")])
    notified.clear()
    cache.apply("resourceclaims", "ADDED", claim("c"))
    assert notified == ["default/p"]
    notified.clear()
    # A template claim names its owner pod before the pod's status names the claim.
    cache.apply("resourceclaims", "ADDED", claim("q-gpu-x", owner="q"))
    assert notified == ["default/q"]
    notified.clear()
    running = pod("running", gated=False, node_name="node-a")
    running["status"]["podIP"] = "10.0.0.1"
    cache.apply("pods", "MODIFIED", running)
    assert notified == []  # a running pod's updates concern no placement
    cache.waiting.add("default/p")
    cache.apply("resourceslices", "MODIFIED", node_slice("node-a", 4, generation=2))
    assert notified == ["default/p"]


def test_gated_pods_remember_when_they_were_first_seen() -> None:
    clock = FakeClock(50.0)
    cache = ClusterCache(gate=GATE, clock=clock)
    cache.apply("pods", "ADDED", pod("p"))
    clock.advance(5)
    cache.apply("pods", "MODIFIED", pod("p"))
    assert cache.gated_since == {"default/p": 50.0}


def test_objects_that_do_not_decode_are_set_aside() -> None:
    cache, _ = _cache()
    bad = node_slice("node-a")
    bad["spec"]["pool"]["generation"] = "one"
    cache.apply("resourceslices", "ADDED", bad)
    assert cache.counts()["resourceslices"] == 0
    assert "pool.generation" in " ".join(cache.rejected.values())


def test_a_placement_view_holds_the_lock_and_the_pods_claims_in_its_order() -> None:
    cluster = FakeCluster()
    cache, _ = _cache()
    _base(cache, cluster)
    for name in ("b", "a"):
        cache.apply("resourceclaims", "ADDED", _stored(cluster, "resourceclaims", claim(name)))
    cache.apply("pods", "ADDED", pod("p", "a", "missing", "b", cpu="1"))
    p = cache.pod("default/p")
    assert p is not None
    cache.nominate(p, "node-a")
    names, _ = p.claim_names()
    taken: list[bool] = []
    with cache.placement_view(p, names) as view:
        # Another worker cannot change what this decision reads until it is done.
        other = threading.Thread(target=lambda: taken.append(cache.lock.acquire(blocking=False)))
        other.start()
        other.join()
        assert [c.metadata.name if c else None for c in view.claims] == ["a", None, "b"]
        assert view.nominated == "node-a"
        assert view.usage["node-a"].requests.cpu == 1000
        assert list(view.nodes) == ["node-a"]
        assert view.snapshot() is cache.snapshot()
    assert taken == [False]


def test_a_device_held_twice_comes_with_every_claim_and_its_pods() -> None:
    cluster = FakeCluster()
    cache, _ = _cache()
    _base(cache, cluster)
    for name in ("ours", "theirs"):
        raw = _stored(cluster, "resourceclaims", claim(name))
        raw["status"] = {"allocation": allocation("node-a", "gpu-0")}
        cache.apply("resourceclaims", "MODIFIED", raw)
    cache.replace("pods", [pod("p", "ours"), pod("q", "theirs", gated=False)])
    ours = cache.claim("default/ours")
    assert ours is not None
    [held] = cache.conflicts([ours])
    assert held.conflict.device == DEVICE and held.conflict.others == ("default/theirs",)
    assert held.keys == ("default/ours", "default/theirs")
    assert [p.key for p in held.claims["default/theirs"].pods] == ["default/q"]
    assert held.claims["default/theirs"].claim == cache.claim("default/theirs")
    # The same, asked from the pod: its allocated claims as decisions see them.
    p = cache.pod("default/p")
    assert p is not None
    assert cache.pod_conflicts(p) == [held]
    # A claim released meanwhile leaves nothing held twice.
    released = cluster.get("resourceclaims", "theirs", namespace="default")
    cache.apply("resourceclaims", "MODIFIED", {**released, "status": {}})
    assert cache.conflicts([ours]) == []
