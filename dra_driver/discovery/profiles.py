"""GPU models the mock backend can impersonate, in NVML's own terms.

Each entry holds what NVML would report for that product: the name string,
brand and architecture codes, compute capability, total memory in MiB, and for
MIG-capable models every GPU-instance profile (enum index, real profile ID,
instance count, memory, SM and engine counts, possible placements) as
``nvidia-smi mig -lgip`` / ``-lgipp`` print them. The mock runs these raw values
through :mod:`dra_driver.discovery.normalize` exactly as the NVML backend does,
so both backends produce the same names (``1g.10gb``, ``Hopper``, ``9.0.0``).

Total memory follows NVIDIA's own NVML mock (``go-nvml``'s dgxa100/dgxh100):
exact powers of two such as 80 GiB. Real boards report a little less (an H100
80GB HBM3 reports 81559 MiB); selectors should compare against thresholds, not
exact sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["GPU_MODELS", "GpuModel", "MigProfileSpec", "model_by_key"]


@dataclass(frozen=True, slots=True)
class MigProfileSpec:
    """One GPU-instance profile as ``nvmlDeviceGetGpuInstanceProfileInfo`` reports it."""

    profile_enum: int
    """NVML_GPU_INSTANCE_PROFILE_* index (0 = 1 slice, 7 = 1 slice REV1 (+me), ...)."""
    profile_id: int
    """The profile's real ID (``info.id``), e.g. 19 for ``1g.10gb`` on an H100."""
    instance_count: int
    memory_mib: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpeg_engines: int
    ofa_engines: int
    placements: tuple[tuple[int, int], ...]
    """(start, size) in memory slices, as ``nvmlDeviceGetGpuInstancePossiblePlacements``."""


@dataclass(frozen=True, slots=True)
class GpuModel:
    """A GPU product as NVML describes it."""

    key: str
    """The name used in mock profiles: ``H100-80GB`` in ``8xH100-80GB``."""
    product_name: str
    brand: int
    """NVML_BRAND_* code."""
    architecture: int
    """NVML_DEVICE_ARCH_* code."""
    compute_capability: tuple[int, int]
    memory_mib: int
    mig_profiles: tuple[MigProfileSpec, ...] = ()
    memory_slices: int = 0
    """MIG memory slices; 0 when the model is not MIG-capable."""

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib << 20

    @property
    def mig_capable(self) -> bool:
        return bool(self.mig_profiles)


def _ones(count: int) -> tuple[tuple[int, int], ...]:
    return tuple((start, 1) for start in range(count))


def _spans(size: int, *starts: int) -> tuple[tuple[int, int], ...]:
    return tuple((start, size) for start in starts)


_NVML_BRAND_TESLA: Final = 2
_NVML_BRAND_NVIDIA: Final = 14
_ARCH_TURING: Final = 6
_ARCH_AMPERE: Final = 7
_ARCH_ADA: Final = 8
_ARCH_HOPPER: Final = 9

# Profile enum indices (NVML_GPU_INSTANCE_PROFILE_*).
_P1: Final = 0x0
_P2: Final = 0x1
_P3: Final = 0x2
_P4: Final = 0x3
_P7: Final = 0x4
_P1_ME: Final = 0x7
_P1_REV2: Final = 0x9

# fmt: off
# (enum, id, instances, MiB, SMs, copy engines, decoders, encoders, JPEG, OFA, placements)
_H100_80GB_PROFILES: Final = (
    MigProfileSpec(_P1,      19, 7,  9984,  16, 1, 1, 0, 1, 0, _ones(7)),         # 1g.10gb
    MigProfileSpec(_P1_ME,   20, 1,  9984,  16, 1, 1, 0, 1, 1, _ones(7)),         # 1g.10gb+me
    MigProfileSpec(_P1_REV2, 15, 4, 20096,  26, 1, 1, 0, 1, 0, _spans(2, 0, 2, 4, 6)),  # 1g.20gb
    MigProfileSpec(_P2,      14, 3, 20096,  32, 2, 2, 0, 2, 0, _spans(2, 0, 2, 4)),     # 2g.20gb
    MigProfileSpec(_P3,       9, 2, 40448,  60, 3, 3, 0, 3, 0, _spans(4, 0, 4)),        # 3g.40gb
    MigProfileSpec(_P4,       5, 1, 40448,  64, 4, 4, 0, 4, 0, _spans(4, 0)),           # 4g.40gb
    MigProfileSpec(_P7,       0, 1, 81152, 132, 8, 7, 0, 7, 1, _spans(8, 0)),           # 7g.80gb
)

