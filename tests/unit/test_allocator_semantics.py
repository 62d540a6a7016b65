"""Allocator semantics beyond the reference scenarios: pools, nodes, search, results, errors."""

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
    node,
    resource_slice,
    result,
    sub,
)

from api.errors import CelCompileError, CelEvaluationError, InvalidInputError, UnsatisfiableError
from api.resource_v1 import ResourceClaim
from dra_driver.allocator import Snapshot, allocate

# -- pools (§3) --------------------------------------------------------------------------


def test_only_the_newest_generation_of_a_pool_is_used() -> None:
    slices = [
        resource_slice("old", gpus(2, prefix="old"), generation=1),
        resource_slice("new", gpus(1, prefix="new"), generation=2),
    ]
    snap = Snapshot.build(slices=slices, classes=[device_class()])
    assert devices_of(allocate(snap, [claim("c", exact())]).results[0]) == [("gpu", "new-0")]
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("c", exact(count=2))])


def test_incomplete_pool_is_skipped_for_exact_count() -> None:
    slices = [
        resource_slice("a-0", gpus(2), pool="a", count=2),
        resource_slice("b-0", gpus(1, prefix="b"), pool="b"),
    ]
    snap = Snapshot.build(slices=slices, classes=[device_class()])
    alloc = allocate(snap, [claim("c", exact())])
    assert [(r.pool, r.device) for r in alloc.results[0].devices.results] == [("b", "b-0")]


def test_pool_complete_across_nodes_is_not_incomplete() -> None:
    # One pool, two slices: one for node-a, one for node-b (nodeSelector). From
    # node-a only one slice is relevant, but the pool as a whole is complete.
    selector = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-b"]}]}
        ]
    }
    slices = [
        resource_slice("p-a", gpus(1, prefix="a"), node=None, pool="p", count=2, allNodes=True),
        resource_slice(
            "p-b", gpus(1, prefix="b"), node=None, pool="p", count=2, nodeSelector=selector
        ),
    ]
    snap = Snapshot.build(
        slices=slices, classes=[device_class()], nodes=[node("node-a"), node("node-b")]
    )
    alloc = allocate(snap, [claim("c", exact(mode="All"))], node="node-a")
    assert devices_of(alloc.results[0]) == [("gpu", "a-0")]
    assert alloc.results[0].node_selector is None
    assert alloc.node is None


def test_generation_replaced_elsewhere_makes_the_pool_obsolete() -> None:
    selector = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-b"]}]}
        ]
    }
    slices = [
        resource_slice("p-old", gpus(1), node=None, pool="p", count=2, generation=1, allNodes=True),
        resource_slice(
            "p-new", gpus(1), node=None, pool="p", count=2, generation=2, nodeSelector=selector
        ),
    ]
    snap = Snapshot.build(
        slices=slices, classes=[device_class()], nodes=[node("node-a"), node("node-b")]
    )
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("c", exact())], node="node-a")


def test_invalid_pool_is_skipped_and_reported() -> None:
    slices = [
        resource_slice("dup-0", gpus(1), pool="dup", count=2),
        resource_slice("dup-1", gpus(1), pool="dup", count=2),
    ]
    snap = Snapshot.build(slices=slices, classes=[device_class()])
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, [claim("c", exact())])
    reason = info.value.reasons["claim default/c"]  # type: ignore[attr-defined]
    assert "invalid resource pools were encountered: gpu.dra-driver.io/dup" in reason
    assert "gpu.dra-driver.io/dup (duplicate device name gpu-0)" in reason


def test_device_consuming_an_unknown_counter_set_makes_the_pool_invalid() -> None:
    bad = device("gpu-0", counters={"missing-set": {"memory": "1"}})
    snap = Snapshot.build(
        slices=[resource_slice("s", [bad, *gpus(1, prefix="ok")])], classes=[device_class()]
    )
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, [claim("c", exact())])
    assert "missing-set" in info.value.reasons["claim default/c"]  # type: ignore[attr-defined]


def test_pools_are_searched_by_driver_then_pool_name_binding_conditions_last() -> None:
    waiting = device("w-0", bindingConditions=["Ready"], bindingFailureConditions=["Failed"])
    slices = [
        resource_slice("s1", gpus(1, prefix="z"), pool="z"),
        resource_slice("s2", [waiting], pool="a-waits"),
        resource_slice("s3", gpus(1, prefix="m"), pool="m"),
    ]
    snap = Snapshot.build(slices=slices, classes=[device_class()])
    alloc = allocate(snap, [claim("c", exact(count=3))])
    assert [d for _, d in devices_of(alloc.results[0])] == ["m-0", "z-0", "w-0"]
    entry = alloc.results[0].devices.results[2]
    assert (entry.binding_conditions, entry.binding_failure_conditions) == (["Ready"], ["Failed"])


