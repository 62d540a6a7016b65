"""allocate_group: a pod group's claims in one decision, all or nothing, on one NVLink island
where it can, moving an earlier member when a later one fits nowhere."""

from __future__ import annotations

from collections.abc import Sequence

from api.resource_v1 import DeviceClass, ResourceClaim, ResourceClaimStatus
from dra_driver.allocator import Snapshot, allocate
from dra_driver.allocator.groups import (
    GroupMember,
    GroupPlacement,
    GroupShortfall,
    allocate_group,
    island_of,
    requested_devices,
)
from dra_driver.discovery.mock import MockBackend
from dra_driver.slices import build_slices

DRIVER = "gpu.dra-driver.io"
GPU_CLASS = DeviceClass.model_validate(
    {
        "metadata": {"name": "gpu"},
        "spec": {
            "selectors": [
                {
                    "cel": {
                        "expression": f'device.driver == "{DRIVER}" && '
                        f'device.attributes["{DRIVER}"].type == "gpu"'
                    }
                }
            ]
        },
    }
)


def _snapshot(machines: dict[str, str], claims: Sequence[ResourceClaim] = ()) -> Snapshot:
    slices = []
    for node, profile in machines.items():
        slices += build_slices(MockBackend(node, profile).discover(), driver_name=DRIVER)
    return Snapshot.build(slices=slices, classes=[GPU_CLASS], claims=list(claims), nodes=[])


def _claim(name: str, count: int) -> ResourceClaim:
    return ResourceClaim.model_validate(
        {
            "metadata": {"name": name, "namespace": "ml"},
            "spec": {
                "devices": {
                    "requests": [
                        {"name": "gpu", "exactly": {"deviceClassName": "gpu", "count": count}}
                    ]
                }
            },
        }
    )


def _members(size: int, count: int, nodes: Sequence[str], prefix: str = "p") -> list[GroupMember]:
    return [
        GroupMember(f"ml/{prefix}{i}", [_claim(f"{prefix}{i}-gpu", count)], list(nodes))
        for i in range(size)
    ]


def _holding(snapshot: Snapshot, name: str, count: int, node: str) -> ResourceClaim:
    """A claim of ``count`` GPUs allocated on ``node``, as someone else's pod holds it."""
    claim = _claim(name, count)
    found = allocate(snapshot, [claim], nodes=[node])
    held = claim.model_copy()
    held.status = ResourceClaimStatus(allocation=found.results[0])
    snapshot.add_allocated(held)
    return held


def _devices(placement: GroupPlacement) -> list[str]:
    return [
        f"{r.pool}/{r.device}"
        for a in placement.allocations.values()
        for res in a.results
        for r in (res.devices.results or [] if res.devices else [])
    ]


def test_a_group_that_fits_in_one_island_lands_on_one_island() -> None:
    snapshot = _snapshot({"a": "dgx-h100", "b": "dgx-h100"})
    placed = allocate_group(snapshot, _members(4, 2, ["a", "b"]), policy="binpack")
    assert isinstance(placed, GroupPlacement)
    assert placed.single_island
    assert len({a.node for a in placed.allocations.values()}) == 1
    assert len(set(_devices(placed))) == 8  # no device handed out twice


def test_a_group_larger_than_an_island_spreads_over_distinct_devices() -> None:
    snapshot = _snapshot({n: "dgx-h100" for n in ("a", "b", "c", "d")})
    placed = allocate_group(snapshot, _members(4, 8, ["a", "b", "c", "d"]), policy="binpack")
    assert isinstance(placed, GroupPlacement)
    assert sorted(a.node or "" for a in placed.allocations.values()) == ["a", "b", "c", "d"]
    assert len(set(_devices(placed))) == 32
    assert len(placed.islands) == 4


