"""Placement policies: what each prefers, and that every answer is a valid allocation."""

from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction
from typing import Any

import pytest
from allocator_fixtures import (
    DRIVER,
    Version,
    claim,
    counter_set,
    counting_ids,
    device,
    device_class,
    devices_of,
    exact,
    first_available,
    holding,
    node,
    resource_slice,
    result,
    sub,
)

from api.errors import UnsatisfiableError
from api.resource_v1 import ResourceClaim, ResourceSlice
from dra_driver.allocator import POLICIES, Snapshot, allocate


def typed_class(name: str, kind: str) -> Any:
    return device_class(name, f'device.attributes["{DRIVER}"].type == "{kind}"')


CLASSES = [typed_class("gpu", "gpu"), typed_class("mig", "mig"), typed_class("shared", "shared")]


def gpu(name: str, **attributes: object) -> dict[str, Any]:
    memory = str(attributes.pop("memory", "80Gi"))
    return device(name, attributes={"type": "gpu", **attributes}, capacity={"memory": memory})


def partitioned(node_name: str, gpu_count: int = 2, migs: int = 2) -> list[ResourceSlice]:
    """A node whose GPUs each have one counter set of 4 memory slices, a full-GPU
    device and ``migs`` 1-slice MIG devices; devices listed GPU by GPU."""
    slots = [f"slice-{i}" for i in range(4)]
    devices: list[dict[str, Any]] = []
    sets = []
    for g in range(gpu_count):
        sets.append(counter_set(f"gpu-{g}-counters", dict.fromkeys(slots, "1")))
        devices.append(
            device(
                f"gpu-{g}",
                attributes={"type": "gpu"},
                counters={f"gpu-{g}-counters": dict.fromkeys(slots, "1")},
            )
        )
        devices.extend(
            device(
                f"gpu-{g}-mig-{m}",
                attributes={"type": "mig"},
                counters={f"gpu-{g}-counters": {slots[m]: "1"}},
            )
            for m in range(migs)
        )
    return [
        resource_slice(f"{node_name}-devices", devices, node=node_name, count=2),
        resource_slice(f"{node_name}-counters", node=node_name, count=2, counter_sets=sets),
    ]


# -- most-capable --------------------------------------------------------------------


def test_most_capable_picks_the_h100_over_the_a100() -> None:
    a100 = gpu("gpu-0", cudaComputeCapability=Version("8.0.0"), productName="NVIDIA A100")
    h100 = gpu("gpu-0", cudaComputeCapability=Version("9.0.0"), productName="NVIDIA H100")
    slices = [
        resource_slice("a", [a100], node="node-a100"),
        resource_slice("b", [h100], node="node-h100"),
    ]
    snap = Snapshot.build(slices=slices, classes=CLASSES)
    assert allocate(snap, [claim("c", exact())]).node == "node-a100"
    assert allocate(snap, [claim("c", exact())], policy="most-capable").node == "node-h100"


def test_most_capable_within_a_node_ranks_capability_then_memory() -> None:
    devices = [
        gpu("small-new", cudaComputeCapability=Version("9.0.0"), memory="40Gi"),
        gpu("old", cudaComputeCapability=Version("8.6.0"), memory="141Gi"),
        gpu("big-new", cudaComputeCapability=Version("9.0.0"), memory="80Gi"),
        gpu("unknown"),
    ]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=CLASSES)
    picked = allocate(snap, [claim("c", exact(count=2))], policy="most-capable")
    assert [d for _, d in devices_of(picked.results[0])] == ["big-new", "small-new"]
    one = allocate(snap, [claim("c", exact())], policy="most-capable")
    assert devices_of(one.results[0]) == [("gpu", "big-new")]


# -- binpack and spread --------------------------------------------------------------


def _split_gpu_1() -> Snapshot:
    return Snapshot.build(
        slices=partitioned("node-a"),
        classes=CLASSES,
        claims=[holding("x", "gpu-1-mig-0")],
    )


def test_binpack_keeps_a_whole_free_gpu_instead_of_splitting_a_second_one() -> None:
    first_fit = allocate(_split_gpu_1(), [claim("c", exact("m", "mig"))])
    assert devices_of(first_fit.results[0]) == [("m", "gpu-0-mig-0")]  # splits gpu-0
    snap = _split_gpu_1()
    binpack = allocate(snap, [claim("c", exact("m", "mig"))], policy="binpack")
    assert devices_of(binpack.results[0]) == [("m", "gpu-1-mig-1")]
    snap.add_allocated(claim("c", exact("m", "mig"), results=[result("gpu-1-mig-1", request="m")]))
    whole = allocate(snap, [claim("w", exact())], policy="binpack")
    assert devices_of(whole.results[0]) == [("gpu", "gpu-0")]


