"""Allocator search and results: claims solved together, constraints, admin access,
consumable capacity and counters, config of the chosen subrequest, allocated claims."""

from __future__ import annotations

import pytest
from allocator_fixtures import (
    DRIVER,
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
    resource_slice,
    result,
    sub,
)

from api.errors import UnsatisfiableError
from api.resource_v1 import ResourceClaim
from dra_driver.allocator import Snapshot, allocate

# -- search ------------------------------------------------------------------------------


def test_claims_of_one_pod_are_solved_together() -> None:
    only_x = device_class("x", f'device.attributes["{DRIVER}"].kind == "x"')
    devices = [device("gpu-0", attributes={"kind": "x"}), device("gpu-1", attributes={"kind": "y"})]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class(), only_x])
    first = claim("one", first_available("r", sub("x", "x"), sub("any")))
    second = claim("two", exact("r", "x"))
    alloc = allocate(snap, [first, second])
    assert devices_of(alloc.results[0]) == [("r/any", "gpu-1")]
    assert devices_of(alloc.results[1]) == [("r", "gpu-0")]


def test_pending_claims_never_share_a_device() -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(3))], classes=[device_class()])
    alloc = allocate(snap, [claim("a", exact(count=2)), claim("b", exact())])
    assert [devices_of(r) for r in alloc.results] == [
        [("gpu", "gpu-0"), ("gpu", "gpu-1")],
        [("gpu", "gpu-2")],
    ]


def test_claim_limit_of_32_devices() -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(40))], classes=[device_class()])
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, [claim("c", exact(count=33))])
    assert "number of requested devices 33 exceeds the claim limit of 32" in str(info.value)
    steered = allocate(
        snap,
        [
            claim(
                "c",
                exact("a", count=30),
                first_available("r", sub("three", count=3), sub("two", count=2)),
            )
        ],
    )
    assert [r for r, _ in devices_of(steered.results[0])][-2:] == ["r/two", "r/two"]


def test_distinct_attribute() -> None:
    devices = [device(f"gpu-{i}", attributes={"numa": n}) for i, n in enumerate([0, 0, 1])]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])
    pending = claim("c", exact(count=2), constraints=[{"distinctAttribute": f"{DRIVER}/numa"}])
    assert [d for _, d in devices_of(allocate(snap, [pending]).results[0])] == ["gpu-0", "gpu-2"]


def test_match_attribute_compares_type_and_value() -> None:
    devices = [device("a", attributes={"numa": 0}), device("b", attributes={"numa": "0"})]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])
    pending = claim("c", exact(count=2), constraints=[{"matchAttribute": f"{DRIVER}/numa"}])
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [pending])


def test_match_attribute_on_a_subrequest_reference() -> None:
    devices = [device(f"gpu-{i}", attributes={"numa": n}) for i, n in enumerate([0, 1, 1])]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])

    def pending(refs: list[str]) -> ResourceClaim:
        return claim(
            "c",
            exact("a"),
            first_available("b", sub("one")),
            constraints=[{"requests": refs, "matchAttribute": f"{DRIVER}/numa"}],
        )

    covered = allocate(snap, [pending(["a", "b/one"])])
    assert devices_of(covered.results[0]) == [("a", "gpu-1"), ("b/one", "gpu-2")]
    not_covered = allocate(snap, [pending(["a", "b/other"])])
    assert devices_of(not_covered.results[0]) == [("a", "gpu-0"), ("b/one", "gpu-1")]


def test_all_mode_constraint_violation_is_an_error() -> None:
    devices = [device("a", attributes={"numa": 0}), device("b", attributes={"numa": 1})]
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])
    pending = claim("c", exact(mode="All"), constraints=[{"matchAttribute": f"{DRIVER}/numa"}])
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, [pending])
    assert (
        "claim default/c, request gpu: cannot add device gpu.dra-driver.io/node-a/b "
        "because a claim constraint would not be satisfied" in str(info.value)
    )


def test_admin_access_may_share_with_other_claims_but_not_within_one() -> None:
    snap = Snapshot.build(
        slices=[resource_slice("s", gpus(1))],
        classes=[device_class()],
        claims=[holding("x", "gpu-0")],
    )
    admin = allocate(snap, [claim("a", exact(admin=True)), claim("b", exact(admin=True))])
    assert [devices_of(r) for r in admin.results] == [[("gpu", "gpu-0")], [("gpu", "gpu-0")]]
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("a", exact("r1", admin=True), exact("r2", admin=True))])


def test_claim_without_requests_gets_an_empty_allocation() -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    alloc = allocate(snap, [claim("c")])
    assert alloc.results[0].devices.results is None
    assert alloc.results[0].node_selector is None


# -- consumable capacity and counters ------------------------------------------------------


def _shared(**policy: object) -> Snapshot:
    capacity = {
        "memory": {"value": "80Gi", **({"requestPolicy": policy} if policy else {})},
        "compute": "100",
    }
    shared = device("gpu-0", allowMultipleAllocations=True, capacity=capacity)
    return Snapshot.build(slices=[resource_slice("s", [shared])], classes=[device_class()])


def test_shared_device_reports_every_capacity_consumed() -> None:
    alloc = allocate(
        _shared(), [claim("c", exact(capacity={"memory": "10Gi"}))], share_id=counting_ids()
    )
    entry = alloc.results[0].devices.results[0]
    assert {k: str(v) for k, v in entry.consumed_capacity.items()} == {
        "memory": "10Gi",
        "compute": "100",
    }
    assert entry.share_id == "00000000-0000-0000-0000-000000000001"