def test_slices_of_a_pool_are_searched_by_name() -> None:
    slices = [
        resource_slice("00001-b", gpus(1, prefix="second"), count=2),
        resource_slice("00000-a", gpus(1, prefix="first"), count=2),
    ]
    snap = Snapshot.build(slices=slices, classes=[device_class()])
    assert devices_of(allocate(snap, [claim("c", exact())]).results[0]) == [("gpu", "first-0")]


# -- nodes -------------------------------------------------------------------------------


def test_first_fit_takes_nodes_in_name_order() -> None:
    slices = [
        resource_slice("b", gpus(1), node="node-b"),
        resource_slice("a", gpus(1), node="node-a"),
    ]
    snap = Snapshot.build(slices=slices, classes=[device_class()], claims=[holding("x", "gpu-0")])
    alloc = allocate(snap, [claim("c", exact())])
    assert alloc.node == "node-b"
    terms = alloc.results[0].node_selector.node_selector_terms
    assert [(f.key, f.operator, f.values) for f in terms[0].match_fields] == [
        ("metadata.name", "In", ["node-b"])
    ]


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ({"key": "zone", "operator": "NotIn", "values": ["z2"]}, ["node-a", "node-c"]),
        ({"key": "zone", "operator": "Exists"}, ["node-a", "node-b"]),
        ({"key": "zone", "operator": "DoesNotExist"}, ["node-c"]),
        ({"key": "gpus", "operator": "Gt", "values": ["4"]}, ["node-b"]),
        ({"key": "gpus", "operator": "Lt", "values": ["8"]}, ["node-a"]),
    ],
)
def test_node_selector_operators(requirement: dict[str, object], expected: list[str]) -> None:
    selector = {"nodeSelectorTerms": [{"matchExpressions": [requirement]}]}
    slices = [resource_slice("s", gpus(1), node=None, pool="p", nodeSelector=selector)]
    nodes = [
        node("node-a", zone="z1", gpus="4"),
        node("node-b", zone="z2", gpus="8"),
        node("node-c"),
    ]
    snap = Snapshot.build(slices=slices, classes=[device_class()], nodes=nodes)
    fits = []
    for name in ("node-a", "node-b", "node-c"):
        try:
            allocate(snap, [claim("c", exact())], node=name)
            fits.append(name)
        except UnsatisfiableError:
            pass
    assert fits == expected


def test_node_selector_with_an_unknown_operator_is_invalid_input() -> None:
    selector = {"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Near"}]}]}
    with pytest.raises(InvalidInputError) as info:
        Snapshot.build(
            slices=[resource_slice("s", gpus(1), node=None, nodeSelector=selector)],
            classes=[device_class()],
        )
    message = str(info.value)
    assert message.startswith(
        "slice s: spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].operator"
    )


def test_all_nodes_pool_without_nodes_is_node_independent() -> None:
    snap = Snapshot.build(
        slices=[resource_slice("s", gpus(1), node=None, pool="shared", allNodes=True)],
        classes=[device_class()],
    )
    alloc = allocate(snap, [claim("c", exact())])
    assert alloc.node is None
    assert alloc.results[0].node_selector is None


def test_binds_to_node_pins_an_all_nodes_device() -> None:
    snap = Snapshot.build(
        slices=[
            resource_slice("s", [device("d", bindsToNode=True)], node=None, pool="p", allNodes=True)
        ],
        classes=[device_class()],
        nodes=[node("node-a"), node("node-b")],
    )
    alloc = allocate(snap, [claim("c", exact())])
    assert alloc.node == "node-a"
    fields = alloc.results[0].node_selector.node_selector_terms[0].match_fields
    assert [(f.key, f.values) for f in fields] == [("metadata.name", ["node-a"])]


def test_per_device_node_selection() -> None:
    devices = [device("for-b", nodeName="node-b"), device("for-all", allNodes=True)]
    slices = [resource_slice("s", devices, node=None, pool="p", perDeviceNodeSelection=True)]
    snap = Snapshot.build(
        slices=slices, classes=[device_class()], nodes=[node("node-a"), node("node-b")]
    )
    on_a = allocate(snap, [claim("c", exact())], node="node-a")
    assert devices_of(on_a.results[0]) == [("gpu", "for-all")]
    assert on_a.results[0].node_selector is None
    on_b = allocate(snap, [claim("c", exact())], node="node-b")
    assert devices_of(on_b.results[0]) == [("gpu", "for-b")]
    fields = on_b.results[0].node_selector.node_selector_terms[0].match_fields
    assert fields[0].values == ["node-b"]


