"""The reference scenarios of spec/allocator.md §12, one test (or a few) each."""

from __future__ import annotations

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
    gpus,
    holding,
    node,
    resource_slice,
    result,
    sub,
)

from api.errors import CelEvaluationError, UnsatisfiableError
from dra_driver.allocator import Snapshot, allocate


def test_1_first_matching_device_in_slice_order() -> None:
    snap = Snapshot.build(
        slices=[resource_slice("00000-d-n1-x", gpus(2))], classes=[device_class()]
    )
    alloc = allocate(snap, [claim("c", exact())])
    assert devices_of(alloc.results[0]) == [("gpu", "gpu-0")]
    assert alloc.node == "node-a"


def test_2_device_of_another_claim_is_in_use() -> None:
    snap = Snapshot.build(
        slices=[resource_slice("00000-d-n1-x", gpus(2))],
        classes=[device_class()],
        claims=[holding("other", "gpu-0")],
    )
    assert devices_of(allocate(snap, [claim("c", exact())]).results[0]) == [("gpu", "gpu-1")]


def test_3_admin_access_results_are_not_in_use() -> None:
    snap = Snapshot.build(
        slices=[resource_slice("00000-d-n1-x", gpus(2))],
        classes=[device_class()],
        claims=[holding("other", "gpu-0", adminAccess=True)],
    )
    assert devices_of(allocate(snap, [claim("c", exact())]).results[0]) == [("gpu", "gpu-0")]


def test_4_match_attribute_backtracks_past_a_mismatch() -> None:
    devices = [
        device("a", attributes={"numa": 0}),
        device("b", attributes={"numa": 1}),
        device("c", attributes={"numa": 0}),
    ]
    snap = Snapshot.build(
        slices=[resource_slice("s", devices)],
        classes=[device_class()],
        claims=[holding("x", "a")],
    )
    pending = claim(
        "c",
        exact("r1"),
        exact("r2"),
        constraints=[{"requests": ["r1", "r2"], "matchAttribute": f"{DRIVER}/numa"}],
    )
    # With a free: r1 gets a, r2 tries b (rejected), then c.
    free = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])
    assert devices_of(allocate(free, [pending]).results[0]) == [("r1", "a"), ("r2", "c")]
    # With a taken: r1=b, r2 has no numa=1 partner; r1=c then fails too.
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [pending])


def test_5_first_available_falls_back_to_a_smaller_alternative() -> None:
    pending = claim("c", first_available("r", sub("big", count=2), sub("small", count=1)))
    one_free = Snapshot.build(
        slices=[resource_slice("s", gpus(2))],
        classes=[device_class()],
        claims=[holding("x", "gpu-0")],
    )
    small = allocate(one_free, [pending])
    assert devices_of(small.results[0]) == [("r/small", "gpu-1")]
    two_free = Snapshot.build(slices=[resource_slice("s", gpus(2))], classes=[device_class()])
    big = allocate(two_free, [pending])
    assert devices_of(big.results[0]) == [("r/big", "gpu-0"), ("r/big", "gpu-1")]
    # The scheduler's prioritized-list score: 8 for the first subrequest, 7 for the second.
    assert (big.prioritized_score, small.prioritized_score) == (8, 7)


def _tainted(effect: str) -> Snapshot:
    devices = [device("gpu-0", taints=[("k", None, effect)]), device("gpu-1")]
    return Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])


@pytest.mark.parametrize("effect", ["NoSchedule", "NoExecute"])
def test_6_taint_blocks_unless_tolerated(effect: str) -> None:
    snap = _tainted(effect)
    assert devices_of(allocate(snap, [claim("c", exact())]).results[0]) == [("gpu", "gpu-1")]
    tolerated = claim("c", exact(tolerations=[{"key": "k", "operator": "Exists"}]))
    alloc = allocate(snap, [tolerated])
    assert devices_of(alloc.results[0]) == [("gpu", "gpu-0")]
    # The result carries a copy of the request's tolerations.
    tolerations = alloc.results[0].devices.results[0].tolerations
    assert [(t.key, t.operator) for t in tolerations] == [("k", "Exists")]


def test_6_taint_effect_none_never_blocks() -> None:
    assert devices_of(allocate(_tainted("None"), [claim("c", exact())]).results[0]) == [
        ("gpu", "gpu-0")
    ]


