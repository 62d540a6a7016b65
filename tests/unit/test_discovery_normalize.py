"""NVML values to what a ResourceSlice accepts: bus IDs, versions, names, MIG profiles."""

from __future__ import annotations

import pytest

from api.resource_v1 import DeviceAttribute
from api.semver import Semver
from api.validation import is_dns1123_label
from dra_driver.discovery import normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("00000000:3B:00.0", "0000:3b:00.0"),  # NVML's 8-digit upper-case form
        ("00000001:DB:1F.7", "0001:db:1f.7"),
        ("0000:3b:00.0", "0000:3b:00.0"),  # already standard
        ("  00000000:18:00.0\n", "0000:18:00.0"),
    ],
)
def test_pci_bus_id_is_the_kubernetes_standard_form(raw: str, expected: str) -> None:
    assert normalize.pci_bus_id(raw) == expected


@pytest.mark.parametrize(
    "raw", ["3b:00.0", "00000000:3B:00", "0000:3g:00.0", "10000000:3b:00.0", ""]
)
def test_pci_bus_id_rejects_what_is_not_a_bus_id(raw: str) -> None:
    with pytest.raises(ValueError, match="PCI bus ID"):
        normalize.pci_bus_id(raw)


def test_pcie_root_is_the_root_bus_component_of_the_sysfs_path() -> None:
    path = "/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0"
    assert normalize.pcie_root(path) == "pci0000:3a"
    assert normalize.pcie_root("/sys/devices/platform/virtual/0000:3b:00.0") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("550.54.15", "550.54.15"),
        ("535.104.05", "535.104.5"),  # leading zero: rejected by the API server as is
        ("470.82.01", "470.82.1"),
        ("550.54", "550.54.0"),
        ("550", "550.0.0"),
    ],
)
def test_driver_version_is_strict_semver(raw: str, expected: str) -> None:
    version = normalize.driver_version(raw)
    assert str(version) == expected
    # What the API server checks on a version attribute.
    assert DeviceAttribute(version=str(version)).value == Semver.parse(expected)


@pytest.mark.parametrize("raw", ["550.54.15.1", "r550", "550..15", ""])
def test_driver_version_rejects_other_shapes(raw: str) -> None:
    with pytest.raises(ValueError, match="driver version"):
        normalize.driver_version(raw)


def test_cuda_driver_version_decodes_nvml_integer() -> None:
    assert str(normalize.cuda_driver_version(12040)) == "12.4.0"
    assert str(normalize.cuda_driver_version(12020)) == "12.2.0"
    assert str(normalize.cuda_driver_version(11080)) == "11.8.0"
    with pytest.raises(ValueError):
        normalize.cuda_driver_version(0)


def test_compute_capability_is_a_version() -> None:
    assert str(normalize.compute_capability(9, 0)) == "9.0.0"
    assert str(normalize.compute_capability(8, 9)) == "8.9.0"


def test_brand_and_architecture_names_follow_go_nvlib() -> None:
    assert normalize.brand_name(14) == "Nvidia"
    assert normalize.brand_name(2) == "Tesla"
    assert normalize.brand_name(999) == "Unknown"
    assert normalize.architecture_name(9) == "Hopper"
    assert normalize.architecture_name(8) == "Ada Lovelace"
    assert normalize.architecture_name(7) == "Ampere"
    assert normalize.architecture_name(0xFFFFFFFF) == "Unknown"


@pytest.mark.parametrize(
    ("enum", "mib", "total_mib", "name"),
    [
        # H100 80GB as NVML reports it (81559 MiB) and as mocks round it (81920 MiB).
        (0x0, 9984, 81559, "1g.10gb"),
        (0x7, 9984, 81559, "1g.10gb+me"),
        (0x9, 20096, 81559, "1g.20gb"),
        (0x1, 20096, 81559, "2g.20gb"),
        (0x2, 40448, 81559, "3g.40gb"),
        (0x3, 40448, 81920, "4g.40gb"),
        (0x4, 81152, 81920, "7g.80gb"),
        # A100 40GB.
        (0x0, 4864, 40960, "1g.5gb"),
        (0x9, 9856, 40960, "1g.10gb"),
        (0x2, 19968, 40960, "3g.20gb"),
        (0x4, 40192, 40960, "7g.40gb"),
        # Suffixes of the newer profile kinds.
        (0xA, 9984, 81920, "1g.10gb+gfx"),
        (0xD, 9984, 81920, "1g.10gb-me"),
        (0xF, 9984, 81920, "1g.10gb+me.all"),
    ],
)
def test_mig_profile_names_match_go_nvlib(enum: int, mib: int, total_mib: int, name: str) -> None:
    assert normalize.mig_profile_name(enum, mib, total_mib << 20) == name


def test_mig_profile_name_with_a_smaller_compute_instance() -> None:
    assert normalize.mig_profile_name(0x2, 19968, 40960 << 20, compute_slices=1) == "1c.3g.20gb"
    assert normalize.mig_profile_name(0x2, 19968, 40960 << 20, compute_slices=3) == "3g.20gb"


def test_mig_memory_rounds_half_away_from_zero_like_go() -> None:
    # 3/8 of 12 GiB = 4.5 -> 5 in Go (math.Round), 4 with Python's round().
    assert normalize.mig_memory_gb(12 << 30, 3 * 12 * 1024 // 8) == 5


def test_unknown_profile_index_is_an_error() -> None:
    with pytest.raises(ValueError, match="profile index 99"):
        normalize.gpu_instance_slices(99)


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("1g.10gb", "gpu-3-mig-1g10gb-19-2"),
        ("1g.10gb+me", "gpu-3-mig-1g10gb-me-19-2"),
        ("1c.3g.40gb", "gpu-3-mig-1c3g40gb-19-2"),
        ("1g.10gb+me.all", "gpu-3-mig-1g10gb-meall-19-2"),
    ],
)
def test_mig_device_names_are_dns_labels(profile: str, expected: str) -> None:
    name = normalize.mig_device_name(3, profile, 19, 2)
    assert name == expected
    assert is_dns1123_label(name)
