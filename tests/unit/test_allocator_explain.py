"""The explainer: per node and request, why devices are not eligible, and the closest node."""

from __future__ import annotations

import json

import pytest
from allocator_fixtures import (
    DRIVER,
    claim,
    counter_set,
    device,
    device_class,
    exact,
    first_available,
    holding,
    resource_slice,
    sub,
)

from api.errors import InvalidInputError, UnsatisfiableError
from api.resource_v1 import ResourceClaim, ResourceSlice
from dra_driver.allocator import Snapshot, allocate, explain

GPU_CLASS = device_class("gpu", f'device.attributes["{DRIVER}"].type == "gpu"')
BIG = f'device.capacity["{DRIVER}"].memory.compareTo(quantity("80Gi")) >= 0'


def _mixed_node() -> list[ResourceSlice]:
    """One device failing each check in turn, and one eligible device."""

    def gpu(name: str, memory: str = "80Gi", **extra: object) -> dict[str, object]:
        return device(
            name, attributes={"type": "gpu", "numa": 0}, capacity={"memory": memory}, **extra
        )

    devices = [
        device("mig", attributes={"type": "mig"}),
        gpu("small", memory="40Gi"),
        gpu("busy"),
        gpu("tainted", taints=[("broken", None, "NoExecute")]),
        gpu("partition", counters={"set": {"slots": "2"}}),
        device("no-numa", attributes={"type": "gpu"}, capacity={"memory": "80Gi"}),
        gpu("free"),
    ]
    return [
        resource_slice("devices", devices, count=2),
        resource_slice("counters", count=2, counter_sets=[counter_set("set", {"slots": "1"})]),
    ]


def _pending() -> list[ResourceClaim]:
    return [
        claim(
            "c",
            exact(count=2, selectors=[BIG]),
            constraints=[{"matchAttribute": f"{DRIVER}/numa"}],
        )
    ]


def test_each_device_is_counted_under_the_first_check_it_fails() -> None:
    snap = Snapshot.build(slices=_mixed_node(), classes=[GPU_CLASS], claims=[holding("x", "busy")])
    explanation = explain(snap, _pending())
    report = explanation.to_json()
    (node,) = report["nodes"]
    assert node["node"] == "node-a"
    assert node["allocatable"] is False
    assert node["shortfall"] == 1
    (request,) = node["claims"][0]["requests"]
    assert {k: v for k, v in request.items() if isinstance(v, int)} == {
        "needed": 2,
        "considered": 7,
        "classSelectorsFalse": 1,
        "requestSelectorsFalse": 1,
        "selectorErrors": 0,
        "notOnNode": 0,
        "inUse": 1,
        "capacityInsufficient": 0,
        "countersExhausted": 1,
        "tainted": 1,
        "constraintUnmet": 1,
        "eligible": 1,
    }
    assert request["inUseBy"] == {"claim default/x": 1}
    assert report["closestNode"] == "node-a"
    assert json.loads(json.dumps(report)) == report  # plain JSON types only (no tuples, sets)


def test_unsatisfiable_reasons_name_the_closest_node_and_the_holders() -> None:
    snap = Snapshot.build(slices=_mixed_node(), classes=[GPU_CLASS], claims=[holding("x", "busy")])
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, _pending())
    reason = info.value.reasons["claim default/c"]  # type: ignore[attr-defined]
    assert reason.startswith(
        "no fit on node node-a: request gpu: needs 2, 1 eligible of 7 devices ("
    )
    assert "1 in use by claim default/x" in reason
    assert "1 tainted" in reason


def test_capacity_shortfall_is_reported() -> None:
    snap = Snapshot.build(slices=_mixed_node(), classes=[GPU_CLASS])
    explanation = explain(snap, [claim("c", exact(capacity={"memory": "100Gi"}))])
    (request,) = explanation.nodes[0].claims[0].requests
    assert request.counts["capacityInsufficient"] == 6
    assert request.eligible == 0


def test_closest_node_has_the_smallest_shortfall() -> None:
    slices = [
        resource_slice("a", [device("gpu-0", attributes={"type": "gpu"})], node="node-a"),
        resource_slice(
            "b",
            [device(f"gpu-{i}", attributes={"type": "gpu"}) for i in range(2)],
            node="node-b",
        ),
        resource_slice("c", [device("nic", attributes={"type": "nic"})], node="node-c"),
    ]
    snap = Snapshot.build(slices=slices, classes=[GPU_CLASS])
    explanation = explain(snap, [claim("c", exact(count=3))])
    assert [n.node for n in explanation.nodes] == ["node-a", "node-b", "node-c"]
    assert [n.shortfall for n in explanation.nodes] == [2, 1, 3]
    assert explanation.to_json()["closestNode"] == "node-b"
    assert explanation.to_json()["allocatable"] is False
    fits = explain(snap, [claim("c", exact(count=2))])
    assert fits.to_json()["closestNode"] == "node-b"
    assert [n.allocatable for n in fits.nodes] == [False, True, False]


