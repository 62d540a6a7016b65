"""The mock backend: profiles, determinism by node name, topology, MIG layouts, fault injection."""

from __future__ import annotations

import threading

import pytest

from api.errors import InvalidInputError
from dra_driver.discovery.mock import MockBackend, parse_mock_profile
from dra_driver.discovery.model import DiscoveryBackend, Gpu


def test_default_profile_is_eight_h100_with_driver_550_and_cuda_12_4() -> None:
    inventory = MockBackend("node-a").discover()
    assert len(inventory.gpus) == 8
    assert {g.product_name for g in inventory.gpus} == {"NVIDIA H100 80GB HBM3"}
    assert str(inventory.driver_version) == "550.54.15"
    assert str(inventory.cuda_driver_version) == "12.4.0"
    gpu = inventory.gpus[0]
    assert (gpu.brand, gpu.architecture, str(gpu.cuda_compute_capability)) == (
        "Nvidia",
        "Hopper",
        "9.0.0",
    )
    assert gpu.memory_bytes == 80 << 30
    assert gpu.mig_capable and not gpu.mig_enabled
    assert gpu.memory_slices == 8


def test_mock_is_a_discovery_backend() -> None:
    backend: DiscoveryBackend = MockBackend("node-a")
    inventory = backend.discover()
    # The node's GPUs, numbered from 0, each under its own UUID...
    assert inventory.node_name == "node-a"
    assert [g.index for g in inventory.gpus] == list(range(8))
    assert len({g.uuid for g in inventory.gpus}) == 8
    # ...the same for another backend of the same node (a restarted agent sees its GPUs again)...
    assert MockBackend("node-a").discover() == inventory
    # ...and no health event until one is injected: the wait ends with None.
    assert backend.wait_health_event(0.01) is None


def test_same_node_same_uuids_other_node_other_uuids() -> None:
    first = MockBackend("node-a", "4xA100-40GB").discover()
    again = MockBackend("node-a", "4xA100-40GB").discover()
    other = MockBackend("node-b", "4xA100-40GB").discover()
    assert [g.uuid for g in first.gpus] == [g.uuid for g in again.gpus]
    assert not {g.uuid for g in first.gpus} & {g.uuid for g in other.gpus}
    assert len({g.uuid for g in first.gpus}) == 4
    assert all(g.uuid.startswith("GPU-") for g in first.gpus)


def test_uuids_match_the_shipped_example_inventory() -> None:
    # deploy/examples/inventory/slice-gpu-node-h100.yaml was written from this mock.
    gpus = MockBackend("gpu-node-h100").discover().gpus
    assert gpus[0].uuid == "GPU-c11a9304-2ceb-5d43-b7c2-dfb4bc10eb76"
    assert gpus[1].uuid == "GPU-179ad5c4-1ccf-5d2e-a3f2-4106a396d66a"


def test_half_the_gpus_per_pcie_root_and_numa_node() -> None:
    gpus = MockBackend("node-a", "8xH100-80GB").discover().gpus
    assert [g.pcie_root for g in gpus] == ["pci0000:00"] * 4 + ["pci0000:80"] * 4
    assert [g.numa_node for g in gpus] == [0] * 4 + [1] * 4
    assert [g.pci_bus_id for g in gpus] == [
        "0000:18:00.0",
        "0000:2a:00.0",
        "0000:3a:00.0",
        "0000:5d:00.0",
        "0000:9a:00.0",
        "0000:ab:00.0",
        "0000:ba:00.0",
        "0000:db:00.0",
    ]
    two = MockBackend("node-a", "2xA100-80GB").discover().gpus
    assert [g.numa_node for g in two] == [0, 1]


def test_sixteen_gpus_have_distinct_bus_ids() -> None:
    gpus = MockBackend("node-a", "16xL4").discover().gpus
    assert len({g.pci_bus_id for g in gpus}) == 16
    assert [g.index for g in gpus] == list(range(16))
    assert [g.minor for g in gpus] == list(range(16))


def test_mixed_profile_keeps_group_order() -> None:
    gpus = MockBackend("node-a", "4xA100-40GB,4xL4").discover().gpus
    assert [g.product_name for g in gpus] == ["NVIDIA A100-SXM4-40GB"] * 4 + ["NVIDIA L4"] * 4
    assert [g.mig_capable for g in gpus] == [True] * 4 + [False] * 4
    l4 = gpus[4]
    assert (l4.architecture, str(l4.cuda_compute_capability), l4.mig_profiles) == (
        "Ada Lovelace",
        "8.9.0",
        (),
    )


def _profiles(gpu: Gpu) -> dict[str, tuple[int, int, int, tuple[tuple[int, int], ...]]]:
    return {
        p.name: (p.profile_id, p.multiprocessors, p.memory_bytes >> 20, p.placements)
        for p in gpu.mig_profiles
    }


def test_h100_mig_profiles_carry_real_ids_counts_and_placements() -> None:
    profiles = _profiles(MockBackend("node-a", "1xH100-80GB").discover().gpus[0])
    assert profiles == {
        "1g.10gb": (19, 16, 9984, tuple((s, 1) for s in range(7))),
        "1g.10gb+me": (20, 16, 9984, tuple((s, 1) for s in range(7))),
        "1g.20gb": (15, 26, 20096, ((0, 2), (2, 2), (4, 2), (6, 2))),
        "2g.20gb": (14, 32, 20096, ((0, 2), (2, 2), (4, 2))),
        "3g.40gb": (9, 60, 40448, ((0, 4), (4, 4))),
        "4g.40gb": (5, 64, 40448, ((0, 4),)),
        "7g.80gb": (0, 132, 81152, ((0, 8),)),
    }


