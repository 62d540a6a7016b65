"""The cache follows ResourceSlice changes pool by pool, never rebuilding its snapshot, and
ends where a cache fed the same objects at once (one full build) would be."""

from __future__ import annotations

import random
from typing import Any

import pytest
from allocator_fixtures import DRIVER, holding, resource_slice
from test_allocator_snapshot_pools import (
    CLASSES,
    NODES,
    allocation_answers,
    random_slice,
    snapshot_state,
)

from api.resource_v1 import dump
from controller.cache import ClusterCache


def _raw(model: Any) -> dict[str, Any]:
    return dump(model)


def _fresh(slices: dict[str, dict[str, Any]], claims: list[dict[str, Any]]) -> ClusterCache:
    cache = ClusterCache()
    cache.replace("deviceclasses", [_raw(c) for c in CLASSES])
    cache.replace("nodes", [_raw(n) for n in NODES])
    cache.replace("resourceclaims", claims)
    cache.replace("resourceslices", list(slices.values()))
    return cache


def _unreadable(name: str) -> dict[str, Any]:
    """A slice that decodes but whose node selector the allocator cannot evaluate."""
    return _raw(
        resource_slice(
            name,
            node=None,
            pool="unreadable",
            nodeSelector={
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["x"]}]}
                ]
            },
        )
    )


@pytest.mark.parametrize("seed", range(8))
def test_slice_changes_update_pools_and_match_a_full_build(seed: int) -> None:
    rng = random.Random(seed)
    slices: dict[str, dict[str, Any]] = {}
    for i in range(8):
        slices[f"s{i}"] = _raw(random_slice(rng, f"s{i}"))
    claims = [_raw(holding("held", "gpu-0", pool="node-0"))]
    live = _fresh(slices, claims)
    live.snapshot()
    serial = 8
    for step in range(30):
        roll = rng.random()
        if roll < 0.4 or not slices:
            serial += 1
            name = f"s{serial}"
            slices[name] = (
                _unreadable(name) if rng.random() < 0.1 else _raw(random_slice(rng, name))
            )
            live.apply("resourceslices", "ADDED", slices[name])
        elif roll < 0.75:
            name = rng.choice(list(slices))
            slices[name] = _raw(random_slice(rng, name))
            live.apply("resourceslices", "MODIFIED", slices[name])
        else:
            name = rng.choice(list(slices))
            live.apply("resourceslices", "DELETED", slices.pop(name))
        fresh = _fresh(slices, claims)
        assert snapshot_state(live.snapshot()) == snapshot_state(fresh.snapshot()), step
        assert allocation_answers(live.snapshot()) == allocation_answers(fresh.snapshot()), step
    assert live.rebuilds == 1
    assert live.pool_updates == 30


def test_a_slice_moving_to_another_pool_leaves_the_old_pool() -> None:
    cache = _fresh({}, [])
    first = _raw(resource_slice("s", [], node="node-0", pool="old"))
    first["spec"]["devices"] = [{"name": "gpu-0"}]
    cache.apply("resourceslices", "ADDED", first)
    snapshot = cache.snapshot()
    assert snapshot.pool_node(DRIVER, "old") == "node-0"
    moved = {**first, "spec": {**first["spec"], "pool": {**first["spec"]["pool"], "name": "new"}}}
    cache.apply("resourceslices", "MODIFIED", moved)
    assert cache.snapshot() is snapshot
    assert snapshot.pool_node(DRIVER, "old") is None
    assert snapshot.pool_node(DRIVER, "new") == "node-0"
    assert [d.id for d in snapshot.view("node-0").candidates] == [f"{DRIVER}/new/gpu-0"]


def test_an_unreadable_slice_is_set_aside_and_the_rest_of_its_change_applies() -> None:
    cache = _fresh({}, [])
    snapshot = cache.snapshot()
    cache.apply("resourceslices", "ADDED", _unreadable("bad"))
    assert "slice bad" in cache.rejected
    cache.apply("resourceslices", "ADDED", _raw(resource_slice("good", [], node="node-4")))
    assert cache.snapshot() is snapshot
    assert "node-4" in snapshot.node_names
    assert "unreadable" not in {p.generation.pool for p in snapshot.view("node-4").pools}


def test_a_relist_of_changed_slices_is_one_pool_update() -> None:
    rng = random.Random(7)
    slices = {f"s{i}": _raw(random_slice(rng, f"s{i}")) for i in range(12)}
    live = _fresh(slices, [])
    live.snapshot()
    for name in ["s0", "s3", "s5"]:
        slices[name] = _raw(random_slice(rng, name))
    del slices["s7"]
    slices["s12"] = _raw(random_slice(rng, "s12"))
    live.replace("resourceslices", list(slices.values()))
    assert live.pool_updates == 1 and live.rebuilds == 1
    fresh = _fresh(slices, [])
    assert snapshot_state(live.snapshot()) == snapshot_state(fresh.snapshot())
    assert allocation_answers(live.snapshot()) == allocation_answers(fresh.snapshot())
    live.replace("resourceslices", list(slices.values()))
    assert live.pool_updates == 1
