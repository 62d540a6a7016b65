"""The device model: what discovery (NVML or the mock backend) reports about a node's GPUs.

Values are already normalised to what ResourceSlices need: versions are strict
semver, PCI bus IDs are ``0000:3b:00.0``, memory is in bytes. Backends fill these
types; ResourceSlice planning, CDI spec building and health read only them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, Protocol

from api.semver import Semver
from dra_driver.discovery.normalize import mig_device_name

DeviceType = Literal["gpu", "mig"]


@dataclass(frozen=True, slots=True)
class MigProfile:
    """A MIG GPU-instance profile a GPU supports (``1g.10gb``) and where it may be placed."""

    name: str
    """go-nvlib style profile name, e.g. ``1g.10gb``, ``3g.40gb``."""
    profile_id: int
    slice_count: int
    """GPU-instance slices (the ``G`` of ``Gg.NNgb``)."""
    memory_bytes: int
    multiprocessors: int
    copy_engines: int
    decoders: int
    encoders: int
    jpeg_engines: int
    ofa_engines: int
    placements: tuple[tuple[int, int], ...]
    """Possible placements as (start, size) in memory slices."""
    instance_count: int | None = None
    """Most instances of this profile one GPU holds at once (NVML ``info.instanceCount``,
    e.g. 1 for ``+me`` profiles); None when unknown, then only placements limit it."""


@dataclass(frozen=True, slots=True)
class MigDevice:
    """A MIG device that exists on a GPU (static MIG)."""

    uuid: str
    """``MIG-...``"""
    profile: MigProfile
    placement: tuple[int, int]
    gpu_instance_id: int
    compute_instance_id: int
    gpu_instance_cap: int | None = None
    """Minor of ``/dev/nvidia-caps/nvidia-cap<N>`` granting access to the GPU instance;
    None where the backend could not read it (then the CDI spec cannot name it)."""
    compute_instance_cap: int | None = None
    """Minor of the capability device node of the compute instance."""

    @property
    def cap_device_nodes(self) -> tuple[str, ...]:
        """The ``/dev/nvidia-caps/nvidia-cap<N>`` nodes a container needs to use this MIG device."""
        return tuple(
            f"/dev/nvidia-caps/nvidia-cap{cap}"
            for cap in (self.gpu_instance_cap, self.compute_instance_cap)
            if cap is not None
        )


@dataclass(frozen=True, slots=True)
class Gpu:
    """One physical GPU."""

    index: int
    minor: int
    """``/dev/nvidia<minor>``; the published device name is ``gpu-<minor>``."""
    uuid: str
    product_name: str
    brand: str
    architecture: str
    cuda_compute_capability: Semver
    memory_bytes: int | None
    """None where NVML does not report memory (then no ``memory`` capacity is published)."""
    pci_bus_id: str
    pcie_root: str | None = None
    numa_node: int | None = None
    mig_capable: bool = False
    mig_enabled: bool = False
    mig_profiles: tuple[MigProfile, ...] = ()
    mig_devices: tuple[MigDevice, ...] = ()
    memory_slices: int = 0
    """Number of MIG memory slices (8 on A100/H100); 0 when not MIG-capable."""
    nvlink_peers: tuple[int, ...] = ()
    """Indexes of the GPUs this one reaches over NVLink (directly or through NVSwitch)."""
    nvlink_island: str | None = None
    """ID shared by the GPUs NVLink joins (a GPU without NVLink is its own island);
    None where the topology is unknown."""
    fabric_cluster_uuid: str | None = None
    """NVSwitch fabric (rack-scale NVLink) cluster UUID, where the driver reports it."""
    fabric_clique_id: int | None = None
    """NVSwitch fabric clique ID, where the driver reports it."""

    @property
    def device_name(self) -> str:
        return f"gpu-{self.minor}"

    @property
    def device_node(self) -> str:
        """The character device path relative to the dev root: ``/dev/nvidia<minor>``."""
        return f"/dev/nvidia{self.minor}"


@dataclass(frozen=True, slots=True)
class NodeInventory:
    """Everything discovery found on one node."""

    node_name: str
    driver_version: Semver
    """Kernel driver version, e.g. ``550.54.15``."""
    cuda_driver_version: Semver
    """CUDA driver API version, e.g. ``12.4.0``."""
    gpus: tuple[Gpu, ...] = field(default=())

    def __iter__(self) -> Iterator[Gpu]:
        return iter(self.gpus)

    def gpu_by_name(self, device_name: str) -> Gpu | None:
        for gpu in self.gpus:
            if gpu.device_name == device_name:
                return gpu
        return None

    def mig_by_name(self, device_name: str) -> MigPlacement | None:
        """The MIG device a published name stands for, or None when it names no MIG device.

        Static MIG devices (MIG mode on) come with their existing
        :class:`MigDevice`; placements of partitionable GPUs (MIG mode off) with
        none, to be created at prepare.
        """
        if "-mig-" not in device_name:
            return None
        for gpu in self.gpus:
            if not device_name.startswith(f"{gpu.device_name}-mig-"):
                continue
            if gpu.mig_enabled:
                for mig in gpu.mig_devices:
                    name = mig_device_name(
                        gpu.minor, mig.profile.name, mig.profile.profile_id, mig.placement[0]
                    )
                    if name == device_name:
                        return MigPlacement(gpu, mig.profile, mig.placement, mig)
                return None
            for profile in gpu.mig_profiles:
                for placement in profile.placements:
                    name = mig_device_name(
                        gpu.minor, profile.name, profile.profile_id, placement[0]
                    )
                    if name == device_name:
                        return MigPlacement(gpu, profile, placement, None)
        return None


@dataclass(frozen=True, slots=True)
class MigPlacement:
    """A published MIG device: where it lies and, for a static one, the device itself."""

    gpu: Gpu
    profile: MigProfile
    placement: tuple[int, int]
    existing: MigDevice | None
    """The static MIG device; None for a placement to create (dynamic MIG)."""


HealthEventKind = Literal["xid", "ecc-double-bit", "ecc-single-bit", "gpu-lost"]


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A health event from NVML (or injected into the mock backend)."""

    kind: HealthEventKind
    gpu_uuid: str | None
    """None for events about every GPU (``gpu-lost`` from the event set itself)."""
    xid: int | None = None
    occurred_at: float | None = None
    """When the fault happened (Unix time) as near as the source knows: the mock's fault
    files say when they were written, NVML's events carry no time (when it was read);
    None: unknown (then the taint's delay reads 0)."""