def test_a100_mig_profile_names() -> None:
    a40 = MockBackend("n", "1xA100-40GB").discover().gpus[0]
    a80 = MockBackend("n", "1xA100-80GB").discover().gpus[0]
    assert sorted(p.name for p in a40.mig_profiles) == [
        "1g.10gb",
        "1g.5gb",
        "1g.5gb+me",
        "2g.10gb",
        "3g.20gb",
        "4g.20gb",
        "7g.40gb",
    ]
    assert sorted(p.name for p in a80.mig_profiles) == [
        "1g.10gb",
        "1g.10gb+me",
        "1g.20gb",
        "2g.20gb",
        "3g.40gb",
        "4g.40gb",
        "7g.80gb",
    ]
    me = next(p for p in a40.mig_profiles if p.name == "1g.5gb+me")
    assert (me.instance_count, me.ofa_engines, me.jpeg_engines) == (1, 1, 1)


def test_static_mig_layout_is_placed_without_overlap() -> None:
    gpus = MockBackend("node-a", "2xA100-40GB:mig=3g.20gb/2x2g.10gb,1xL4").discover().gpus
    for gpu in gpus[:2]:
        assert gpu.mig_enabled
        layout = [(d.profile.name, d.placement) for d in gpu.mig_devices]
        # The 3g instance must move to slice 4 for both 2g instances to fit.
        assert layout == [("3g.20gb", (4, 4)), ("2g.10gb", (0, 2)), ("2g.10gb", (2, 2))]
        assert all(d.uuid.startswith("MIG-") for d in gpu.mig_devices)
    assert len({d.uuid for g in gpus for d in g.mig_devices}) == 6
    assert not gpus[2].mig_enabled


def test_mig_mode_on_without_devices() -> None:
    gpu = MockBackend("node-a", "1xH100-80GB:mig=").discover().gpus[0]
    assert gpu.mig_enabled
    assert gpu.mig_devices == ()


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("8xB300", "unknown GPU model 'B300': known are H100-80GB"),
        ("2xL4:mig=1g.5gb", "L4 is not MIG-capable"),
        ("1xA100-40GB:mig=1g.20gb", "unknown MIG profile '1g.20gb'"),
        ("1xA100-40GB:mig=2x4g.20gb", "2 4g.20gb MIG devices on one A100-40GB, at most 1"),
        ("1xA100-40GB:mig=4g.20gb/4g.20gb", "at most 1"),
        ("1xA100-40GB:mig=7g.40gb/1g.5gb", "does not fit on one A100-40GB"),
        ("1xA100-40GB:foo=1", "unknown option"),
        ("9xH100-80GB,8xL4", "17 GPUs, at most 16"),
        ("4xA100-40GB,,4xL4", "empty GPU group"),
        ("0xL4", "at least one GPU"),
    ],
)
def test_bad_profiles_say_what_is_wrong(profile: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match="mock profile") as info:
        parse_mock_profile(profile)
    assert message in str(info.value)


def test_profile_names_are_case_insensitive() -> None:
    (group,) = parse_mock_profile("2xh100-80gb")
    assert (group.model.key, group.count) == ("H100-80GB", 2)


def test_node_name_is_required() -> None:
    with pytest.raises(InvalidInputError, match="node name"):
        MockBackend("")


def test_injected_events_come_back_in_order() -> None:
    backend = MockBackend("node-a", "2xH100-80GB")
    first, second = (g.uuid for g in backend.discover().gpus)
    assert backend.wait_health_event(0) is None
    backend.inject_xid(first, 79)
    backend.inject_ecc(second)
    backend.inject_ecc(second, double_bit=False)
    backend.inject_gpu_lost()
    backend.inject_gpu_lost(second)
    events = [backend.wait_health_event(0) for _ in range(5)]
    assert [(e.kind, e.gpu_uuid, e.xid) for e in events if e is not None] == [
        ("xid", first, 79),
        ("ecc-double-bit", second, None),
        ("ecc-single-bit", second, None),
        ("gpu-lost", None, None),
        ("gpu-lost", second, None),
    ]
    assert backend.wait_health_event(0) is None


def test_injection_from_another_thread_wakes_the_waiter() -> None:
    backend = MockBackend("node-a", "1xL4")
    gpu = backend.discover().gpus[0].uuid
    thread = threading.Thread(target=backend.inject_xid, args=(gpu, 48))
    thread.start()
    # Generous bound: the event is normally there at once.
    event = backend.wait_health_event(30)
    thread.join()
    assert event is not None and (event.kind, event.xid) == ("xid", 48)


def test_injecting_for_an_unknown_gpu_is_an_error() -> None:
    backend = MockBackend("node-a", "1xL4")
    with pytest.raises(InvalidInputError, match="no GPU with UUID 'GPU-nope'"):
        backend.inject_xid("GPU-nope", 79)
    with pytest.raises(InvalidInputError, match="positive"):
        backend.inject_xid(backend.discover().gpus[0].uuid, 0)