_A100_40GB_PROFILES: Final = (
    MigProfileSpec(_P1,      19, 7,  4864,  14, 1, 0, 0, 0, 0, _ones(7)),         # 1g.5gb
    MigProfileSpec(_P1_ME,   20, 1,  4864,  14, 1, 1, 0, 1, 1, _ones(7)),         # 1g.5gb+me
    MigProfileSpec(_P1_REV2, 15, 4,  9856,  14, 1, 1, 0, 0, 0, _spans(2, 0, 2, 4, 6)),  # 1g.10gb
    MigProfileSpec(_P2,      14, 3,  9856,  28, 2, 1, 0, 0, 0, _spans(2, 0, 2, 4)),     # 2g.10gb
    MigProfileSpec(_P3,       9, 2, 19968,  42, 3, 2, 0, 0, 0, _spans(4, 0, 4)),        # 3g.20gb
    MigProfileSpec(_P4,       5, 1, 19968,  56, 4, 2, 0, 0, 0, _spans(4, 0)),           # 4g.20gb
    MigProfileSpec(_P7,       0, 1, 40192,  98, 7, 5, 0, 1, 1, _spans(8, 0)),           # 7g.40gb
)

_A100_80GB_PROFILES: Final = (
    MigProfileSpec(_P1,      19, 7,  9728,  14, 1, 0, 0, 0, 0, _ones(7)),         # 1g.10gb
    MigProfileSpec(_P1_ME,   20, 1,  9728,  14, 1, 1, 0, 1, 1, _ones(7)),         # 1g.10gb+me
    MigProfileSpec(_P1_REV2, 15, 4, 19968,  14, 1, 1, 0, 0, 0, _spans(2, 0, 2, 4, 6)),  # 1g.20gb
    MigProfileSpec(_P2,      14, 3, 19968,  28, 2, 1, 0, 0, 0, _spans(2, 0, 2, 4)),     # 2g.20gb
    MigProfileSpec(_P3,       9, 2, 40192,  42, 3, 2, 0, 0, 0, _spans(4, 0, 4)),        # 3g.40gb
    MigProfileSpec(_P4,       5, 1, 40192,  56, 4, 2, 0, 0, 0, _spans(4, 0)),           # 4g.40gb
    MigProfileSpec(_P7,       0, 1, 80896,  98, 7, 5, 0, 1, 1, _spans(8, 0)),           # 7g.80gb
)
# fmt: on

GPU_MODELS: Final[tuple[GpuModel, ...]] = (
    GpuModel(
        key="H100-80GB",
        product_name="NVIDIA H100 80GB HBM3",
        brand=_NVML_BRAND_NVIDIA,
        architecture=_ARCH_HOPPER,
        compute_capability=(9, 0),
        memory_mib=81920,
        mig_profiles=_H100_80GB_PROFILES,
        memory_slices=8,
    ),
    GpuModel(
        key="A100-40GB",
        product_name="NVIDIA A100-SXM4-40GB",
        brand=_NVML_BRAND_NVIDIA,
        architecture=_ARCH_AMPERE,
        compute_capability=(8, 0),
        memory_mib=40960,
        mig_profiles=_A100_40GB_PROFILES,
        memory_slices=8,
    ),
    GpuModel(
        key="A100-80GB",
        product_name="NVIDIA A100-SXM4-80GB",
        brand=_NVML_BRAND_NVIDIA,
        architecture=_ARCH_AMPERE,
        compute_capability=(8, 0),
        memory_mib=81920,
        mig_profiles=_A100_80GB_PROFILES,
        memory_slices=8,
    ),
    GpuModel(
        key="L40S",
        product_name="NVIDIA L40S",
        brand=_NVML_BRAND_NVIDIA,
        architecture=_ARCH_ADA,
        compute_capability=(8, 9),
        memory_mib=46068,
    ),
    GpuModel(
        key="L4",
        product_name="NVIDIA L4",
        brand=_NVML_BRAND_NVIDIA,
        architecture=_ARCH_ADA,
        compute_capability=(8, 9),
        memory_mib=23034,
    ),
    GpuModel(
        key="T4",
        product_name="Tesla T4",
        brand=_NVML_BRAND_TESLA,
        architecture=_ARCH_TURING,
        compute_capability=(7, 5),
        memory_mib=15360,
    ),
)

_BY_KEY: Final = {model.key.lower(): model for model in GPU_MODELS}


def model_by_key(key: str) -> GpuModel | None:
    """The model named ``key`` (case-insensitive: ``h100-80gb`` works too), or None."""
    return _BY_KEY.get(key.lower())