def test_node_selectors_of_several_slices_are_merged_into_one_term() -> None:
    def sel(key: str) -> dict[str, object]:
        return {"nodeSelectorTerms": [{"matchExpressions": [{"key": key, "operator": "Exists"}]}]}

    slices = [
        resource_slice("s1", gpus(1, prefix="x"), node=None, pool="p1", nodeSelector=sel("a")),
        resource_slice("s2", gpus(1, prefix="y"), node=None, pool="p2", nodeSelector=sel("b")),
    ]
    snap = Snapshot.build(slices=slices, classes=[device_class()], nodes=[node("n", a="1", b="1")])
    alloc = allocate(snap, [claim("c", exact(count=2))])
    expressions = alloc.results[0].node_selector.node_selector_terms[0].match_expressions
    assert [e.key for e in expressions] == ["a", "b"]


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


# -- input errors ------------------------------------------------------------------------


def test_missing_device_class_names_claim_and_field() -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    with pytest.raises(InvalidInputError) as info:
        allocate(snap, [claim("c", exact("gpu", "x"))])
    assert str(info.value).startswith(
        "claim default/c: spec.devices.requests[0].exactly.deviceClassName: "
        'device class "x" not found'
    )
    with pytest.raises(InvalidInputError) as sub_info:
        allocate(snap, [claim("c", first_available("r", sub("a"), sub("b", "y")))])
    assert "spec.devices.requests[0].firstAvailable[1].deviceClassName" in str(sub_info.value)


def test_selector_that_does_not_compile_is_located() -> None:
    broken = device_class("gpu", "device.driver ==")
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[broken])
    with pytest.raises(CelCompileError) as info:
        allocate(snap, [claim("c", exact())])
    assert str(info.value).startswith(
        "class gpu: spec.selectors[0].cel.expression: CEL compile error"
    )
    good = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    with pytest.raises(CelCompileError) as claim_info:
        allocate(good, [claim("c", exact(selectors=["device.driver =="]))])
    assert str(claim_info.value).startswith(
        "claim default/c: spec.devices.requests[0].exactly.selectors[0].cel.expression: "
        "CEL compile error"
    )


def test_class_selector_runtime_error_names_the_class() -> None:
    strict = device_class("gpu", f'device.attributes["{DRIVER}"].model == "x"')
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[strict])
    with pytest.raises(CelEvaluationError) as info:
        allocate(snap, [claim("c", exact())])
    assert str(info.value).startswith(
        "class gpu: selector #0: CEL runtime error: no such key: model"
    )


@pytest.mark.parametrize(
    ("request_", "field", "text"),
    [
        (
            exact(mode="Some"),
            "spec.devices.requests[0].exactly.allocationMode",
            "unsupported count mode Some",
        ),
        (exact(count=0), "spec.devices.requests[0].exactly.count", "greater than zero"),
        (exact(mode="All", count=2), "spec.devices.requests[0].exactly.count", "must not be set"),
    ],
)
def test_invalid_requests(request_: dict[str, object], field: str, text: str) -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    with pytest.raises(InvalidInputError) as info:
        allocate(snap, [claim("c", request_)])
    assert f"claim default/c: {field}: " in str(info.value)
    assert text in str(info.value)


def test_constraint_without_attribute_is_invalid() -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    with pytest.raises(InvalidInputError) as info:
        allocate(snap, [claim("c", exact(), constraints=[{"requests": ["gpu"]}])])
    assert "spec.devices.constraints[0]" in str(info.value)


def test_unknown_policy_is_invalid() -> None:
    snap = Snapshot.build(slices=[resource_slice("s", gpus(1))], classes=[device_class()])
    with pytest.raises(InvalidInputError) as info:
        allocate(snap, [claim("c", exact())], policy="best")
    assert "first-fit" in str(info.value)


def test_a_search_that_runs_out_of_time_is_aborted() -> None:
    # 40 devices on alternating NUMA nodes, two of them without the attribute:
    # 19 per NUMA node, 20 wanted on one. No combination works, and proving it
    # exhaustively takes millions of steps.
    devices = [device(f"gpu-{i}", attributes={"numa": i % 2}) for i in range(40)]
    devices[38], devices[39] = device("gpu-38"), device("gpu-39")
    snap = Snapshot.build(slices=[resource_slice("s", devices)], classes=[device_class()])
    pending = claim("c", exact(count=20), constraints=[{"matchAttribute": f"{DRIVER}/numa"}])
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, [pending], timeout=0.05)
    assert "filter operation aborted" in info.value.reasons["claim default/c"]  # type: ignore[attr-defined]


def test_per_device_node_selector_is_checked_when_the_snapshot_is_built() -> None:
    bad = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["x"]}]}
        ]
    }
    with pytest.raises(InvalidInputError) as info:
        Snapshot.build(
            slices=[
                resource_slice(
                    "s",
                    [device("d", nodeSelector=bad)],
                    node=None,
                    perDeviceNodeSelection=True,
                )
            ],
            classes=[device_class()],
        )
    assert "slice s: spec.devices[0].nodeSelector.nodeSelectorTerms[0].matchFields[0].key" in str(
        info.value
    )
