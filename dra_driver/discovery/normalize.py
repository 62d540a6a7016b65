"""Pure transforms from what NVML reports to what a ResourceSlice may carry.

NVML speaks its own dialect: PCI bus IDs with an 8-digit upper-case domain,
driver versions with leading zeros (``535.104.05``), CUDA versions as integers
(``12040``), brands and architectures as enum codes, MIG profiles as enum
indices plus a memory size. The API server accepts only strict semantic
versions and the lower-case ``0000:3b:00.0`` bus-ID form, and selectors match
on names such as ``Hopper`` and ``1g.10gb``. Every function here is a pure
mapping; each raises ValueError naming the offending input when it cannot map
it, and the caller (an NVML or mock backend) turns that into a DiscoveryError.
"""

from __future__ import annotations

import math
import re
from typing import Final

from api.limits import PCI_BUS_ID_PATTERN
from api.semver import Semver

__all__ = [
    "architecture_name",
    "brand_name",
    "compute_capability",
    "cuda_driver_version",
    "driver_version",
    "gpu_instance_profile_attributes",
    "gpu_instance_slices",
    "mig_device_name",
    "mig_memory_gb",
    "mig_profile_name",
    "pci_bus_id",
    "pcie_root",
]

_PCI_BUS_ID_RE: Final = re.compile(PCI_BUS_ID_PATTERN)
_RAW_BUS_ID_RE: Final = re.compile(
    r"^(?P<domain>[0-9a-f]{4,8}):(?P<bus>[0-9a-f]{2}):(?P<dev>[0-9a-f]{2})\.(?P<fn>[0-9a-f])$"
)
# A sysfs path component naming a PCI root bus: ``pci0000:00`` (domain:bus).
_PCIE_ROOT_RE: Final = re.compile(r"^pci[0-9a-f]{4}:[0-9a-f]{2}$")


def pci_bus_id(raw: str) -> str:
    """NVML's ``00000000:3B:00.0`` as the Kubernetes standard ``0000:3b:00.0``.

    Lower-cases and drops the leading zeros of an 8-digit domain (Linux uses
    16-bit PCI domains). Input already in the standard form is returned as is.
    Raises ValueError for anything else, including a domain that does not fit
    in four hex digits.
    """
    text = raw.strip().lower()
    match = _RAW_BUS_ID_RE.match(text)
    if match is None:
        raise ValueError(
            f"PCI bus ID {raw!r} is not of the form DDDDDDDD:BB:DD.F or DDDD:BB:DD.F (hex)"
        )
    domain = match["domain"]
    if len(domain) > 4:
        if domain[:-4].strip("0"):
            raise ValueError(f"PCI bus ID {raw!r}: domain {domain} does not fit in 16 bits")
        domain = domain[-4:]
    result = f"{domain}:{match['bus']}:{match['dev']}.{match['fn']}"
    # The regex above already guarantees the shape; this keeps the contract tied
    # to the pattern the API limits module publishes.
    assert _PCI_BUS_ID_RE.match(result)
    return result


def pcie_root(sysfs_device_path: str) -> str | None:
    """The PCIe root complex (``pci0000:00``) from a resolved sysfs device path.

    ``/sys/bus/pci/devices/<bus id>`` is a symlink to something like
    ``/sys/devices/pci0000:00/0000:00:01.0/0000:3b:00.0``; the root is the
    ``pciDDDD:BB`` component. None when the path holds no such component
    (virtual devices, a path that was not resolved).
    """
    for part in sysfs_device_path.split("/"):
        if _PCIE_ROOT_RE.match(part.lower()):
            return part.lower()
    return None


def driver_version(raw: str) -> Semver:
    """The kernel driver version as strict semver: ``535.104.05`` -> ``535.104.5``.

    Leading zeros are dropped and missing components padded (``550.54`` ->
    ``550.54.0``), as the API server rejects both in a ``version`` attribute.
    """
    text = raw.strip()
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(
            f"driver version {raw!r} is not 1 to 3 dot-separated numbers (e.g. 550.54.15)"
        )
    major, minor, patch = (int(p) for p in (*parts, "0", "0")[:3])
    return Semver(major, minor, patch)


