"""Inputs with no solution that exhaustive search would take exponential time to prove:
the necessary conditions (dra_driver.allocator.necessary) end them with a reason naming
the requests that cannot be met together, and never reject a node that has a solution."""

from __future__ import annotations

import pytest
from allocator_fixtures import DRIVER, claim, device, device_class, exact, resource_slice

from api.errors import UnsatisfiableError
from dra_driver.allocator import Snapshot, allocate, explain

NUMA = {"matchAttribute": f"{DRIVER}/numa"}


def _node(gpus: int, *, name: str = "node-a", taken: int = 0) -> list[object]:
    """``gpus`` GPUs on two NUMA nodes (alternating)."""
    return [
        resource_slice(
            name,
            [device(f"gpu-{i}", attributes={"numa": i % 2}) for i in range(gpus)],
            node=name,
        )
    ]


def _snapshot(gpus: int = 16) -> Snapshot:
    return Snapshot.build(slices=_node(gpus), classes=[device_class()])  # type: ignore[arg-type]


def test_claims_that_together_want_more_than_the_node_has_end_at_once() -> None:
    # Each claim alone fits (6 of 8 on one NUMA node); the three want 18 of 16 GPUs.
    pending = [claim(f"c{i}", exact(count=6), constraints=[NUMA]) for i in range(3)]
    with pytest.raises(UnsatisfiableError) as info:
        allocate(_snapshot(), pending, timeout=None)
    reason = info.value.reasons["claim default/c0"]  # type: ignore[attr-defined]
    assert "not all together" in reason, reason
    assert "need 18 devices" in reason and "16 such device(s)" in reason, reason
    for i in range(3):
        assert f"claim default/c{i} request gpu" in reason


def test_requests_with_the_same_devices_are_counted_together() -> None:
    # Two requests of one claim select only NUMA 0 (8 GPUs) and want 5 each; a third
    # request selects anything. 10 > 8 on the NUMA-0 set, though 16 in all would do.
    numa0 = [f'device.attributes["{DRIVER}"].numa == 0']
    pending = [
        claim(
            "c",
            exact("a", count=5, selectors=numa0),
            exact("b", count=5, selectors=numa0),
            exact("rest", count=1),
        )
    ]
    with pytest.raises(UnsatisfiableError) as info:
        allocate(_snapshot(), pending, timeout=None)
    reason = info.value.reasons["claim default/c"]  # type: ignore[attr-defined]
    assert "request a" in reason and "request b" in reason and "need 10 devices" in reason


def test_explain_names_the_requests_that_cannot_be_met_together() -> None:
    pending = [claim(f"c{i}", exact(count=6), constraints=[NUMA]) for i in range(3)]
    report = explain(_snapshot(), pending, timeout=None)
    (node,) = report.to_json()["nodes"]
    assert node["allocatable"] is False
    assert "need 18 devices" in node["together"]
    assert "node-a: not all together: " in report.render_table()


@pytest.mark.parametrize("claims", [1, 2])
def test_the_same_shapes_still_fit_where_they_can(claims: int) -> None:
    pending = [claim(f"c{i}", exact(count=6), constraints=[NUMA]) for i in range(claims)]
    allocation = allocate(_snapshot(), pending, timeout=None)
    for result in allocation.results:
        picked = [r.device for r in result.devices.results]  # type: ignore[union-attr]
        numa = {int(name.removeprefix("gpu-")) % 2 for name in picked}
        assert len(picked) == 6 and len(numa) == 1
    all_picked = [
        r.device
        for result in allocation.results
        for r in result.devices.results  # type: ignore[union-attr]
    ]
    assert len(set(all_picked)) == 6 * claims


def test_a_node_that_fails_the_conditions_is_skipped_for_one_that_fits() -> None:
    slices = _node(16) + _node(24, name="node-b")
    snapshot = Snapshot.build(slices=slices, classes=[device_class()])  # type: ignore[arg-type]
    pending = [claim(f"c{i}", exact(count=6), constraints=[NUMA]) for i in range(3)]
    allocation = allocate(snapshot, pending, timeout=None)
    assert allocation.node == "node-b"


DISTINCT_NUMA = {"distinctAttribute": f"{DRIVER}/numa"}


def test_a_distinct_attribute_wanting_more_values_than_the_node_has_ends_at_once() -> None:
    # Two NUMA values on the node; three GPUs on three different NUMA nodes cannot be had,
    # however many GPUs each NUMA node holds (the search would try every combination).
    pending = [claim("c", exact(count=2), exact("more", count=1), constraints=[DISTINCT_NUMA])]
    with pytest.raises(UnsatisfiableError) as info:
        allocate(_snapshot(64), pending, timeout=None)
    reason = info.value.reasons["claim default/c"]  # type: ignore[attr-defined]
    assert f"distinctAttribute {DRIVER}/numa over gpu, more wants 3 devices" in reason, reason
    assert "have 2 different value(s)" in reason, reason


def test_a_distinct_attribute_the_node_can_meet_is_still_met() -> None:
    pending = [claim("c", exact(count=2), constraints=[DISTINCT_NUMA])]
    (result,) = allocate(_snapshot(), pending, timeout=None).results
    picked = [r.device for r in result.devices.results]  # type: ignore[union-attr]
    assert len({int(name.removeprefix("gpu-")) % 2 for name in picked}) == 2


def test_a_distinct_attribute_is_checked_for_each_set_of_its_requests() -> None:
    # Together the two requests see both NUMA values, but "numa0" selects NUMA 0 only and
    # wants 2 different values: no device set can do it, whatever the others offer.
    numa0 = [f'device.attributes["{DRIVER}"].numa == 0']
    pending = [
        claim(
            "c",
            exact("numa0", count=2, selectors=numa0),
            exact("any", count=1),
            constraints=[DISTINCT_NUMA],
        )
    ]
    with pytest.raises(UnsatisfiableError) as info:
        allocate(_snapshot(), pending, timeout=None)
    reason = info.value.reasons["claim default/c"]  # type: ignore[attr-defined]
    assert "over numa0 wants 2 devices with different values" in reason, reason
    assert "have 1 different value(s)" in reason, reason
