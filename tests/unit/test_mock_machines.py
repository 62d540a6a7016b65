"""Named mock machines: their NVLink topology, the attributes published from it, and
the allocator placing on it (``matchAttribute`` on the island, the ``topology`` policy)."""

from __future__ import annotations

from typing import Any

import pytest
from allocator_fixtures import DRIVER, claim, device_class, devices_of, exact, holding

from api.errors import UnsatisfiableError
from api.resource_v1 import ResourceSlice
from dra_driver.allocator import Snapshot, allocate, explain
from dra_driver.discovery.mock import MockBackend, parse_mock_profile
from dra_driver.discovery.mock_machines import MOCK_MACHINES
from dra_driver.slices import build_slices

NODE = "node-a"
ISLAND = f"{DRIVER}/nvlinkIsland"
CLASSES = [device_class("gpu", f'device.attributes["{DRIVER}"].type == "gpu"')]


def gpu_slices(profile: str) -> list[ResourceSlice]:
    return build_slices(MockBackend(NODE, profile).discover(), partitionable=False)


def attributes(
    profile: str, *, partitionable: bool = False, node: str = NODE
) -> dict[str, dict[str, Any]]:
    """Device name -> its attributes (JSON form) on a mock node of ``profile``."""
    slices = build_slices(MockBackend(node, profile).discover(), partitionable=partitionable)
    return {
        d.name: {k: v.model_dump(by_alias=True, exclude_none=True) for k, v in d.attributes.items()}
        for s in slices
        for d in s.spec.devices or ()
        if d.attributes
    }


@pytest.mark.parametrize("name", sorted(MOCK_MACHINES))
def test_every_machine_parses_as_its_gpu_profile(name: str) -> None:
    assert parse_mock_profile(name) == parse_mock_profile(MOCK_MACHINES[name].profile)


def test_plain_profiles_publish_no_nvlink_attributes() -> None:
    for attrs in attributes("8xH100-80GB", partitionable=True).values():
        assert not {"nvlinkIsland", "nvlinkPeerCount", "fabricClusterUUID"} & attrs.keys()


def test_nvswitch_box_is_one_island_of_all_peers() -> None:
    gpus = MockBackend(NODE, "dgx-h100").discover().gpus
    assert len(gpus) == 8
    assert {g.nvlink_island for g in gpus} == {gpus[0].uuid}
    assert gpus[3].nvlink_peers == (0, 1, 2, 4, 5, 6, 7)
    assert all(g.fabric_clique_id is None for g in gpus)


def test_pairs_box_has_one_nvlink_pair_per_pcie_root_and_numa_node() -> None:
    gpus = MockBackend(NODE, "pairs-4xA100").discover().gpus
    assert [g.nvlink_peers for g in gpus] == [(1,), (0,), (3,), (2,)]
    assert [g.nvlink_island for g in gpus] == [gpus[0].uuid] * 2 + [gpus[2].uuid] * 2
    assert [g.pcie_root for g in gpus] == ["pci0000:00"] * 2 + ["pci0000:80"] * 2
    assert [g.numa_node for g in gpus] == [0, 0, 1, 1]


def test_pcie_box_gpus_are_islands_of_their_own() -> None:
    attrs = attributes("pcie-4xL40S")
    assert len({a["nvlinkIsland"]["string"] for a in attrs.values()}) == 4
    assert {a["nvlinkPeerCount"]["int"] for a in attrs.values()} == {0}


def test_rack_node_publishes_fabric_and_mig_devices_inherit_it() -> None:
    attrs = attributes("rack-4xH100", partitionable=True)
    gpu = attrs["gpu-0"]
    cluster = gpu["fabricClusterUUID"]["string"]
    assert gpu["fabricCliqueID"] == {"int": 1}
    assert gpu["nvlinkIsland"] == {"string": f"{cluster}/1"}
    assert gpu["nvlinkPeerCount"] == {"int": 3}
    # Another node of the rack is the same island.
    other = attributes("rack-4xH100", node="node-b")["gpu-0"]
    assert other["nvlinkIsland"] == gpu["nvlinkIsland"]
    migs = [name for name in attrs if name.startswith("gpu-0-mig-")]
    assert migs
    for name in migs:
        for key in ("nvlinkIsland", "nvlinkPeerCount", "fabricClusterUUID", "fabricCliqueID"):
            assert attrs[name][key] == gpu[key]


def island_claim(count: int) -> Any:
    return claim("c", exact(count=count), constraints=[{"matchAttribute": ISLAND}])


def test_match_attribute_on_the_island_keeps_a_claim_on_one_pair() -> None:
    snap = Snapshot.build(
        slices=gpu_slices("pairs-4xA100"),
        classes=CLASSES,
        claims=[holding("x", "gpu-0", pool=NODE)],
    )
    alloc = allocate(snap, [island_claim(2)])
    assert [d for _, d in devices_of(alloc.results[0])] == ["gpu-2", "gpu-3"]


def test_match_attribute_on_the_island_fits_four_on_nvswitch_not_on_pcie() -> None:
    snap = Snapshot.build(slices=gpu_slices("dgx-h100"), classes=CLASSES)
    assert len(devices_of(allocate(snap, [island_claim(4)]).results[0])) == 4
    snap = Snapshot.build(slices=gpu_slices("pcie-4xL40S"), classes=CLASSES)
    with pytest.raises(UnsatisfiableError):
        allocate(snap, [island_claim(2)])


def test_topology_policy_gives_a_two_gpu_claim_one_nvlink_pair() -> None:
    snap = Snapshot.build(
        slices=gpu_slices("pairs-4xA100"),
        classes=CLASSES,
        claims=[holding("x", "gpu-0", pool=NODE)],
    )
    pending = [claim("c", exact(count=2))]
    # First fit straddles the pairs; topology takes the free pair.
    assert [d for _, d in devices_of(allocate(snap, pending).results[0])] == ["gpu-1", "gpu-2"]
    topo = allocate(snap, pending, policy="topology")
    assert [d for _, d in devices_of(topo.results[0])] == ["gpu-2", "gpu-3"]


def test_explain_names_the_island_constraint_and_what_the_node_offers() -> None:
    snap = Snapshot.build(slices=gpu_slices("pcie-4xL40S"), classes=CLASSES)
    (reason,) = explain(snap, [island_claim(2)]).reasons().values()
    assert f"no value of {ISLAND} (matchAttribute over gpu)" in reason
    assert "the most one value offers is 1 (GPU-" in reason
