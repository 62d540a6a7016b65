"""``allocate(..., nodes=...)`` and ``explain(..., nodes=...)``: a caller's own node filter."""

from __future__ import annotations

from typing import Any

import pytest
from allocator_fixtures import (
    Version,
    claim,
    device,
    device_class,
    exact,
    holding,
    node,
    resource_slice,
)

from api.errors import UnsatisfiableError
from dra_driver.allocator import POLICIES, Snapshot, allocate, explain

CLASSES = [device_class()]


def gpu(name: str, capability: str) -> dict[str, Any]:
    return device(
        name,
        attributes={"cudaComputeCapability": Version(capability)},
        capacity={"memory": "80Gi"},
    )


def _cluster() -> Snapshot:
    slices = [
        resource_slice("a", [gpu("gpu-0", "8.0.0")], node="node-a"),
        resource_slice("b", [gpu("gpu-0", "9.0.0")], node="node-b"),
        resource_slice("c", [gpu("gpu-0", "9.0.0")], node="node-c"),
    ]
    nodes = [node("node-a"), node("node-b"), node("node-c")]
    return Snapshot.build(slices=slices, classes=CLASSES, nodes=nodes)


@pytest.mark.parametrize("policy", POLICIES)
def test_only_the_given_nodes_are_candidates(policy: str) -> None:
    snap = _cluster()
    assert allocate(snap, [claim("x", exact())], policy=policy, nodes=["node-c"]).node == "node-c"
    chosen = allocate(snap, [claim("x", exact())], policy=policy, nodes=["node-c", "node-a"]).node
    assert chosen in {"node-a", "node-c"}


def test_policies_rank_within_the_given_nodes() -> None:
    snap = _cluster()
    # most-capable prefers an H100 node; among node-a and node-c that is node-c.
    picked = allocate(
        snap, [claim("x", exact())], policy="most-capable", nodes=["node-a", "node-c"]
    )
    assert picked.node == "node-c"
    # first-fit takes the first node in name order among the allowed ones.
    assert allocate(snap, [claim("x", exact())], nodes=["node-c", "node-b"]).node == "node-b"


def test_an_empty_list_leaves_no_candidate() -> None:
    with pytest.raises(UnsatisfiableError, match="any of 0 node"):
        allocate(_cluster(), [claim("x", exact())], nodes=[])


def test_node_and_nodes_together() -> None:
    snap = _cluster()
    assert allocate(snap, [claim("x", exact())], node="node-b", nodes=["node-b"]).node == "node-b"
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [claim("x", exact())], node="node-b", nodes=["node-a"])


def test_full_allowed_nodes_are_unsatisfiable_even_when_others_are_free() -> None:
    snap = _cluster()
    snap.add_allocated(holding("held", "gpu-0", pool="node-a"))
    with pytest.raises(UnsatisfiableError) as info:
        allocate(snap, [claim("x", exact())], nodes=["node-a"])
    assert "in use by claim default/held" in info.value.reasons["claim default/x"]
    # The memo of infeasible nodes does not leak a filtered run into an unfiltered one.
    assert allocate(snap, [claim("x", exact())]).node == "node-b"


def test_explain_reports_only_the_given_nodes() -> None:
    explanation = explain(_cluster(), [claim("x", exact())], nodes=["node-c", "node-a"])
    assert [report.node for report in explanation.nodes] == ["node-a", "node-c"]