def test_first_available_alternatives_are_reported_separately() -> None:
    snap = Snapshot.build(
        slices=[resource_slice("a", [device("gpu-0", attributes={"type": "gpu"})])],
        classes=[GPU_CLASS],
    )
    explanation = explain(snap, [claim("c", first_available("r", sub("two", count=2), sub("one")))])
    requests = explanation.nodes[0].claims[0].requests
    assert [(r.request, r.needed, r.eligible) for r in requests] == [
        ("r/two", 2, 1),
        ("r/one", 1, 1),
    ]
    assert explanation.nodes[0].allocatable is True
    assert explanation.nodes[0].shortfall == 0


def test_selector_errors_are_counted_not_raised() -> None:
    strict = device_class("gpu", f'device.attributes["{DRIVER}"].model == "x"')
    devices = [device("gpu-0", attributes={"model": "x"}), device("gpu-1")]
    snap = Snapshot.build(
        slices=[resource_slice("s", devices)], classes=[strict], claims=[holding("h", "gpu-0")]
    )
    explanation = explain(snap, [claim("c", exact())])
    node = explanation.nodes[0]
    (request,) = node.claims[0].requests
    assert request.counts["selectorErrors"] == 1
    assert request.selector_error is not None
    assert request.selector_error.startswith(
        "class gpu: selector #0: CEL runtime error: no such key"
    )
    assert node.error is not None and "no such key: model" in node.error
    assert "no such key" in explanation.render_table()


def test_incomplete_and_invalid_pools_are_listed() -> None:
    slices = [
        resource_slice("p-0", [device("gpu-0", attributes={"type": "gpu"})], pool="p", count=2),
        resource_slice("q-0", [device("gpu-0", attributes={"type": "gpu"})], pool="q", count=2),
        resource_slice("q-1", [device("gpu-0", attributes={"type": "gpu"})], pool="q", count=2),
    ]
    snap = Snapshot.build(slices=slices, classes=[GPU_CLASS])
    node = explain(snap, [claim("c", exact())]).to_json()["nodes"][0]
    assert node["incompletePools"] == [f"{DRIVER}/p"]
    assert node["invalidPools"] == {f"{DRIVER}/q": "duplicate device name gpu-0"}
    assert node["claims"][0]["requests"][0]["considered"] == 0


def test_render_table_has_one_row_per_node_and_request() -> None:
    slices = [
        resource_slice("a", [device("gpu-0", attributes={"type": "gpu"})], node="node-a"),
        resource_slice("b", [device("gpu-0", attributes={"type": "gpu"})], node="node-b"),
    ]
    snap = Snapshot.build(slices=slices, classes=[GPU_CLASS], claims=[holding("x", "gpu-0")])
    table = explain(snap, [claim("c", exact(), exact("more"))]).render_table()
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["NODE", "CLAIM", "REQUEST", "NEEDED", "CONSIDERED"]
    rows = [line.split() for line in lines[1:5]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("node-a", "default/c", "gpu"),
        ("node-a", "default/c", "more"),
        ("node-b", "default/c", "gpu"),
        ("node-b", "default/c", "more"),
    ]
    assert "node-a gpu: in use by claim default/x (1)" in table
    assert "closest node: node-b" in table


def test_explain_for_one_node_and_invalid_input() -> None:
    slices = [
        resource_slice("a", [device("gpu-0", attributes={"type": "gpu"})], node="node-a"),
        resource_slice("b", [device("gpu-0", attributes={"type": "gpu"})], node="node-b"),
    ]
    snap = Snapshot.build(slices=slices, classes=[GPU_CLASS])
    assert [n.node for n in explain(snap, [claim("c", exact())], node="node-b").nodes] == ["node-b"]
    with pytest.raises(InvalidInputError):
        explain(snap, [claim("c", exact("gpu", "missing"))])


def test_a_claim_that_fits_only_in_the_free_total_is_called_fragmented() -> None:
    slices = [
        resource_slice("a", [device("gpu-0", attributes={"type": "gpu"})], node="node-a"),
        resource_slice(
            "b",
            [device(f"gpu-{i}", attributes={"type": "gpu"}) for i in range(2)],
            node="node-b",
        ),
    ]
    snap = Snapshot.build(slices=slices, classes=[GPU_CLASS])
    explanation = explain(snap, [claim("c", exact(count=3))])

    (found,) = explanation.fragmented()
    assert (found.request, found.needed, found.eligible, found.most, found.node) == (
        "gpu",
        3,
        3,
        2,
        "node-b",
    )
    note = (
        "request gpu needs 3 device(s): 3 eligible on all nodes together, at most 2 on one "
        "node (node-b); the free devices are fragmented"
    )
    assert explanation.reasons()["claim default/c"].endswith(note)
    assert f"default/c: {note}" in explanation.render_table().splitlines()
    assert explanation.to_json()["fragmented"] == [
        {
            "claim": "claim default/c",
            "request": "gpu",
            "needed": 3,
            "eligible": 3,
            "mostOnOneNode": 2,
            "node": "node-b",
        }
    ]
    # Not enough free devices anywhere, or a node that fits: no such note.
    assert explain(snap, [claim("c", exact(count=4))]).fragmented() == []
    assert explain(snap, [claim("c", exact(count=2))]).fragmented() == []