def test_one_claim_may_take_two_shares_of_one_device() -> None:
    pending = claim(
        "c",
        exact("a", capacity={"memory": "30Gi", "compute": "50"}),
        exact("b", capacity={"memory": "30Gi", "compute": "50"}),
    )
    alloc = allocate(_shared(), [pending], share_id=counting_ids())
    assert [e.share_id for e in alloc.results[0].devices.results] == [
        "00000000-0000-0000-0000-000000000001",
        "00000000-0000-0000-0000-000000000002",
    ]
    too_much = claim(
        "c",
        exact("a", capacity={"memory": "50Gi", "compute": "1"}),
        exact("b", capacity={"memory": "50Gi", "compute": "1"}),
    )
    with pytest.raises(UnsatisfiableError):
        allocate(_shared(), [too_much])


def test_valid_values_round_up_and_cap() -> None:
    snap = _shared(default="10Gi", validValues=["10Gi", "40Gi", "80Gi"])
    alloc = allocate(snap, [claim("c", exact(capacity={"memory": "20Gi", "compute": "1"}))])
    assert str(alloc.results[0].devices.results[0].consumed_capacity["memory"]) == "40Gi"
    with pytest.raises(UnsatisfiableError):
        allocate(
            _shared(default="10Gi", validValues=["10Gi", "40Gi"]),
            [claim("c", exact(capacity={"memory": "50Gi", "compute": "1"}))],
        )


def test_valid_range_max_makes_the_device_ineligible() -> None:
    snap = _shared(default="10Gi", validRange={"min": "10Gi", "max": "40Gi"})
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("c", exact(capacity={"memory": "50Gi", "compute": "1"}))])


def test_capacity_request_for_a_missing_capacity_skips_the_device() -> None:
    snap = Snapshot.build(
        slices=[resource_slice("s", [device("a"), device("b", capacity={"bandwidth": "10"})])],
        classes=[device_class()],
    )
    alloc = allocate(snap, [claim("c", exact(capacity={f"{DRIVER}/bandwidth": "5"}))])
    assert devices_of(alloc.results[0]) == [("gpu", "b")]


def test_counters_are_shared_by_one_pod() -> None:
    full = device("gpu-0", counters={"set": {"mem": "8"}})
    halves = [device(f"half-{i}", counters={"set": {"mem": "4"}}) for i in range(3)]
    slices = [
        resource_slice("devs", [*halves, full], count=2),
        resource_slice("counters", count=2, counter_sets=[counter_set("set", {"mem": "8"})]),
    ]
    snap = Snapshot.build(slices=slices, classes=[device_class()])
    alloc = allocate(snap, [claim("c", exact(count=2))])
    assert [d for _, d in devices_of(alloc.results[0])] == ["half-0", "half-1"]
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("c", exact(count=3))])


# -- results -----------------------------------------------------------------------------


def test_config_of_a_chosen_subrequest() -> None:
    small = device_class("small", config=[{"from": "small-class"}])
    pending = claim(
        "c",
        first_available("r", sub("big", count=2), sub("one", "small")),
        config=[
            {"requests": ["r"], "opaque": {"driver": DRIVER, "parameters": {"from": "bare"}}},
            {"requests": ["r/big"], "opaque": {"driver": DRIVER, "parameters": {"from": "big"}}},
            {"requests": ["r/one"], "opaque": {"driver": DRIVER, "parameters": {"from": "one"}}},
            {"opaque": {"driver": DRIVER, "parameters": {"from": "all"}}},
        ],
    )
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class(), small])
    config = allocate(snap, [pending]).results[0].devices.config
    # "r/big" was not chosen: its config is dropped. The others name the claim's only
    # request (or its chosen subrequest), so their lists are cleared: empty means all.
    assert [(c.source, c.requests, c.opaque.parameters["from"]) for c in config] == [
        ("FromClass", None, "small-class"),
        ("FromClaim", None, "bare"),
        ("FromClaim", None, "one"),
        ("FromClaim", None, "all"),
    ]


def test_allocation_does_not_change_the_snapshot() -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(2))], classes=[device_class()])
    first = allocate(snap, [claim("c", exact())])
    again = allocate(snap, [claim("c", exact())])
    assert devices_of(first.results[0]) == devices_of(again.results[0]) == [("gpu", "gpu-0")]


def test_add_and_remove_allocated_claims() -> None:
    snap = Snapshot.build(
        slices=[
            resource_slice("a", gpus(1), node="node-a"),
            resource_slice("b", gpus(1), node="node-b"),
        ],
        classes=[device_class()],
    )
    taken = claim("t", exact(), results=[result("gpu-0", pool="node-a")])
    snap.add_allocated(taken)
    assert allocate(snap, [claim("c", exact())]).node == "node-b"
    snap.add_allocated(claim("u", exact(), results=[result("gpu-0", pool="node-b")]))
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("c", exact())])
    snap.remove_allocated(taken)
    assert allocate(snap, [claim("c", exact())]).node == "node-a"
    snap.remove_allocated(taken)  # releasing twice is harmless
    assert allocate(snap, [claim("c", exact())]).node == "node-a"