def test_spread_prefers_an_untouched_gpu() -> None:
    spread = allocate(_split_gpu_1(), [claim("c", exact("m", "mig"))], policy="spread")
    assert devices_of(spread.results[0]) == [("m", "gpu-0-mig-0")]


def _two_nodes(used_a: int, used_b: int) -> Snapshot:
    slices = [
        resource_slice("a", [gpu(f"gpu-{i}") for i in range(4)], node="node-a"),
        resource_slice("b", [gpu(f"gpu-{i}") for i in range(4)], node="node-b"),
    ]
    claims = [holding(f"a{i}", f"gpu-{i}", pool="node-a") for i in range(used_a)] + [
        holding(f"b{i}", f"gpu-{i}", pool="node-b") for i in range(used_b)
    ]
    return Snapshot.build(slices=slices, classes=CLASSES, claims=claims)


def test_binpack_prefers_the_fuller_node_and_spread_the_emptier() -> None:
    snap = _two_nodes(used_a=1, used_b=3)
    pending = [claim("c", exact())]
    assert allocate(snap, pending).node == "node-a"
    assert allocate(snap, pending, policy="binpack").node == "node-b"
    assert allocate(snap, pending, policy="spread").node == "node-a"
    reversed_usage = _two_nodes(used_a=3, used_b=1)
    assert allocate(reversed_usage, pending, policy="binpack").node == "node-a"
    assert allocate(reversed_usage, pending, policy="spread").node == "node-b"


def test_binpack_fills_a_node_before_the_next() -> None:
    snap = _two_nodes(used_a=0, used_b=0)
    nodes = []
    for i in range(5):
        alloc = allocate(snap, [claim(f"c{i}", exact())], policy="binpack")
        nodes.append(alloc.node)
        (device_name,) = [d for _, d in devices_of(alloc.results[0])]
        snap.add_allocated(holding(f"c{i}", device_name, pool=alloc.node or ""))
    assert nodes == ["node-a"] * 4 + ["node-b"]


def test_spread_alternates_between_nodes() -> None:
    snap = _two_nodes(used_a=0, used_b=0)
    nodes = []
    for i in range(4):
        alloc = allocate(snap, [claim(f"c{i}", exact())], policy="spread")
        nodes.append(alloc.node)
        (device_name,) = [d for _, d in devices_of(alloc.results[0])]
        snap.add_allocated(holding(f"c{i}", device_name, pool=alloc.node or ""))
    assert nodes == ["node-a", "node-b", "node-a", "node-b"]


# -- topology ------------------------------------------------------------------------


def test_topology_keeps_a_claim_on_one_numa_node() -> None:
    numa = "resource.kubernetes.io/numaNode"
    devices = [gpu(f"gpu-{i}", **{numa: i % 2}) for i in range(4)]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=CLASSES)
    pending = [claim("c", exact(count=2))]
    assert [d for _, d in devices_of(allocate(snap, pending).results[0])] == ["gpu-0", "gpu-1"]
    topo = allocate(snap, pending, policy="topology")
    assert [d for _, d in devices_of(topo.results[0])] == ["gpu-0", "gpu-2"]


def test_topology_prefers_one_nvlink_island_over_one_pcie_root() -> None:
    root = "resource.kubernetes.io/pcieRoot"
    devices = [
        gpu("gpu-0", nvlinkIsland="i0", **{root: "pci0"}),
        gpu("gpu-1", nvlinkIsland="i1", **{root: "pci0"}),
        gpu("gpu-2", nvlinkIsland="i1", **{root: "pci1"}),
    ]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=CLASSES)
    topo = allocate(snap, [claim("c", exact(count=2))], policy="topology")
    assert [d for _, d in devices_of(topo.results[0])] == ["gpu-1", "gpu-2"]


