"""NvmlBackend against a fake pynvml module: properties, transforms, MIG, errors, health events."""

from __future__ import annotations

from pathlib import Path

import pytest
from discovery_nvml_fake import (
    EVENT_CLOCK,
    EVENT_DOUBLE_BIT_ECC,
    EVENT_SINGLE_BIT_ECC,
    EVENT_XID,
    GPU_IS_LOST,
    INVALID_ARGUMENT,
    LIBRARY_NOT_FOUND,
    NOT_SUPPORTED,
    UNKNOWN,
    FakeMig,
    FakeNvml,
    fake_gpu,
    make_sysfs,
)

from api.errors import DiscoveryError
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import DiscoveryBackend
from dra_driver.slices import build_slices
from kubelet_plugin.nvml import NvmlBackend, load_pynvml, preload_library

H100_UUID = "GPU-11111111-2222-3333-4444-555555555555"
L4_UUID = "GPU-66666666-7777-8888-9999-000000000000"


def _backend(nvml: FakeNvml, sysfs: Path, node: str = "node-a") -> NvmlBackend:
    return NvmlBackend(node, nvml=nvml, sysfs_root=sysfs)


def test_every_property_is_read_and_normalised(tmp_path: Path) -> None:
    nvml = FakeNvml(
        [
            fake_gpu("H100-80GB", H100_UUID, minor=0, bus_id="00000000:3B:00.0", numa=1),
            # Non-contiguous minor; an older driver without nvmlDeviceGetNumaNodeId.
            fake_gpu("L4", L4_UUID, minor=3, bus_id="00000000:DB:00.0", numa=None),
        ],
        driver=b"535.104.05",
        cuda=12020,
    )
    make_sysfs(tmp_path, "0000:3b:00.0", "pci0000:3a")
    make_sysfs(tmp_path, "0000:db:00.0", "pci0000:d7", numa=0)
    inventory = _backend(nvml, tmp_path).discover()

    assert inventory.node_name == "node-a"
    assert str(inventory.driver_version) == "535.104.5"
    assert str(inventory.cuda_driver_version) == "12.2.0"
    h100, l4 = inventory.gpus
    assert (h100.index, h100.minor, h100.uuid) == (0, 0, H100_UUID)
    assert (h100.product_name, h100.brand, h100.architecture) == (
        "NVIDIA H100 80GB HBM3",
        "Nvidia",
        "Hopper",
    )
    assert str(h100.cuda_compute_capability) == "9.0.0"
    assert h100.memory_bytes == 80 << 30
    assert (h100.pci_bus_id, h100.pcie_root, h100.numa_node) == ("0000:3b:00.0", "pci0000:3a", 1)
    assert h100.mig_capable and not h100.mig_enabled
    assert h100.memory_slices == 8
    assert (l4.index, l4.minor, l4.device_name) == (1, 3, "gpu-3")
    assert (l4.architecture, str(l4.cuda_compute_capability)) == ("Ada Lovelace", "8.9.0")
    assert (l4.pci_bus_id, l4.pcie_root, l4.numa_node) == ("0000:db:00.0", "pci0000:d7", 0)
    assert not l4.mig_capable and l4.mig_profiles == ()


def test_nvml_and_mock_backends_agree_on_the_same_hardware(tmp_path: Path) -> None:
    mock = MockBackend("node-a", "2xH100-80GB,1xL4").discover()
    fakes = []
    for gpu in mock.gpus:
        key = "L4" if gpu.product_name == "NVIDIA L4" else "H100-80GB"
        raw_bus = "0000" + gpu.pci_bus_id.upper()
        fakes.append(fake_gpu(key, gpu.uuid, minor=gpu.minor, bus_id=raw_bus, numa=gpu.numa_node))
        assert gpu.pcie_root is not None
        make_sysfs(tmp_path, gpu.pci_bus_id, gpu.pcie_root)
    nvml = FakeNvml(fakes, driver="550.54.15", cuda=12040)
    backend: DiscoveryBackend = _backend(nvml, tmp_path)
    discovered = backend.discover()
    assert discovered == mock
    assert [s.model_dump() for s in build_slices(discovered)] == [
        s.model_dump() for s in build_slices(mock)
    ]


def test_placements_are_asked_with_a_null_array_first(tmp_path: Path) -> None:
    nvml = FakeNvml([fake_gpu("A100-40GB", H100_UUID)])
    gpu = _backend(nvml, tmp_path).discover().gpus[0]
    one_slice = next(p for p in gpu.mig_profiles if p.name == "1g.5gb")
    assert one_slice.placements == tuple((s, 1) for s in range(7))
    calls = [c for c in nvml.placement_calls if c[0] == one_slice.profile_id]
    assert calls == [(19, None, 0), (19, 7, 7)]