def cuda_driver_version(raw: int) -> Semver:
    """``nvmlSystemGetCudaDriverVersion()``'s integer as semver: ``12040`` -> ``12.4.0``.

    NVML encodes ``major * 1000 + minor * 10``; the patch level is not reported.
    """
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise ValueError(f"CUDA driver version {raw!r} is not a positive integer such as 12040")
    return Semver(raw // 1000, (raw % 1000) // 10, 0)


def compute_capability(major: int, minor: int) -> Semver:
    """CUDA compute capability ``(9, 0)`` as the version ``9.0.0``."""
    if major < 0 or minor < 0:
        raise ValueError(f"compute capability ({major}, {minor}) has a negative component")
    return Semver(major, minor, 0)


# NVML_BRAND_* codes to the strings go-nvlib (and so NVIDIA's driver) publishes.
_BRANDS: Final[dict[int, str]] = {
    0: "Unknown",
    1: "Quadro",
    2: "Tesla",
    3: "NVS",
    4: "Grid",
    5: "GeForce",
    6: "Titan",
    7: "NvidiaVApps",
    8: "NvidiaVPC",
    9: "NvidiaVCS",
    10: "NvidiaVWS",
    11: "NvidiaCloudGaming",
    12: "QuadroRTX",
    13: "NvidiaRTX",
    14: "Nvidia",
    15: "GeForceRTX",
    16: "TitanRTX",
}

# NVML_DEVICE_ARCH_* codes to architecture names.
_ARCHITECTURES: Final[dict[int, str]] = {
    2: "Kepler",
    3: "Maxwell",
    4: "Pascal",
    5: "Volta",
    6: "Turing",
    7: "Ampere",
    8: "Ada Lovelace",
    9: "Hopper",
    10: "Blackwell",
    13: "Rubin",
}


def brand_name(code: int) -> str:
    """``nvmlDeviceGetBrand()`` code as a name (``14`` -> ``Nvidia``); ``Unknown`` if unlisted.

    A brand code newer than this table must not stop discovery: the GPU is
    still usable, only a selector on ``brand`` would not match it.
    """
    return _BRANDS.get(code, "Unknown")


def architecture_name(code: int) -> str:
    """``nvmlDeviceGetArchitecture()`` code as a name (``9`` -> ``Hopper``), else ``Unknown``."""
    return _ARCHITECTURES.get(code, "Unknown")


# --- MIG profiles ---------------------------------------------------------------------

# NVML_GPU_INSTANCE_PROFILE_* enum index -> (GPU-instance slices, name suffix).
# The suffix follows go-nvlib: media extensions ``+me`` (REV1), all media
# extensions ``+me.all``, graphics ``+gfx``, no media extensions ``-me``.
_GI_PROFILES: Final[dict[int, tuple[int, str]]] = {
    0x0: (1, ""),  # 1_SLICE
    0x1: (2, ""),  # 2_SLICE
    0x2: (3, ""),  # 3_SLICE
    0x3: (4, ""),  # 4_SLICE
    0x4: (7, ""),  # 7_SLICE
    0x5: (8, ""),  # 8_SLICE
    0x6: (6, ""),  # 6_SLICE
    0x7: (1, "+me"),  # 1_SLICE_REV1
    0x8: (2, "+me"),  # 2_SLICE_REV1
    0x9: (1, ""),  # 1_SLICE_REV2 (twice the memory of 1_SLICE)
    0xA: (1, "+gfx"),  # 1_SLICE_GFX
    0xB: (2, "+gfx"),  # 2_SLICE_GFX
    0xC: (4, "+gfx"),  # 4_SLICE_GFX
    0xD: (1, "-me"),  # 1_SLICE_NO_ME
    0xE: (2, "-me"),  # 2_SLICE_NO_ME
    0xF: (1, "+me.all"),  # 1_SLICE_ALL_ME
    0x10: (2, "+me.all"),  # 2_SLICE_ALL_ME
    0x11: (3, "+gfx"),  # 3_SLICE_GFX
}


def gpu_instance_slices(profile_enum: int) -> int:
    """GPU-instance slices (the ``G`` of ``Gg.NNgb``) of an NVML_GPU_INSTANCE_PROFILE_* index."""
    try:
        return _GI_PROFILES[profile_enum][0]
    except KeyError:
        raise ValueError(f"unknown GPU instance profile index {profile_enum}") from None


def gpu_instance_profile_attributes(profile_enum: int) -> str:
    """The name suffix (``+me``, ``+gfx``, ``-me``, ``+me.all`` or ``""``) of a profile index."""
    try:
        return _GI_PROFILES[profile_enum][1]
    except KeyError:
        raise ValueError(f"unknown GPU instance profile index {profile_enum}") from None


def mig_memory_gb(total_memory_bytes: int, mig_memory_mib: int) -> int:
    """The ``NN`` of ``Gg.NNgb``, exactly as go-nvlib computes it.

    The profile's share of the GPU's memory, rounded up to eighths, times the
    GPU's memory in whole GiB (rounded up), rounded to the nearest integer.
    So an H100 80GB's 9.75 GiB one-slice profile is ``10gb``.
    """
    if total_memory_bytes <= 0:
        raise ValueError(f"total GPU memory must be positive, not {total_memory_bytes}")
    gib = 1 << 30
    fraction = math.ceil(mig_memory_mib * (1 << 20) / total_memory_bytes * 8) / 8
    total_gib = (total_memory_bytes + gib - 1) // gib
    # Go's math.Round rounds half away from zero; Python's round() is banker's.
    return math.floor(fraction * total_gib + 0.5)


def mig_profile_name(
    profile_enum: int,
    mig_memory_mib: int,
    total_memory_bytes: int,
    *,
    compute_slices: int | None = None,
) -> str:
    """go-nvlib's profile name: ``1g.10gb``, ``1g.10gb+me``, ``1c.3g.40gb`` (``C != G``).

    ``compute_slices`` is the compute-instance slice count; None means a
    compute instance spanning the whole GPU instance (the only kind published
    as an abstract MIG device).
    """
    slices = gpu_instance_slices(profile_enum)
    suffix = gpu_instance_profile_attributes(profile_enum)
    gb = mig_memory_gb(total_memory_bytes, mig_memory_mib)
    if compute_slices is None or compute_slices == slices:
        return f"{slices}g.{gb}gb{suffix}"
    return f"{compute_slices}c.{slices}g.{gb}gb{suffix}"


def mig_device_name(parent_minor: int, profile_name: str, profile_id: int, start: int) -> str:
    """The device name of a MIG placement: ``gpu-0-mig-1g10gb-19-0``.

    The profile without dots, other non-alphanumerics as ``-`` (``1g.10gb+me``
    -> ``1g10gb-me``); the profile ID keeps names of such look-alike profiles
    apart. The result is a DNS label as device names must be.
    """
    part = re.sub(r"[^a-z0-9]+", "-", profile_name.lower().replace(".", "")).strip("-")
    return f"gpu-{parent_minor}-mig-{part}-{profile_id}-{start}"