# -- shared rules --------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_honours_first_available_order(policy: str) -> None:
    snap = Snapshot.build(
        slices=[resource_slice("s", [gpu(f"gpu-{i}") for i in range(2)])], classes=CLASSES
    )
    pending = [claim("c", first_available("r", sub("two", count=2), sub("one")))]
    alloc = allocate(snap, [*pending], policy=policy)
    assert [r for r, _ in devices_of(alloc.results[0])] == ["r/two", "r/two"]
    assert alloc.prioritized_score == 8


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_reports_unsatisfiable_alike(policy: str) -> None:
    snap = Snapshot.build(slices=[resource_slice("s", [gpu("gpu-0")])], classes=CLASSES)
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("c", exact(count=2))], policy=policy)


# -- property: every policy's answer is valid ---------------------------------------


def _random_cluster(
    rng: random.Random,
) -> tuple[list[ResourceSlice], list[Any], list[ResourceClaim]]:
    slices: list[ResourceSlice] = []
    nodes = []
    allocated: list[ResourceClaim] = []
    for n in range(rng.randint(1, 3)):
        name = f"node-{n}"
        nodes.append(node(name))
        plain = [
            gpu(
                f"gpu-{i}",
                numa=rng.randint(0, 1),
                **({"memory": rng.choice(["40Gi", "80Gi"])}),
            )
            for i in range(rng.randint(0, 4))
        ]
        for entry in plain:
            if rng.random() < 0.15:
                entry["taints"] = [{"key": "bad", "effect": rng.choice(["NoSchedule", "None"])}]
        shared = device(
            "shared-0",
            attributes={"type": "shared", "numa": 0},
            allowMultipleAllocations=True,
            capacity={
                "memory": {
                    "value": "80Gi",
                    "requestPolicy": {
                        "default": "10Gi",
                        "validRange": {"min": "10Gi", "step": "10Gi"},
                    },
                }
            },
        )
        devices = [*plain, shared]
        slices.append(resource_slice(f"{name}-plain", devices, node=name, pool=f"{name}-plain"))
        part = partitioned(name, gpu_count=rng.randint(1, 2), migs=rng.randint(1, 3))
        slices.extend(
            resource_slice(
                s.metadata.name or "",
                [d.model_dump(by_alias=True, exclude_none=True) for d in s.spec.devices or []],
                node=name,
                pool=f"{name}-part",
                count=2,
                counter_sets=[
                    c.model_dump(by_alias=True, exclude_none=True)
                    for c in s.spec.shared_counters or []
                ],
            )
            for s in part
        )
        for i, entry in enumerate(plain):
            if rng.random() < 0.3:
                allocated.append(holding(f"{name}-busy-{i}", entry["name"], pool=f"{name}-plain"))
        if rng.random() < 0.4:
            allocated.append(holding(f"{name}-mig", "gpu-0-mig-0", pool=f"{name}-part"))
        if rng.random() < 0.5:
            allocated.append(
                claim(
                    f"{name}-share",
                    exact("gpu", "shared"),
                    results=[
                        result(
                            "shared-0",
                            pool=f"{name}-plain",
                            shareID="00000000-0000-0000-0000-0000000000ff",
                            consumedCapacity={"memory": rng.choice(["30Gi", "60Gi"])},
                        )
                    ],
                )
            )
    return slices, nodes, allocated


def _random_claims(rng: random.Random) -> list[ResourceClaim]:
    claims = []
    for c in range(rng.randint(1, 2)):
        requests = []
        for r in range(rng.randint(1, 2)):
            kind = rng.choice(["gpu", "gpu", "mig", "shared"])
            capacity = (
                {"memory": rng.choice(["10Gi", "25Gi", "50Gi"])} if kind == "shared" else None
            )
            if rng.random() < 0.25:
                requests.append(
                    first_available(
                        f"r{r}",
                        sub("many", kind, count=2, capacity=capacity),
                        sub("one", kind, capacity=capacity),
                    )
                )
            else:
                tolerations = [{"key": "bad", "operator": "Exists"}] if rng.random() < 0.3 else []
                requests.append(
                    exact(
                        f"r{r}",
                        kind,
                        count=rng.randint(1, 2),
                        capacity=capacity,
                        tolerations=tolerations,
                    )
                )
        constraints = []
        if rng.random() < 0.3:
            constraints.append({"matchAttribute": f"{DRIVER}/numa"})
        claims.append(claim(f"pending-{c}", *requests, constraints=constraints))
    return claims


