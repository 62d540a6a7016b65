"""GPU discovery through NVML: every property the ResourceSlices publish, for each GPU.

Read by :class:`NvmlDiscovery` and normalised by :mod:`dra_driver.discovery.normalize`;
NVML topology gaps are filled from sysfs. See :mod:`kubelet_plugin.nvml` for
the failure policy (required properties fail discovery, optional ones are left out).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path
from typing import Any, Final

from api.errors import DiscoveryError
from dra_driver.discovery import normalize
from dra_driver.discovery.model import Gpu, MigDevice, MigProfile, NodeInventory
from kubelet_plugin.nvml.library import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    NOT_SUPPORTED,
    NvmlCalls,
    decode_text,
)
from kubelet_plugin.nvml.mig import NvmlMigManager
from kubelet_plugin.nvml.topology import with_topology

__all__ = ["NvmlDiscovery"]

log = logging.getLogger(__name__)

_MIG_ENABLED: Final = 1  # NVML_DEVICE_MIG_ENABLE
_GPU_INSTANCE_PROFILE_COUNT: Final = 0x12  # NVML_GPU_INSTANCE_PROFILE_COUNT in 13.x


class NvmlDiscovery:
    """Reads the node's inventory from NVML; one discovery at a time (``lock``).

    ``mig_manager`` fills in the capability device minors of the MIG devices
    that exist (static MIG); ``sysfs_root`` is where the PCIe root and, on
    older drivers, the NUMA node are read.
    """

    def __init__(
        self,
        calls: NvmlCalls,
        *,
        lock: threading.Lock,
        mig_manager: NvmlMigManager,
        sysfs_root: Path,
    ) -> None:
        self._calls = calls
        self._nvml: Any = calls.nvml
        self.node_name = calls.node_name
        self._lock = lock
        self._mig_manager = mig_manager
        self._sysfs = sysfs_root

    def discover(self) -> NodeInventory:
        """Every GPU NVML enumerates, in NVML index order. Raises DiscoveryError."""
        nvml = self._nvml
        with self._lock:
            raw_driver = decode_text(
                self._calls.call("nvmlSystemGetDriverVersion", nvml.nvmlSystemGetDriverVersion)
            )
            raw_cuda = self._calls.call(
                "nvmlSystemGetCudaDriverVersion", nvml.nvmlSystemGetCudaDriverVersion
            )
            try:
                driver = normalize.driver_version(raw_driver)
                cuda = normalize.cuda_driver_version(int(raw_cuda))
            except ValueError as err:
                raise DiscoveryError(f"node {self.node_name}: {err}") from None
            count = self._calls.call("nvmlDeviceGetCount", nvml.nvmlDeviceGetCount)
            gpus = tuple(self._gpu(index) for index in range(count))
            handles = [
                self._calls.call(
                    f"GPU {i}: nvmlDeviceGetHandleByIndex", nvml.nvmlDeviceGetHandleByIndex, i
                )
                for i in range(count)
            ]
            gpus = with_topology(nvml, self.node_name, gpus, handles)
        return NodeInventory(
            node_name=self.node_name,
            driver_version=driver,
            cuda_driver_version=cuda,
            gpus=gpus,
        )

    def _gpu(self, index: int) -> Gpu:
        nvml = self._nvml
        where = f"GPU {index}"
        handle = self._calls.call(
            f"{where}: nvmlDeviceGetHandleByIndex", nvml.nvmlDeviceGetHandleByIndex, index
        )
        uuid = decode_text(
            self._calls.call(f"{where}: nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, handle)
        )
        where = f"GPU {index} ({uuid})"
        name = decode_text(
            self._calls.call(f"{where}: nvmlDeviceGetName", nvml.nvmlDeviceGetName, handle)
        )
        minor = self._calls.call(
            f"{where}: nvmlDeviceGetMinorNumber", nvml.nvmlDeviceGetMinorNumber, handle
        )
        brand = self._calls.optional(
            f"{where}: nvmlDeviceGetBrand", nvml.nvmlDeviceGetBrand, handle
        )
        arch = self._calls.optional(
            f"{where}: nvmlDeviceGetArchitecture", nvml.nvmlDeviceGetArchitecture, handle
        )
        major, minor_cc = self._calls.call(
            f"{where}: nvmlDeviceGetCudaComputeCapability",
            nvml.nvmlDeviceGetCudaComputeCapability,
            handle,
        )
        memory = self._calls.optional(
            f"{where}: nvmlDeviceGetMemoryInfo", nvml.nvmlDeviceGetMemoryInfo, handle
        )
        pci = self._calls.call(f"{where}: nvmlDeviceGetPciInfo", nvml.nvmlDeviceGetPciInfo, handle)
        try:
            bus_id = normalize.pci_bus_id(decode_text(pci.busId))
            capability = normalize.compute_capability(int(major), int(minor_cc))
        except ValueError as err:
            raise DiscoveryError(f"node {self.node_name}: {where}: {err}") from None
        memory_bytes = int(memory.total) if memory is not None else None

        mig_capable, mig_enabled, profiles, mig_devices = self._mig(where, handle, memory_bytes)
        # Static MIG devices need their capability nodes in CDI specs, as created ones do.
        mig_devices = tuple(self._mig_manager.with_caps(int(minor), m) for m in mig_devices)
        return Gpu(
            index=index,
            minor=int(minor),
            uuid=uuid,
            product_name=name,
            brand=normalize.brand_name(int(brand)) if brand is not None else "Unknown",
            architecture=normalize.architecture_name(int(arch)) if arch is not None else "Unknown",
            cuda_compute_capability=capability,
            memory_bytes=memory_bytes,
            pci_bus_id=bus_id,
            pcie_root=self._pcie_root(bus_id),
            numa_node=self._numa_node(where, handle, bus_id),
            mig_capable=mig_capable,
            mig_enabled=mig_enabled,
            mig_profiles=profiles,
            mig_devices=mig_devices,
            # A100/H100 class GPUs: eight memory slices, the end of the widest placement.
            memory_slices=max((s + n for p in profiles for s, n in p.placements), default=0),
        )

    # --- topology from NVML and sysfs ------------------------------------------------

    def _pcie_root(self, bus_id: str) -> str | None:
        link = self._sysfs / "bus" / "pci" / "devices" / bus_id
        if not link.exists():
            log.info("node %s: %s not found; no pcieRoot for GPU %s", self.node_name, link, bus_id)
            return None
        return normalize.pcie_root(os.path.realpath(link))

    def _numa_node(self, where: str, handle: Any, bus_id: str) -> int | None:
        fn = getattr(self._nvml, "nvmlDeviceGetNumaNodeId", None)
        if fn is not None:
            node = self._calls.optional(f"{where}: nvmlDeviceGetNumaNodeId", fn, handle)
            if node is not None:
                return int(node) if int(node) >= 0 else None
        # Older drivers: the kernel knows; -1 means no NUMA affinity.
        path = self._sysfs / "bus" / "pci" / "devices" / bus_id / "numa_node"
        try:
            value = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        return value if value >= 0 else None

    # --- MIG ------------------------------------------------------------------------

    def _mig(
        self, where: str, handle: Any, memory_bytes: int | None
    ) -> tuple[bool, bool, tuple[MigProfile, ...], tuple[MigDevice, ...]]:
        nvml = self._nvml
        modes = self._calls.optional(
            f"{where}: nvmlDeviceGetMigMode", nvml.nvmlDeviceGetMigMode, handle
        )
        if modes is None:
            return False, False, (), ()
        enabled = int(modes[0]) == _MIG_ENABLED
        if memory_bytes is None:
            # Profile names need the GPU's memory size; better no MIG data than wrong names.
            log.warning("node %s: %s: no memory size, MIG profiles left out", self.node_name, where)
            return True, enabled, (), ()
        profiles = self._mig_profiles(where, handle, memory_bytes)
        devices = self._mig_devices(where, handle, profiles) if enabled else ()
        return True, enabled, profiles, devices

    def _mig_profiles(self, where: str, handle: Any, memory_bytes: int) -> tuple[MigProfile, ...]:
        nvml = self._nvml
        profiles: list[MigProfile] = []
        for profile_enum in range(_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile_enum)
            except nvml.NVMLError as err:
                # Profiles this GPU does not have answer NotSupported or InvalidArgument.
                if getattr(err, "value", None) in (NOT_SUPPORTED, INVALID_ARGUMENT):
                    continue
                raise DiscoveryError(
                    f"node {self.node_name}: {where}: "
                    f"nvmlDeviceGetGpuInstanceProfileInfo({profile_enum}): {err}"
                ) from None
            if int(info.instanceCount) == 0:
                continue
            placements = self._placements(where, handle, int(info.id))
            if not placements:
                continue
            profiles.append(
                MigProfile(
                    name=normalize.mig_profile_name(
                        profile_enum, int(info.memorySizeMB), memory_bytes
                    ),
                    profile_id=int(info.id),
                    slice_count=normalize.gpu_instance_slices(profile_enum),
                    memory_bytes=int(info.memorySizeMB) << 20,
                    multiprocessors=int(info.multiprocessorCount),
                    copy_engines=int(info.copyEngineCount),
                    decoders=int(info.decoderCount),
                    encoders=int(info.encoderCount),
                    jpeg_engines=int(info.jpegCount),
                    ofa_engines=int(info.ofaCount),
                    placements=placements,
                    instance_count=int(info.instanceCount),
                )
            )
        return tuple(profiles)

    def _placements(self, where: str, handle: Any, profile_id: int) -> tuple[tuple[int, int], ...]:
        """Possible placements: first ask the count (NULL array), then fill an array that size."""
        nvml = self._nvml
        what = f"{where}: nvmlDeviceGetGpuInstancePossiblePlacements({profile_id})"
        count = ctypes.c_uint(0)
        try:
            nvml.nvmlDeviceGetGpuInstancePossiblePlacements(
                handle, profile_id, None, ctypes.pointer(count)
            )
            if count.value == 0:
                return ()
            array = (nvml.c_nvmlGpuInstancePlacement_t * count.value)()
            nvml.nvmlDeviceGetGpuInstancePossiblePlacements(
                handle, profile_id, array, ctypes.pointer(count)
            )
        except nvml.NVMLError as err:
            # A profile without placements cannot be published; the GPU still can.
            log.warning("node %s: %s: %s; profile left out", self.node_name, what, err)
            return ()
        return tuple((int(array[i].start), int(array[i].size)) for i in range(count.value))

    def _mig_devices(
        self, where: str, handle: Any, profiles: tuple[MigProfile, ...]
    ) -> tuple[MigDevice, ...]:
        nvml = self._nvml
        by_id = {p.profile_id: p for p in profiles}
        slots = self._calls.call(
            f"{where}: nvmlDeviceGetMaxMigDeviceCount", nvml.nvmlDeviceGetMaxMigDeviceCount, handle
        )
        devices: list[MigDevice] = []
        for slot in range(int(slots)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError as err:
                if getattr(err, "value", None) == NOT_FOUND:
                    continue  # an empty slot
                raise DiscoveryError(
                    f"node {self.node_name}: {where}: "
                    f"nvmlDeviceGetMigDeviceHandleByIndex({slot}): {err}"
                ) from None
            mig_where = f"{where} MIG slot {slot}"
            uuid = decode_text(
                self._calls.call(f"{mig_where}: nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, mig)
            )
            gi_id = int(
                self._calls.call(
                    f"{mig_where}: nvmlDeviceGetGpuInstanceId", nvml.nvmlDeviceGetGpuInstanceId, mig
                )
            )
            ci_id = int(
                self._calls.call(
                    f"{mig_where}: nvmlDeviceGetComputeInstanceId",
                    nvml.nvmlDeviceGetComputeInstanceId,
                    mig,
                )
            )
            instance = self._calls.call(
                f"{mig_where}: nvmlDeviceGetGpuInstanceById({gi_id})",
                nvml.nvmlDeviceGetGpuInstanceById,
                handle,
                gi_id,
            )
            info = self._calls.call(
                f"{mig_where}: nvmlGpuInstanceGetInfo", nvml.nvmlGpuInstanceGetInfo, instance
            )
            profile = by_id.get(int(info.profileId))
            if profile is None:
                raise DiscoveryError(
                    f"node {self.node_name}: {mig_where} ({uuid}): GPU instance profile "
                    f"{int(info.profileId)} is not among the GPU's profiles "
                    f"({', '.join(str(p) for p in sorted(by_id)) or 'none'})"
                )
            devices.append(
                MigDevice(
                    uuid=uuid,
                    profile=profile,
                    placement=(int(info.placement.start), int(info.placement.size)),
                    gpu_instance_id=gi_id,
                    compute_instance_id=ci_id,
                )
            )
        return tuple(devices)