class RecoveryAction(IntEnum):
    """What NVML says a GPU needs before it is sound again: the field
    ``NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`` (230), values ``NVML_GPU_RECOVERY_ACTION_*``."""

    NONE = 0
    GPU_RESET = 1
    NODE_REBOOT = 2
    DRAIN_P2P = 3
    DRAIN_AND_RESET = 4
    RECOVER_IMEX_DOMAIN = 5
    BUS_RESET = 6
    SYSTEM_REBOOT = 7


class RecoveryProbe(Protocol):
    """Asks the hardware whether a GPU recovered: NVML, or the mock backend's fault state."""

    def recovery_action(self, gpu_uuid: str) -> RecoveryAction | None:
        """The GPU's recovery action now; None when the driver does not report the field
        (older driver: NVML_ERROR_NOT_SUPPORTED). Never raises: an unreadable field of a
        GPU that answers nothing reads as None too, and :meth:`validate` says why."""
        ...

    def validate(self, gpu_uuid: str) -> str | None:
        """None when the GPU answers and its memory and ECC state are sane; else what is wrong."""
        ...


class MigManager(Protocol):
    """Creates and destroys MIG devices (dynamic MIG) on GPUs of this node.

    Implemented by the mock backend (in memory) and by NVML. Calls for one GPU
    may come from several threads; implementations serialise what needs it.
    Errors are :class:`api.errors.PrepareError` (``retryable`` where trying
    again later can succeed, e.g. the placement is still in use).
    """

    def create(self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int]) -> MigDevice:
        """Create a GPU instance of ``profile`` at ``placement`` and one compute instance
        spanning it; the new MIG device.

        Idempotent: a MIG device of the same profile already at that placement is
        returned as it is (a retried prepare, or start-up checking that what the
        checkpoint says exists does). Raises PrepareError when the placement
        overlaps another MIG device or the GPU refuses.
        """
        ...

    def destroy(self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int]) -> bool:
        """Destroy the MIG device of ``profile`` at ``placement`` (compute instances first).

        Idempotent: False when there is none (never made, or destroyed already),
        so crash recovery can call it for an instance that may be half made.
        """
        ...


class DiscoveryBackend(Protocol):
    """A source of GPU inventory and health events: NVML or the mock backend."""

    def discover(self) -> NodeInventory:
        """The node's GPUs now. Raises DiscoveryError (api.errors tree) when the backend fails."""
        ...

    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        """Block up to ``timeout_s`` for the next health event; None on timeout."""
        ...