def _check_valid(
    slices: list[ResourceSlice],
    allocated: list[ResourceClaim],
    pending: list[ResourceClaim],
    results: list[Any],
) -> None:
    """Check an allocation from first principles (independent of the allocator's code)."""
    devices: dict[tuple[str, str], Any] = {}
    counters: dict[tuple[str, str, str], Fraction] = {}
    for s in slices:
        for d in s.spec.devices or []:
            devices[(s.spec.pool.name, d.name)] = (s, d)
        for cs in s.spec.shared_counters or []:
            for cname, value in cs.counters.items():
                counters[(s.spec.pool.name, cs.name, cname)] = value.value.value
    exclusive: Counter[tuple[str, str]] = Counter()
    capacity: dict[tuple[str, str], Fraction] = {}
    holders: set[tuple[str, str]] = set()
    all_results = [
        r
        for c in allocated
        for r in c.status.allocation.devices.results  # type: ignore[union-attr]
    ] + [r for alloc in results for r in alloc.devices.results or []]
    for r in all_results:
        key = (r.pool, r.device)
        dev = devices[key][1]
        if r.share_id is None:
            exclusive[key] += 1
        else:
            used = (r.consumed_capacity or {}).get("memory")
            if used is not None:
                capacity[key] = capacity.get(key, Fraction(0)) + used.value
        if key not in holders:
            holders.add(key)
            for consumption in dev.consumes_counters or []:
                for cname, amount in consumption.counters.items():
                    counters[(r.pool, consumption.counter_set, cname)] -= amount.value.value
    assert all(n == 1 for n in exclusive.values()), exclusive
    assert all(v >= 0 for v in counters.values()), counters
    for key, used in capacity.items():
        assert used <= devices[key][1].capacity["memory"].value.value
    new_nodes = {
        devices[(r.pool, r.device)][0].spec.node_name
        for a in results
        for r in a.devices.results or []
    }
    assert len(new_nodes) <= 1
    for pending_claim, alloc in zip(pending, results, strict=True):
        entries = alloc.devices.results or []
        assert len(entries) <= 32
        by_request: Counter[str] = Counter(r.request for r in entries)
        for request in pending_claim.spec.devices.requests or []:  # type: ignore[union-attr]
            if request.exactly is not None:
                assert by_request[request.name] == (request.exactly.count or 1)
                kind = request.exactly.device_class_name
                tolerated = bool(request.exactly.tolerations)
            else:
                chosen = [n for n in by_request if n.startswith(f"{request.name}/")]
                assert len(chosen) == 1
                sub_name = chosen[0].split("/")[1]
                (subrequest,) = [s for s in request.first_available or [] if s.name == sub_name]
                assert by_request[chosen[0]] == (subrequest.count or 1)
                kind, tolerated = subrequest.device_class_name, False
            for entry in entries:
                if entry.request.split("/")[0] != request.name:
                    continue
                dev = devices[(entry.pool, entry.device)][1]
                assert dev.attributes["type"].value == kind
                for taint in dev.taints or []:
                    assert taint.effect == "None" or tolerated
        if pending_claim.spec.devices.constraints:  # type: ignore[union-attr]
            values = {devices[(r.pool, r.device)][1].attributes["numa"].value for r in entries}
            assert len(values) == 1


@pytest.mark.parametrize("seed", range(60))
def test_every_policy_returns_only_valid_allocations(seed: int) -> None:
    rng = random.Random(seed)
    slices, nodes, allocated = _random_cluster(rng)
    pending = _random_claims(rng)
    outcomes = {}
    for policy in POLICIES:
        snap = Snapshot.build(slices=slices, classes=CLASSES, claims=allocated, nodes=nodes)
        try:
            alloc = allocate(snap, pending, policy=policy, share_id=counting_ids())
        except UnsatisfiableError:
            outcomes[policy] = False
            continue
        outcomes[policy] = True
        _check_valid(slices, allocated, pending, alloc.results)
    # Policies choose among valid answers; whether one exists does not depend on them.
    assert len(set(outcomes.values())) == 1, outcomes


def test_property_cases_are_not_all_trivial() -> None:
    fits = 0
    for seed in range(60):
        rng = random.Random(seed)
        slices, nodes, allocated = _random_cluster(rng)
        pending = _random_claims(rng)
        snap = Snapshot.build(slices=slices, classes=CLASSES, claims=allocated, nodes=nodes)
        try:
            allocate(snap, pending)
            fits += 1
        except UnsatisfiableError:
            pass
    assert 10 < fits < 60