def test_7_all_mode_needs_every_matching_device() -> None:
    slices = [resource_slice("s", gpus(3))]
    busy = Snapshot.build(slices=slices, classes=[device_class()], claims=[holding("x", "gpu-1")])
    with pytest.raises(UnsatisfiableError):
        allocate(busy, [claim("c", exact(mode="All"))])
    admin = allocate(busy, [claim("c", exact(mode="All", admin=True))])
    assert [d for _, d in devices_of(admin.results[0])] == ["gpu-0", "gpu-1", "gpu-2"]
    assert all(r.admin_access for r in admin.results[0].devices.results)


def test_8_all_mode_fails_on_an_incomplete_pool() -> None:
    snap = Snapshot.build(
        slices=[resource_slice("s-0", gpus(2), count=2)], classes=[device_class()]
    )
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, [claim("c", exact(mode="All"))])
    message = (
        "claim default/c, request gpu: asks for all devices, but resource pool "
        "gpu.dra-driver.io/node-a is currently being updated"
    )
    assert message in str(info.value)
    assert message in info.value.reasons["claim default/c"]  # type: ignore[attr-defined]


def _partitionable() -> list[object]:
    slices = [f"memory-slice-{i}" for i in range(8)]
    full = device("gpu-0", counters={"gpu-0-counter-set": dict.fromkeys(slices, "1")})
    migs = [
        device(
            f"gpu-0-mig-1g-{start}",
            attributes={"profile": "1g"},
            counters={"gpu-0-counter-set": {slices[start]: "1"}},
        )
        for start in range(2)
    ]
    return [
        resource_slice("gpus-0", [full, *migs], count=2),
        resource_slice(
            "gpus-1",
            count=2,
            counter_sets=[counter_set("gpu-0-counter-set", dict.fromkeys(slices, "1"))],
        ),
    ]


def test_9_counters_exclude_overlapping_partitions() -> None:
    mig_class = device_class("mig", f'device.attributes["{DRIVER}"].?profile.orValue("") == "1g"')
    full_class = device_class("full", f'!has(device.attributes["{DRIVER}"].profile)')
    snap = Snapshot.build(slices=_partitionable(), classes=[mig_class, full_class])
    first = allocate(snap, [claim("a", exact("gpu", "mig"))])
    assert devices_of(first.results[0]) == [("gpu", "gpu-0-mig-1g-0")]
    allocated_a = claim("a", exact("gpu", "mig"), results=[result("gpu-0-mig-1g-0")])
    snap.add_allocated(allocated_a)
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("full", exact("gpu", "full"))])
    second = allocate(snap, [claim("b", exact("gpu", "mig"))])
    assert devices_of(second.results[0]) == [("gpu", "gpu-0-mig-1g-1")]
    # Releasing the MIG device frees the counters again.
    snap.remove_allocated(allocated_a)
    assert devices_of(allocate(snap, [claim("full", exact("gpu", "full"))]).results[0]) == [
        ("gpu", "gpu-0")
    ]


def test_10_consumable_capacity_with_a_valid_range() -> None:
    shared = device(
        "gpu-0",
        allowMultipleAllocations=True,
        capacity={
            "memory": {
                "value": "80Gi",
                "requestPolicy": {"default": "10Gi", "validRange": {"min": "10Gi", "step": "10Gi"}},
            }
        },
    )
    snap = Snapshot.build(slices=[resource_slice("s", [shared])], classes=[device_class()])
    ids = counting_ids()
    consumed = []
    for i, amount in enumerate(["15Gi", "40Gi"]):
        pending = claim(f"c{i}", exact(capacity={"memory": amount}))
        alloc = allocate(snap, [pending], share_id=ids)
        entry = alloc.results[0].devices.results[0]
        consumed.append(str(entry.consumed_capacity["memory"]))
        assert entry.share_id == f"00000000-0000-0000-0000-00000000000{i + 1}"
        snap.add_allocated(
            claim(
                f"c{i}",
                exact(capacity={"memory": amount}),
                results=[
                    result(
                        "gpu-0",
                        shareID=entry.share_id,
                        consumedCapacity={"memory": str(entry.consumed_capacity["memory"])},
                    )
                ],
            )
        )
    assert consumed == ["20Gi", "40Gi"]
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("c2", exact(capacity={"memory": "40Gi"}))], share_id=ids)