def test_a_group_that_does_not_fit_gets_nothing_and_the_closest_option() -> None:
    snapshot = _snapshot({"a": "dgx-h100", "b": "dgx-h100"})
    placed = allocate_group(snapshot, _members(3, 8, ["a", "b"]), policy="binpack")
    assert isinstance(placed, GroupShortfall)
    assert len(placed.placed) == 2
    assert placed.needed == 24
    assert placed.free == 16
    assert "places 2 of 3 pods" in placed.summary()
    assert "does not fit" in placed.summary()
    # Nothing was left held: one member alone still fits on each node.
    assert not any(snapshot.in_use(d.id) for n in ("a", "b") for d in snapshot.view(n).candidates)


def test_an_earlier_member_moves_when_a_later_one_fits_nowhere() -> None:
    snapshot = _snapshot({"a": "dgx-h100", "b": "dgx-h100", "c": "dgx-h100"})
    _holding(snapshot, "other", 8, "c")  # c is full
    first = GroupMember("ml/p0", [_claim("p0-gpu", 8)], ["a", "b"])
    second = GroupMember("ml/p1", [_claim("p1-gpu", 8)], ["a", "c"])
    # Same number of nodes each: p0 goes first and takes a (name order); p1 then fits
    # nowhere, so p0 moves to b and p1 gets a.
    placed = allocate_group(snapshot, [first, second], policy="first-fit")
    assert isinstance(placed, GroupPlacement)
    assert placed.allocations["ml/p0"].node == "b"
    assert placed.allocations["ml/p1"].node == "a"


def test_the_group_keeps_to_the_island_with_room_for_all_of_it() -> None:
    # pairs-4xA100: GPUs 0+1 and 2+3 are two NVLink islands; GPU 0 is taken, so only
    # the second pair holds both pods' GPUs.
    snapshot = _snapshot({"a": "pairs-4xA100"})
    held = _holding(snapshot, "other", 1, "a")
    assert held.status is not None
    placed = allocate_group(snapshot, _members(2, 1, ["a"]), policy="binpack")
    assert isinstance(placed, GroupPlacement)
    assert placed.single_island
    assert sorted(_devices(placed)) == ["a/gpu-2", "a/gpu-3"]


def test_requested_devices_counts_exact_and_first_available_requests() -> None:
    claim = ResourceClaim.model_validate(
        {
            "metadata": {"name": "c", "namespace": "ml"},
            "spec": {
                "devices": {
                    "requests": [
                        {"name": "a", "exactly": {"deviceClassName": "gpu", "count": 3}},
                        {"name": "b", "exactly": {"deviceClassName": "gpu"}},
                        {
                            "name": "c",
                            "exactly": {"deviceClassName": "gpu", "allocationMode": "All"},
                        },
                        {
                            "name": "d",
                            "firstAvailable": [
                                {"name": "big", "deviceClassName": "gpu", "count": 4},
                                {"name": "small", "deviceClassName": "gpu", "count": 2},
                            ],
                        },
                    ]
                }
            },
        }
    )
    assert requested_devices([claim]) == 6


def test_islands_the_group_holds_already_are_tried_first() -> None:
    # x: one NVSwitch island of 8; y: two NVLink pairs. A pod of the group holds a GPU on x
    # (the others kept theirs when this one gave its devices up at the confirm).
    snapshot = _snapshot({"x": "dgx-h100", "y": "pairs-4xA100"})
    held = _holding(snapshot, "w0-gpu", 1, "x")
    assert held.status is not None and held.status.allocation is not None
    (result,) = held.status.allocation.devices.results or []  # type: ignore[union-attr]
    island = island_of(snapshot, f"{result.driver}/{result.pool}/{result.device}", "x")
    assert island is not None
    member = GroupMember("ml/w1", [_claim("w1-gpu", 1)], ["x", "y"])
    # Alone, the fullest island with room comes first: a pair on y.
    alone = allocate_group(snapshot, [member], policy="binpack")
    assert isinstance(alone, GroupPlacement)
    assert alone.allocations["ml/w1"].node == "y"
    # Knowing where its group is, the pod joins it on x's island.
    joined = allocate_group(snapshot, [member], policy="binpack", held_islands={island})
    assert isinstance(joined, GroupPlacement)
    assert joined.allocations["ml/w1"].node == "x"
    assert joined.islands == (island,)
