"""The snapshot's incremental state gives the same answers as a snapshot built from scratch.

Adding and releasing claims updates in-use devices, shares, counters, node
rankings and the memo of infeasible nodes incrementally; a random sequence of
allocations and releases must never make the allocator answer differently
from a fresh snapshot of the same claims.
"""

from __future__ import annotations

import random
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
    first_available,
    holding,
    resource_slice,
    sub,
)

from api.errors import UnsatisfiableError
from api.resource_v1 import ResourceClaim, ResourceClaimStatus, ResourceSlice
from dra_driver.allocator import POLICIES, Snapshot, allocate


def typed(name: str) -> Any:
    return device_class(name, f'device.attributes["{DRIVER}"].type == "{name}"')


CLASSES = [typed("gpu"), typed("mig"), typed("shared")]


def cluster(nodes: int = 4) -> list[ResourceSlice]:
    slices = []
    for n in range(nodes):
        name = f"node-{n}"
        plain = [device(f"gpu-{i}", attributes={"type": "gpu", "numa": i % 2}) for i in range(4)]
        shared = device(
            "shared-0",
            attributes={"type": "shared"},
            allowMultipleAllocations=True,
            capacity={
                "memory": {
                    "value": "40Gi",
                    "requestPolicy": {
                        "default": "10Gi",
                        "validRange": {"min": "10Gi", "step": "10Gi"},
                    },
                }
            },
        )
        migs = [
            device(f"mig-{m}", attributes={"type": "mig"}, counters={"gpu": {f"s{m % 2}": "1"}})
            for m in range(3)
        ]
        slices += [
            resource_slice(f"{name}-a", [*plain, shared, *migs], node=name, count=2),
            resource_slice(
                f"{name}-b",
                node=name,
                count=2,
                counter_sets=[counter_set("gpu", {"s0": "1", "s1": "1"})],
            ),
        ]
    return slices


SHAPES = [
    lambda: [exact("gpu", "gpu")],
    lambda: [exact("gpu", "gpu", count=2)],
    lambda: [exact("m", "mig")],
    lambda: [exact("s", "shared", capacity={"memory": "15Gi"})],
    lambda: [first_available("r", sub("two", "gpu", count=3), sub("one", "mig"))],
]


def _allocated(pending: ResourceClaim, allocation: Any) -> ResourceClaim:
    done = pending.model_copy(deep=True)
    done.status = ResourceClaimStatus(allocation=allocation)
    return done


@pytest.mark.parametrize("seed", range(12))
def test_incremental_snapshot_matches_a_fresh_one(seed: int) -> None:
    rng = random.Random(seed)
    slices = cluster()
    live = Snapshot.build(slices=slices, classes=CLASSES)
    held: list[ResourceClaim] = []
    for step in range(60):
        if held and rng.random() < 0.3:
            released = held.pop(rng.randrange(len(held)))
            live.remove_allocated(released)
            continue
        shape = rng.randrange(len(SHAPES))
        constraints = (
            [{"matchAttribute": f"{DRIVER}/numa"}] if shape == 1 and rng.random() < 0.5 else []
        )
        pending = claim(f"c{step}", *SHAPES[shape](), constraints=constraints)
        policy = rng.choice(POLICIES)
        fresh = Snapshot.build(slices=slices, classes=CLASSES, claims=held)
        try:
            expected = allocate(fresh, [pending], policy=policy, share_id=counting_ids())
        except UnsatisfiableError:
            with pytest.raises(UnsatisfiableError):
                allocate(live, [pending], policy=policy, share_id=counting_ids())
            continue
        got = allocate(live, [pending], policy=policy, share_id=counting_ids())
        assert got.node == expected.node, (step, policy)
        assert got.results[0].model_dump() == expected.results[0].model_dump(), (step, policy)
        done = _allocated(pending, got.results[0])
        live.add_allocated(done)
        held.append(done)


def test_memo_of_full_nodes_is_forgotten_when_a_device_is_released() -> None:
    slices = [resource_slice(f"s{n}", [device("gpu-0")], node=f"node-{n}") for n in range(3)]
    snap = Snapshot.build(slices=slices, classes=[device_class()])
    held = []
    for n in range(3):
        alloc = allocate(snap, [claim(f"c{n}", exact())])
        assert alloc.node == f"node-{n}"
        taken = holding(f"c{n}", "gpu-0", pool=f"node-{n}")
        snap.add_allocated(taken)
        held.append(taken)
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("x", exact())])
    snap.remove_allocated(held[1])
    assert allocate(snap, [claim("x", exact())]).node == "node-1"
    snap.remove_allocated(held[0])
    assert allocate(snap, [claim("x", exact())]).node == "node-0"


def test_re_adding_a_claim_replaces_what_it_held() -> None:
    snap = Snapshot.build(
        slices=[resource_slice("s", [device("a"), device("b")])], classes=[device_class()]
    )
    snap.add_allocated(holding("c", "a"))
    snap.add_allocated(holding("c", "b"))
    alloc = allocate(snap, [claim("x", exact())])
    assert [r.device for r in alloc.results[0].devices.results] == ["a"]