def test_11_selector_error_only_when_evaluation_reaches_the_device() -> None:
    devices = [device("gpu-0", attributes={"model": "x"}), device("gpu-1")]
    selector = f'device.attributes["{DRIVER}"].model == "x"'
    pending = claim("c", exact(selectors=[selector]))
    free = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])
    assert devices_of(allocate(free, [pending]).results[0]) == [("gpu", "gpu-0")]
    busy = Snapshot.build(
        slices=[resource_slice("s", devices)],
        classes=[device_class()],
        claims=[holding("x", "gpu-0")],
    )
    with pytest.raises(CelEvaluationError) as info:
        allocate(busy, [pending])
    message = str(info.value)
    assert message.startswith("claim default/c: selector #0: CEL runtime error: no such key: model")
    assert f"{DRIVER}/node-a/gpu-1" in message


def test_12_capacity_request_is_a_minimum_filter() -> None:
    devices = [
        device("gpu-0", capacity={"memory": "80Gi"}),
        device("gpu-1", capacity={"memory": "141Gi"}),
    ]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])
    alloc = allocate(snap, [claim("c", exact(capacity={"memory": "100Gi"}))])
    assert devices_of(alloc.results[0]) == [("gpu", "gpu-1")]
    # A device that is not shared reports no consumedCapacity and no shareID.
    entry = alloc.results[0].devices.results[0]
    assert entry.consumed_capacity is None
    assert entry.share_id is None


def test_13_node_selector_slice_gives_its_requirements() -> None:
    selector = {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r1"]}]}
        ]
    }
    slices = [resource_slice("net", gpus(1), node=None, pool="rack-r1", nodeSelector=selector)]
    snap = Snapshot.build(
        slices=slices, classes=[device_class()], nodes=[node("node-a", rack="r1"), node("node-b")]
    )
    alloc = allocate(snap, [claim("c", exact())])
    assert alloc.node == "node-a"
    terms = alloc.results[0].node_selector.node_selector_terms
    assert len(terms) == 1
    assert [(r.key, r.operator, r.values) for r in terms[0].match_expressions] == [
        ("rack", "In", ["r1"])
    ]
    assert terms[0].match_fields is None
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("c", exact())], node="node-b")


def test_14_class_configs_first_then_claim_configs() -> None:
    gpu = device_class(config=[{"kind": "GpuConfig", "from": "class"}])
    pending = claim(
        "c",
        exact("r1"),
        exact("r2"),
        config=[
            {"requests": ["r1"], "opaque": {"driver": DRIVER, "parameters": {"from": "claim"}}},
            {"requests": ["r3"], "opaque": {"driver": DRIVER, "parameters": {"from": "none"}}},
        ],
    )
    snap = Snapshot.build(slices=[resource_slice("s", gpus(3))], classes=[gpu])
    config = allocate(snap, [pending]).results[0].devices.config
    # The class config names both requests, that is all of them: the v1.37 scheduler
    # (allocator_stable.go) then clears the list, "empty means all"; the reference
    # table still shows [r1, r2].
    assert [(c.source, c.requests, c.opaque.parameters["from"]) for c in config] == [
        ("FromClass", None, "class"),
        ("FromClaim", ["r1"], "claim"),
    ]
    # With a third request of another class, the list names the class's requests.
    other = device_class("other")
    three = claim("c", exact("r1"), exact("r2"), exact("r3", device_class_name="other"))
    snap = Snapshot.build(slices=[resource_slice("s", gpus(3))], classes=[gpu, other])
    config = allocate(snap, [three]).results[0].devices.config
    assert [(c.source, c.requests) for c in config] == [("FromClass", ["r1", "r2"])]


def test_version_attribute_is_usable_in_selectors() -> None:
    devices = [
        device("old", attributes={"cc": Version("8.0.0")}),
        device("new", attributes={"cc": Version("9.0.0")}),
    ]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])
    selector = f'device.attributes["{DRIVER}"].cc.compareTo(semver("9.0.0")) >= 0'
    alloc = allocate(snap, [claim("c", exact(selectors=[selector]))])
    assert devices_of(alloc.results[0]) == [("gpu", "new")]
