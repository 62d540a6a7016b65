"""Slice changes applied to a snapshot pool by pool answer exactly as a snapshot built again.

:meth:`Snapshot.replace_pools` keeps every record and cache of the pools a
change does not touch. A seeded random walk of slice additions, updates
(devices, generations, slice counts, a slice moving to another pool) and
deletions, interleaved with allocations and releases, must leave the snapshot
equal to one built from scratch: the same nodes, the same view from every node,
the same counters and usage, and the same allocation for every claim shape under
every policy.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pytest
from allocator_fixtures import (
    DRIVER,
    claim,
    counter_set,
    counting_ids,
    device,
    device_class,
    exact,
    holding,
    node,
    resource_slice,
)

from api.errors import InvalidInputError, UnsatisfiableError
from api.resource_v1 import Node, ResourceClaim, ResourceSlice
from dra_driver.allocator import POLICIES, Snapshot, allocate

CLASSES = [
    device_class("gpu", f'device.attributes["{DRIVER}"].type == "gpu"'),
    device_class("mig", f'device.attributes["{DRIVER}"].type == "mig"'),
]
SHAPES = [
    [exact("gpu", "gpu")],
    [exact("gpu", "gpu", count=2)],
    [exact("m", "mig")],
    [exact("gpu", "gpu"), exact("m", "mig")],
]
#: Nodes with a Node object (labels for node selectors); node-4 and node-5 only
#: exist while a slice names them.
NODES = [node("node-0", zone="z1"), node("node-1", zone="z1"), node("node-2"), node("node-3")]
NODE_NAMES = ["node-0", "node-1", "node-2", "node-3", "node-4", "node-5"]
SHARED_POOLS = ["shared-all", "shared-z1", "shared-per-device"]


def _key(slice_: ResourceSlice) -> tuple[str, str]:
    return (slice_.spec.driver, slice_.spec.pool.name)


def _devices(rng: random.Random, with_migs: bool) -> list[dict[str, Any]]:
    found = [device(f"gpu-{i}", attributes={"type": "gpu"}) for i in range(rng.randint(0, 3))]
    if with_migs:
        found += [
            device(f"mig-{m}", attributes={"type": "mig"}, counters={"gpu": {f"s{m % 2}": "1"}})
            for m in range(rng.randint(1, 3))
        ]
    return found


def random_slice(rng: random.Random, name: str) -> ResourceSlice:
    """A slice of a random pool: node-local (its pool spread over up to two slices,
    counters in either), or one of the shared pools."""
    generation = rng.randint(1, 2)
    count = rng.randint(1, 2)
    if rng.random() < 0.7:
        where = rng.choice(NODE_NAMES)
        pool = rng.choice([where, f"{where}-extra"])
        with_migs = rng.random() < 0.5
        counters = [counter_set("gpu", {"s0": "1", "s1": "1"})] if rng.random() < 0.5 else []
        return resource_slice(
            name,
            _devices(rng, with_migs),
            node=where,
            pool=pool,
            generation=generation,
            count=count,
            counter_sets=counters,
        )
    pool = rng.choice(SHARED_POOLS)
    devices = _devices(rng, with_migs=False)
    if pool == "shared-all":
        return resource_slice(
            name, devices, node=None, pool=pool, generation=generation, allNodes=True
        )
    if pool == "shared-z1":
        selector = {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}
            ]
        }
        return resource_slice(
            name, devices, node=None, pool=pool, generation=generation, nodeSelector=selector
        )
    for item in devices:
        target = rng.choice([*NODE_NAMES, None])
        item.update({"nodeName": target} if target is not None else {"allNodes": True})
    return resource_slice(
        name,
        devices,
        node=None,
        pool=pool,
        generation=generation,
        perDeviceNodeSelection=True,
    )


def snapshot_state(snap: Snapshot) -> dict[str, Any]:
    """Everything an allocation reads from the slices and the in-use state."""
    views: dict[str | None, Any] = {}
    for name in [*snap.node_names, None]:
        view = snap.view(name)
        views[name] = {
            "pools": [
                (
                    pool.label,
                    pool.generation.generation,
                    [s.name for s in pool.slices],
                    pool.incomplete,
                    pool.invalid,
                    sorted(
                        (f"{k[0]}/{k[1]}", str(v))
                        for k, v in snap.counters_available(pool.generation).items()
                    ),
                )
                for pool in view.pools
            ],
            "candidates": [d.id for d in view.candidates],
            "off_node": sorted(view.off_node),
            "usage": snap.node_usage(name),
        }
    return {"nodes": list(snap.node_names), "views": views}


def allocation_answers(snap: Snapshot) -> list[Any]:
    """The allocation of every claim shape under every policy (or that there is none)."""
    answers: list[Any] = []
    for index, requests in enumerate(SHAPES):
        for policy in POLICIES:
            try:
                found = allocate(
                    snap,
                    [claim(f"probe-{index}", *requests)],
                    policy=policy,
                    share_id=counting_ids(),
                )
            except UnsatisfiableError:
                answers.append((index, policy, None))
                continue
            answers.append((index, policy, found.node, [r.model_dump() for r in found.results]))
    return answers


def _published(slices: Iterable[ResourceSlice]) -> list[tuple[str, str]]:
    return [(s.spec.pool.name, d.name) for s in slices for d in s.spec.devices or []]


def _rebuild(
    slices: dict[str, ResourceSlice], held: list[ResourceClaim], nodes: list[Node]
) -> Snapshot:
    return Snapshot.build(slices=list(slices.values()), classes=CLASSES, claims=held, nodes=nodes)


@pytest.mark.parametrize("seed", range(16))
def test_pool_updates_match_a_snapshot_built_from_scratch(seed: int) -> None:
    rng = random.Random(seed)
    slices: dict[str, ResourceSlice] = {}
    for i in range(10):
        created = random_slice(rng, f"s{i}")
        slices[created.metadata.name or ""] = created
    held: list[ResourceClaim] = []
    live = _rebuild(slices, held, NODES)
    serial = 10
    for step in range(40):
        roll = rng.random()
        if roll < 0.25 and _published(slices.values()):
            # A claim allocated by someone, on published devices or on one that is gone.
            pool, name = rng.choice(_published(slices.values()))
            if rng.random() < 0.2:
                name = "gpu-9"
            taken = holding(f"h{step}", name, pool=pool)
            live.add_allocated(taken)
            held.append(taken)
        elif roll < 0.35 and held:
            released = held.pop(rng.randrange(len(held)))
            live.remove_allocated(released)
        else:
            before: tuple[str, str] | None = None
            if roll < 0.55 or not slices:
                serial += 1
                name = f"s{serial}"
                after: ResourceSlice | None = random_slice(rng, name)
            elif roll < 0.8:
                name = rng.choice(list(slices))
                before = _key(slices[name])
                after = random_slice(rng, name)
            else:
                name = rng.choice(list(slices))
                before = _key(slices[name])
                after = None
            if after is None:
                del slices[name]
            else:
                slices[name] = after
            affected = {k for k in (before, _key(after) if after else None) if k is not None}
            live.replace_pools(affected, [s for s in slices.values() if _key(s) in affected])
        fresh = _rebuild(slices, held, NODES)
        assert snapshot_state(live) == snapshot_state(fresh), step
        assert allocation_answers(live) == allocation_answers(fresh), step


def test_a_pool_whose_last_slice_is_gone_takes_its_node_along() -> None:
    only = resource_slice("s", [device("gpu-0", attributes={"type": "gpu"})], node="node-9")
    snap = Snapshot.build(slices=[only], classes=CLASSES)
    assert snap.node_names == ["node-9"]
    assert allocate(snap, [claim("c", exact("gpu", "gpu"))]).node == "node-9"
    snap.replace_pools([(DRIVER, "node-9")], [])
    assert snap.node_names == []
    assert snap.pool_node(DRIVER, "node-9") is None
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("c", exact("gpu", "gpu"))])


def test_a_node_remembered_as_full_fits_again_once_its_pool_grows() -> None:
    small = resource_slice("s", [device("gpu-0", attributes={"type": "gpu"})], node="node-a")
    snap = Snapshot.build(slices=[small], classes=CLASSES)
    snap.add_allocated(holding("taken", "gpu-0"))
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("c", exact("gpu", "gpu"))])
    grown = resource_slice(
        "s",
        [device(f"gpu-{i}", attributes={"type": "gpu"}) for i in range(2)],
        node="node-a",
        generation=2,
    )
    snap.replace_pools([], [grown])
    found = allocate(snap, [claim("c", exact("gpu", "gpu"))])
    assert [r.device for r in found.results[0].devices.results] == ["gpu-1"]
    assert snap.node_usage("node-a") == (1, 2)


def test_a_slice_that_does_not_compile_leaves_the_snapshot_unchanged() -> None:
    good = resource_slice("good", [device("gpu-0", attributes={"type": "gpu"})], node="node-a")
    snap = Snapshot.build(slices=[good], classes=CLASSES, nodes=NODES)
    before = snapshot_state(snap)
    bad = resource_slice(
        "bad",
        [device("gpu-0", attributes={"type": "gpu"})],
        node=None,
        pool="shared-bad",
        nodeSelector={
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["x"]}]}
            ]
        },
    )
    with pytest.raises(InvalidInputError) as info:
        snap.replace_pools([], [bad])
    assert info.value.obj == "slice bad"
    assert snapshot_state(snap) == before


def test_first_fit_finds_a_node_after_one_before_it_left_the_node_list() -> None:
    """First-fit resumes after the nodes it found full; when a node before them leaves
    the list (its last slice gone), the positions move and that memo must go too."""
    slices = [
        resource_slice(f"s{n}", [device("gpu-0", attributes={"type": "gpu"})], node=f"node-{n}")
        for n in range(3)
    ]
    snap = Snapshot.build(slices=slices, classes=CLASSES)
    snap.add_allocated(holding("t0", "gpu-0", pool="node-0"))
    snap.add_allocated(holding("t1", "gpu-0", pool="node-1"))
    assert allocate(snap, [claim("c", exact("gpu", "gpu"))]).node == "node-2"
    snap.replace_pools([(DRIVER, "node-0")], [])
    assert snap.node_names == ["node-1", "node-2"]
    assert allocate(snap, [claim("c", exact("gpu", "gpu"))]).node == "node-2"