def test_memory_not_supported_leaves_memory_and_mig_profiles_out(tmp_path: Path) -> None:
    nvml = FakeNvml([fake_gpu("H100-80GB", H100_UUID, memory_supported=False)])
    gpu = _backend(nvml, tmp_path).discover().gpus[0]
    assert gpu.memory_bytes is None
    assert gpu.mig_capable and gpu.mig_profiles == ()
    (slice_,) = build_slices(_backend(nvml, tmp_path).discover())
    (device,) = slice_.spec.devices or []
    assert device.capacity is None


def test_missing_sysfs_entries_leave_topology_out(tmp_path: Path) -> None:
    nvml = FakeNvml([fake_gpu("L4", L4_UUID, numa=None)])
    gpu = _backend(nvml, tmp_path).discover().gpus[0]
    assert (gpu.pcie_root, gpu.numa_node) == (None, None)


def test_negative_numa_node_means_none(tmp_path: Path) -> None:
    nvml = FakeNvml([fake_gpu("L4", L4_UUID, numa=-1)])
    assert _backend(nvml, tmp_path).discover().gpus[0].numa_node is None


def test_static_mig_devices_come_from_their_gpu_instances(tmp_path: Path) -> None:
    migs = [
        FakeMig("MIG-aaaaaaaa-0000-0000-0000-000000000001", 1, 0, 9, 4, 4),
        FakeMig("MIG-aaaaaaaa-0000-0000-0000-000000000002", 5, 0, 19, 0, 1),
    ]
    nvml = FakeNvml([fake_gpu("A100-40GB", H100_UUID, mig_mode=(1, 1), migs=migs)])
    gpu = _backend(nvml, tmp_path).discover().gpus[0]
    assert gpu.mig_enabled
    assert [
        (d.uuid[-1], d.profile.name, d.placement, d.gpu_instance_id, d.compute_instance_id)
        for d in gpu.mig_devices
    ] == [("1", "3g.20gb", (4, 4), 1, 0), ("2", "1g.5gb", (0, 1), 5, 0)]


def test_mig_device_of_an_unknown_profile_is_an_error(tmp_path: Path) -> None:
    migs = [FakeMig("MIG-x", 1, 0, 42, 0, 1)]
    nvml = FakeNvml([fake_gpu("A100-40GB", H100_UUID, mig_mode=(1, 1), migs=migs)])
    with pytest.raises(DiscoveryError, match="GPU instance profile 42 is not among"):
        _backend(nvml, tmp_path).discover()


def test_placement_failure_drops_only_that_profile(tmp_path: Path) -> None:
    gpu = fake_gpu("A100-40GB", H100_UUID)
    gpu.failures["nvmlDeviceGetGpuInstancePossiblePlacements"] = UNKNOWN
    discovered = _backend(FakeNvml([gpu]), tmp_path).discover().gpus[0]
    assert discovered.mig_capable and discovered.mig_profiles == ()


def test_profile_info_failure_other_than_unsupported_is_an_error(tmp_path: Path) -> None:
    gpu = fake_gpu("A100-40GB", H100_UUID)
    gpu.failures["nvmlDeviceGetGpuInstanceProfileInfo"] = UNKNOWN
    with pytest.raises(DiscoveryError, match=r"nvmlDeviceGetGpuInstanceProfileInfo\(0\): Unknown"):
        _backend(FakeNvml([gpu]), tmp_path).discover()


def test_unsupported_architecture_query_is_unknown(tmp_path: Path) -> None:
    gpu = fake_gpu("L4", L4_UUID)
    gpu.failures["nvmlDeviceGetArchitecture"] = NOT_SUPPORTED
    assert _backend(FakeNvml([gpu]), tmp_path).discover().gpus[0].architecture == "Unknown"


def test_nvml_that_does_not_initialise_says_how_to_fix_it() -> None:
    nvml = FakeNvml([], init_error=LIBRARY_NOT_FOUND)
    with pytest.raises(DiscoveryError) as info:
        NvmlBackend("node-a", nvml=nvml)
    message = str(info.value)
    assert "NVML did not initialise: NVML Shared Library Not Found" in message
    assert "libnvidia-ml.so.1" in message
    assert "--backend mock" in message


def test_required_property_failure_names_node_gpu_and_call(tmp_path: Path) -> None:
    broken = fake_gpu("L4", L4_UUID)
    broken.failures["nvmlDeviceGetMinorNumber"] = UNKNOWN
    nvml = FakeNvml([fake_gpu("L4", H100_UUID), broken])
    with pytest.raises(DiscoveryError) as info:
        _backend(nvml, tmp_path).discover()
    assert (
        str(info.value)
        == f"node node-a: GPU 1 ({L4_UUID}): nvmlDeviceGetMinorNumber: Unknown Error"
    )
    assert info.value.retryable


