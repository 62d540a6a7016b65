"""Allocator semantics of pools (generations, completeness, validity, search order) and of
nodes (first fit by name, node selectors, all-nodes and per-device node selection)."""

from __future__ import annotations

import pytest
from allocator_fixtures import (
    claim,
    device,
    device_class,
    devices_of,
    exact,
    gpus,
    holding,
    node,
    resource_slice,
)

from api.errors import InvalidInputError, UnsatisfiableError
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