def test_unparsable_values_are_discovery_errors(tmp_path: Path) -> None:
    nvml = FakeNvml([fake_gpu("L4", L4_UUID, bus_id="garbage")])
    with pytest.raises(DiscoveryError, match="PCI bus ID 'garbage'"):
        _backend(nvml, tmp_path).discover()
    nvml = FakeNvml([], driver="r550")
    with pytest.raises(DiscoveryError, match="driver version 'r550'"):
        _backend(nvml, tmp_path).discover()


def test_health_events_from_the_event_set(tmp_path: Path) -> None:
    h100 = fake_gpu("H100-80GB", H100_UUID)
    l4 = fake_gpu("L4", L4_UUID)
    nvml = FakeNvml([h100, l4])
    backend = _backend(nvml, tmp_path)
    nvml.event(h100, EVENT_XID, 79)
    nvml.event(l4, EVENT_DOUBLE_BIT_ECC)
    nvml.event(l4, EVENT_SINGLE_BIT_ECC)
    nvml.event(l4, EVENT_CLOCK)
    nvml.events.append(GPU_IS_LOST)
    events = [backend.wait_health_event(0.1) for _ in range(6)]
    assert [(e.kind, e.gpu_uuid, e.xid) if e else None for e in events] == [
        ("xid", H100_UUID, 79),
        ("ecc-double-bit", L4_UUID, None),
        ("ecc-single-bit", L4_UUID, None),
        None,  # a clock event is not a health event
        ("gpu-lost", None, None),
        None,  # timeout
    ]
    health = EVENT_XID | EVENT_DOUBLE_BIT_ECC | EVENT_SINGLE_BIT_ECC
    assert nvml.registered == {H100_UUID: health, L4_UUID: health}


def test_gpus_without_health_events_are_reported_unmonitored(tmp_path: Path) -> None:
    quiet = fake_gpu("L4", L4_UUID, supported_events=EVENT_CLOCK)
    unsupported = fake_gpu("H100-80GB", H100_UUID)
    unsupported.failures["nvmlDeviceGetSupportedEventTypes"] = NOT_SUPPORTED
    nvml = FakeNvml([quiet, unsupported])
    backend = _backend(nvml, tmp_path)
    assert backend.wait_health_event(0) is None
    assert backend.unmonitored_gpus == (L4_UUID, H100_UUID)
    assert nvml.registered == {}


def test_event_wait_failure_is_a_discovery_error(tmp_path: Path) -> None:
    nvml = FakeNvml([fake_gpu("L4", L4_UUID)])
    nvml.events.append(INVALID_ARGUMENT)
    with pytest.raises(DiscoveryError, match="nvmlEventSetWait: Invalid Argument"):
        _backend(nvml, tmp_path).wait_health_event(0)


def test_close_frees_the_event_set_and_shuts_nvml_down_once(tmp_path: Path) -> None:
    nvml = FakeNvml([fake_gpu("L4", L4_UUID)])
    with _backend(nvml, tmp_path) as backend:
        backend.wait_health_event(0)
    backend.close()
    assert (nvml.initialised, nvml.event_sets_freed, nvml.shut_down) == (1, 1, 1)


def test_real_pynvml_initialises_or_explains_why_not() -> None:
    # On a machine with an NVIDIA driver this discovers the real GPUs; elsewhere
    # the real library's failure must come back as an explained DiscoveryError.
    try:
        backend = NvmlBackend("node-a", nvml=load_pynvml())
    except DiscoveryError as err:
        assert "NVML did not initialise" in str(err)
        assert "--backend mock" in str(err)
        return
    with backend:
        inventory = backend.discover()
    for gpu in inventory.gpus:
        assert gpu.uuid.startswith("GPU-")
    build_slices(inventory)  # valid slices, or it raises


def test_the_nvml_library_is_loaded_from_a_mounted_driver_root_only(tmp_path: Path) -> None:
    # A driver in / is the loader's own business; a root without the library changes nothing.
    assert preload_library(Path("/")) is None
    assert preload_library(tmp_path / "empty") is None
    # A file that is not a library fails with its path named (a real one loads:
    # python -m e2e.gpu.check on a GPU machine).
    fake = tmp_path / "driver-root" / "usr/lib64" / "libnvidia-ml.so.1"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not an ELF file")
    with pytest.raises(DiscoveryError, match=str(fake)):
        preload_library(tmp_path / "driver-root")
