"""GPU discovery and health events through NVML (``nvidia-ml-py``): the only module importing it.

:class:`NvmlBackend` implements :class:`~dra_driver.discovery.model.DiscoveryBackend`:

- ``discover()`` reads every property the ResourceSlices publish, normalised by
  :mod:`dra_driver.discovery.normalize`: index, UUID, product name, brand,
  architecture, CUDA compute capability, driver and CUDA driver versions as
  strict semver, total memory, PCI bus ID as ``0000:3b:00.0``, minor number,
  NUMA node (NVML, else sysfs), PCIe root (sysfs), MIG mode, MIG profiles
  with their placements, and the MIG devices that exist (static MIG).
- ``mig_manager`` (:class:`NvmlMigManager`) creates MIG devices at a placement
  (``nvmlDeviceCreateGpuInstanceWithPlacement``, then one compute instance
  spanning the GPU instance) and destroys them, reading the capability device
  minors from ``/proc/driver/nvidia/capabilities``.
- ``wait_health_event()`` waits on an NVML event set for XID critical errors,
  single and double bit ECC errors; ``GpuIsLost`` from the wait is a
  ``gpu-lost`` event for every GPU.

Failure policy: a property every slice needs (UUID, name, minor number, PCI
bus ID, compute capability, versions) that NVML cannot read fails the whole
discovery with a DiscoveryError naming the GPU and the call, because a wrong
inventory is worse than none. Optional properties (memory on coherent
systems, NUMA node, PCIe root, MIG data) are left out with a log line.

The pynvml module is a constructor parameter (the real one by default), so
tests hand in a fake module object instead of patching globals.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, TypeVar

from api.errors import DiscoveryError, PrepareError
from dra_driver.cdi import DRIVER_LIBRARY_DIRS
from dra_driver.discovery import normalize
from dra_driver.discovery.model import (
    Gpu,
    HealthEvent,
    MigDevice,
    MigProfile,
    NodeInventory,
)

__all__ = ["NvmlBackend", "NvmlMigManager", "load_pynvml"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# NVML return codes (nvml.h); the same numbers as pynvml's NVML_ERROR_* constants.
_NOT_SUPPORTED: Final = 3
_INVALID_ARGUMENT: Final = 2
_NOT_FOUND: Final = 6
_TIMEOUT: Final = 10
_FUNCTION_NOT_FOUND: Final = 13
_GPU_IS_LOST: Final = 15
_IN_USE: Final = 19
_INSUFFICIENT_RESOURCES: Final = 23
#: Codes that mean "this GPU or driver does not offer it", not "something broke".
_ABSENT: Final = frozenset({_NOT_SUPPORTED, _FUNCTION_NOT_FOUND})

_MIG_ENABLED: Final = 1  # NVML_DEVICE_MIG_ENABLE
_GPU_INSTANCE_PROFILE_COUNT: Final = 0x12  # NVML_GPU_INSTANCE_PROFILE_COUNT in 13.x
_EVENT_SINGLE_BIT_ECC: Final = 0x1  # nvmlEventTypeSingleBitEccError
_EVENT_DOUBLE_BIT_ECC: Final = 0x2  # nvmlEventTypeDoubleBitEccError
_EVENT_XID: Final = 0x8  # nvmlEventTypeXidCriticalError
_HEALTH_EVENTS: Final = _EVENT_XID | _EVENT_DOUBLE_BIT_ECC | _EVENT_SINGLE_BIT_ECC

NVML_LIBRARY: Final = "libnvidia-ml.so.1"

_INIT_HINT: Final = (
    "is the NVIDIA driver loaded and libnvidia-ml.so.1 on the library path "
    "(in a container: the driver root mounted)? Use --backend mock for fake GPUs"
)


def load_pynvml() -> Any:
    """Import the real ``pynvml`` module; DiscoveryError when ``nvidia-ml-py`` is missing."""
    try:
        import pynvml
    except ImportError as err:
        raise DiscoveryError(
            f"NVML bindings not importable ({err}): install the nvidia-ml-py package"
        ) from None
    return pynvml


def preload_library(driver_root: Path) -> Path | None:
    """Load ``libnvidia-ml.so.1`` from the driver root, where one is there; its path.

    The plugin's image holds no NVIDIA library: in a container, the host's
    driver root is mounted instead. Loaded by its full path, the library is
    the one pynvml gets when it asks the dynamic loader for
    ``libnvidia-ml.so.1`` (a loaded object answers for its soname), so no
    library path has to point into the host's directories. None when the
    driver root is ``/`` (the loader's own search finds it) or holds none.
    """
    if driver_root == Path("/"):
        return None
    for directory in DRIVER_LIBRARY_DIRS:
        candidate = driver_root / directory.lstrip("/") / NVML_LIBRARY
        if candidate.exists():
            try:
                ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
            except OSError as err:
                raise DiscoveryError(f"loading {candidate} failed: {err}") from None
            log.info("NVML library loaded from the driver root: %s", candidate)
            return candidate
    return None


def _text(value: object) -> str:
    """pynvml returns ``str`` for most strings, but ``bytes`` in some versions/fields."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").rstrip("\x00")
    return str(value)


class NvmlBackend:
    """Discovery and health events from the NVIDIA driver.

    Construction initialises NVML (``nvmlInit``) and raises DiscoveryError,
    with a hint at the fix, when that fails. ``close()`` frees the event set
    and shuts NVML down; the backend is also a context manager.
    ``driver_root``: where this process sees the driver's files; its
    ``libnvidia-ml.so.1`` is loaded first (:func:`preload_library`).
    ``discover()`` is serialised by a lock; ``wait_health_event()`` may block
    in another thread at the same time (NVML is thread-safe; the lock only
    keeps one discovery's reads consistent).
    """

    def __init__(
        self,
        node_name: str,
        *,
        nvml: Any = None,
        sysfs_root: Path | str = "/sys",
        proc_root: Path | str = "/proc",
        driver_root: Path | None = None,
    ) -> None:
        self.node_name = node_name
        if nvml is None and driver_root is not None:
            preload_library(driver_root)
        self._nvml: Any = nvml if nvml is not None else load_pynvml()
        self._sysfs = Path(sysfs_root)
        self._lock = threading.Lock()
        self.mig_manager = NvmlMigManager(self._nvml, node_name, self._lock, proc_root)
        """Dynamic MIG on this node's GPUs (shares the discovery lock)."""
        self._event_set: Any = None
        self._unmonitored: tuple[str, ...] = ()
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as err:
            raise DiscoveryError(f"NVML did not initialise: {err}; {_INIT_HINT}") from None
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Free the event set and shut NVML down; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._event_set is not None:
            try:
                self._nvml.nvmlEventSetFree(self._event_set)
            except self._nvml.NVMLError as err:
                log.warning("freeing the NVML event set failed: %s", err)
            self._event_set = None
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as err:
            log.warning("NVML shutdown failed: %s", err)

    def __enter__(self) -> NvmlBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- calls ----------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Call NVML; any NVML error becomes a DiscoveryError naming ``what``."""
        try:
            return fn(*args)
        except self._nvml.NVMLError as err:
            raise DiscoveryError(f"node {self.node_name}: {what}: {err}") from None

    def _optional(self, what: str, fn: Callable[..., T], *args: Any) -> T | None:
        """Call NVML; None (and a log line) where the GPU or driver lacks the function."""
        try:
            return fn(*args)
        except self._nvml.NVMLError as err:
            if getattr(err, "value", None) in _ABSENT:
                log.info("node %s: %s: %s; left out", self.node_name, what, err)
                return None
            raise DiscoveryError(f"node {self.node_name}: {what}: {err}") from None

    # --- discovery ------------------------------------------------------------------

    def discover(self) -> NodeInventory:
        """Every GPU NVML enumerates, in NVML index order. Raises DiscoveryError."""
        nvml = self._nvml
        with self._lock:
            raw_driver = _text(
                self._call("nvmlSystemGetDriverVersion", nvml.nvmlSystemGetDriverVersion)
            )
            raw_cuda = self._call(
                "nvmlSystemGetCudaDriverVersion", nvml.nvmlSystemGetCudaDriverVersion
            )
            try:
                driver = normalize.driver_version(raw_driver)
                cuda = normalize.cuda_driver_version(int(raw_cuda))
            except ValueError as err:
                raise DiscoveryError(f"node {self.node_name}: {err}") from None
            count = self._call("nvmlDeviceGetCount", nvml.nvmlDeviceGetCount)
            gpus = tuple(self._gpu(index) for index in range(count))
        return NodeInventory(
            node_name=self.node_name,
            driver_version=driver,
            cuda_driver_version=cuda,
            gpus=gpus,
        )

    def _gpu(self, index: int) -> Gpu:
        nvml = self._nvml
        where = f"GPU {index}"
        handle = self._call(
            f"{where}: nvmlDeviceGetHandleByIndex", nvml.nvmlDeviceGetHandleByIndex, index
        )
        uuid = _text(self._call(f"{where}: nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, handle))
        where = f"GPU {index} ({uuid})"
        name = _text(self._call(f"{where}: nvmlDeviceGetName", nvml.nvmlDeviceGetName, handle))
        minor = self._call(
            f"{where}: nvmlDeviceGetMinorNumber", nvml.nvmlDeviceGetMinorNumber, handle
        )
        brand = self._optional(f"{where}: nvmlDeviceGetBrand", nvml.nvmlDeviceGetBrand, handle)
        arch = self._optional(
            f"{where}: nvmlDeviceGetArchitecture", nvml.nvmlDeviceGetArchitecture, handle
        )
        major, minor_cc = self._call(
            f"{where}: nvmlDeviceGetCudaComputeCapability",
            nvml.nvmlDeviceGetCudaComputeCapability,
            handle,
        )
        memory = self._optional(
            f"{where}: nvmlDeviceGetMemoryInfo", nvml.nvmlDeviceGetMemoryInfo, handle
        )
        pci = self._call(f"{where}: nvmlDeviceGetPciInfo", nvml.nvmlDeviceGetPciInfo, handle)
        try:
            bus_id = normalize.pci_bus_id(_text(pci.busId))
            capability = normalize.compute_capability(int(major), int(minor_cc))
        except ValueError as err:
            raise DiscoveryError(f"node {self.node_name}: {where}: {err}") from None
        memory_bytes = int(memory.total) if memory is not None else None

        mig_capable, mig_enabled, profiles, mig_devices = self._mig(where, handle, memory_bytes)
        # Static MIG devices need their capability nodes in CDI specs, as created ones do.
        mig_devices = tuple(self.mig_manager.with_caps(int(minor), m) for m in mig_devices)
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
            node = self._optional(f"{where}: nvmlDeviceGetNumaNodeId", fn, handle)
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
        modes = self._optional(f"{where}: nvmlDeviceGetMigMode", nvml.nvmlDeviceGetMigMode, handle)
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
                if getattr(err, "value", None) in (_NOT_SUPPORTED, _INVALID_ARGUMENT):
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
        slots = self._call(
            f"{where}: nvmlDeviceGetMaxMigDeviceCount", nvml.nvmlDeviceGetMaxMigDeviceCount, handle
        )
        devices: list[MigDevice] = []
        for slot in range(int(slots)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError as err:
                if getattr(err, "value", None) == _NOT_FOUND:
                    continue  # an empty slot
                raise DiscoveryError(
                    f"node {self.node_name}: {where}: "
                    f"nvmlDeviceGetMigDeviceHandleByIndex({slot}): {err}"
                ) from None
            mig_where = f"{where} MIG slot {slot}"
            uuid = _text(self._call(f"{mig_where}: nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, mig))
            gi_id = int(
                self._call(
                    f"{mig_where}: nvmlDeviceGetGpuInstanceId", nvml.nvmlDeviceGetGpuInstanceId, mig
                )
            )
            ci_id = int(
                self._call(
                    f"{mig_where}: nvmlDeviceGetComputeInstanceId",
                    nvml.nvmlDeviceGetComputeInstanceId,
                    mig,
                )
            )
            instance = self._call(
                f"{mig_where}: nvmlDeviceGetGpuInstanceById({gi_id})",
                nvml.nvmlDeviceGetGpuInstanceById,
                handle,
                gi_id,
            )
            info = self._call(
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

    # --- health ---------------------------------------------------------------------

    @property
    def unmonitored_gpus(self) -> tuple[str, ...]:
        """UUIDs of GPUs that support none of the health events (known after the first wait)."""
        return self._unmonitored

    def _register_events(self) -> Any:
        nvml = self._nvml
        with self._lock:
            if self._event_set is not None:
                return self._event_set
            event_set = self._call("nvmlEventSetCreate", nvml.nvmlEventSetCreate)
            unmonitored: list[str] = []
            count = self._call("nvmlDeviceGetCount", nvml.nvmlDeviceGetCount)
            for index in range(count):
                handle = self._call(
                    f"GPU {index}: nvmlDeviceGetHandleByIndex",
                    nvml.nvmlDeviceGetHandleByIndex,
                    index,
                )
                uuid = _text(
                    self._call(f"GPU {index}: nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, handle)
                )
                supported = self._optional(
                    f"GPU {index} ({uuid}): nvmlDeviceGetSupportedEventTypes",
                    nvml.nvmlDeviceGetSupportedEventTypes,
                    handle,
                )
                mask = _HEALTH_EVENTS & int(supported or 0)
                if not mask:
                    unmonitored.append(uuid)
                    continue
                try:
                    nvml.nvmlDeviceRegisterEvents(handle, mask, event_set)
                except nvml.NVMLError as err:
                    if getattr(err, "value", None) not in _ABSENT:
                        raise DiscoveryError(
                            f"node {self.node_name}: GPU {index} ({uuid}): "
                            f"nvmlDeviceRegisterEvents: {err}"
                        ) from None
                    unmonitored.append(uuid)
            if unmonitored:
                log.warning("node %s: no health events from GPUs %s", self.node_name, unmonitored)
            self._unmonitored = tuple(unmonitored)
            self._event_set = event_set
            return event_set

    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        """The next XID / ECC / GPU-lost event, or None after ``timeout_s``.

        Registers the GPUs on first use. Events of other types are skipped
        (returned as None, as a timeout would be); DiscoveryError for any
        other NVML failure.
        """
        nvml = self._nvml
        event_set = self._register_events()
        try:
            data = nvml.nvmlEventSetWait_v2(event_set, max(0, int(timeout_s * 1000)))
        except nvml.NVMLError as err:
            code = getattr(err, "value", None)
            if code == _TIMEOUT:
                return None
            if code == _GPU_IS_LOST:
                return HealthEvent(kind="gpu-lost", gpu_uuid=None)
            raise DiscoveryError(f"node {self.node_name}: nvmlEventSetWait: {err}") from None
        try:
            uuid: str | None = _text(nvml.nvmlDeviceGetUUID(data.device))
        except nvml.NVMLError as err:
            if getattr(err, "value", None) == _GPU_IS_LOST:
                return HealthEvent(kind="gpu-lost", gpu_uuid=None)
            uuid = None
        event_type = int(data.eventType)
        if event_type & _EVENT_XID:
            return HealthEvent(kind="xid", gpu_uuid=uuid, xid=int(data.eventData))
        if event_type & _EVENT_DOUBLE_BIT_ECC:
            return HealthEvent(kind="ecc-double-bit", gpu_uuid=uuid)
        if event_type & _EVENT_SINGLE_BIT_ECC:
            return HealthEvent(kind="ecc-single-bit", gpu_uuid=uuid)
        return None


# NVML_COMPUTE_INSTANCE_PROFILE_* by GPU-instance slice count: a compute instance
# that spans its whole GPU instance (what NVIDIA's driver creates).
_CI_PROFILE_BY_SLICES: Final = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}
_CI_ENGINE_PROFILE_SHARED: Final = 0  # NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED


class NvmlMigManager:
    """A :class:`~dra_driver.discovery.model.MigManager` on NVML.

    ``create`` makes a GPU instance at the placement and one compute instance of
    the same size on it; ``destroy`` takes the compute instances down first,
    then the GPU instance. MIG devices are found again by profile and
    placement (scanning the GPU's MIG device slots), so both are idempotent.
    NVML errors become PrepareError naming the GPU and the call; ``InUse`` and
    ``InsufficientResources`` are retryable (another claim still holds the slices).
    """

    def __init__(
        self, nvml: Any, node_name: str, lock: threading.Lock, proc_root: Path | str = "/proc"
    ) -> None:
        self._nvml = nvml
        self._node = node_name
        self._lock = lock
        self._proc = Path(proc_root)

    def _error(self, gpu: Gpu, what: str, err: Exception) -> PrepareError:
        code = getattr(err, "value", None)
        return PrepareError(
            f"node {self._node}: GPU {gpu.device_name} ({gpu.uuid}): {what}: {err}",
            retryable=code in (_IN_USE, _INSUFFICIENT_RESOURCES),
        )

    def _find(
        self, handle: Any, profile: MigProfile, placement: tuple[int, int]
    ) -> tuple[int, int, str] | None:
        """(GPU instance ID, compute instance ID, UUID) of the MIG device there, or None."""
        nvml = self._nvml
        for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError as err:
                if getattr(err, "value", None) == _NOT_FOUND:
                    continue
                raise
            gi_id = int(nvml.nvmlDeviceGetGpuInstanceId(mig))
            info = nvml.nvmlGpuInstanceGetInfo(nvml.nvmlDeviceGetGpuInstanceById(handle, gi_id))
            if int(info.profileId) == profile.profile_id and (
                int(info.placement.start) == placement[0]
            ):
                ci_id = int(nvml.nvmlDeviceGetComputeInstanceId(mig))
                return gi_id, ci_id, _text(nvml.nvmlDeviceGetUUID(mig))
        return None

    def with_caps(self, gpu_minor: int, mig: MigDevice) -> MigDevice:
        """``mig`` with the capability minors of its GPU and compute instance filled in."""
        gi, ci = mig.gpu_instance_id, mig.compute_instance_id
        return replace(
            mig,
            gpu_instance_cap=self._cap(gpu_minor, f"mig/gi{gi}"),
            compute_instance_cap=self._cap(gpu_minor, f"mig/gi{gi}/ci{ci}"),
        )

    def _cap(self, gpu_minor: int, relative: str) -> int | None:
        """The ``DeviceFileMinor`` of a MIG capability, or None (logged) when unreadable."""
        path = self._proc / "driver/nvidia/capabilities" / f"gpu{gpu_minor}" / relative / "access"
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "DeviceFileMinor":
                    return int(value.strip())
        except (OSError, ValueError) as err:
            log.warning("node %s: reading %s failed: %s", self._node, path, err)
            return None
        log.warning("node %s: %s has no DeviceFileMinor", self._node, path)
        return None

    def _device(
        self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int], found: tuple[int, int, str]
    ) -> MigDevice:
        gi_id, ci_id, uuid = found
        return MigDevice(
            uuid=uuid,
            profile=profile,
            placement=placement,
            gpu_instance_id=gi_id,
            compute_instance_id=ci_id,
            gpu_instance_cap=self._cap(gpu.minor, f"mig/gi{gi_id}"),
            compute_instance_cap=self._cap(gpu.minor, f"mig/gi{gi_id}/ci{ci_id}"),
        )

    def create(self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int]) -> MigDevice:
        """See :meth:`MigManager.create`."""
        nvml = self._nvml
        what = "looking up the GPU"
        with self._lock:
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
                what = "listing MIG devices"
                found = self._find(handle, profile, placement)
                if found is None:
                    what = (
                        f"nvmlDeviceCreateGpuInstanceWithPlacement({profile.name}, "
                        f"start {placement[0]})"
                    )
                    where = nvml.c_nvmlGpuInstancePlacement_t()
                    where.start, where.size = placement
                    instance = nvml.nvmlDeviceCreateGpuInstanceWithPlacement(
                        handle, profile.profile_id, where
                    )
                    try:
                        what = "creating its compute instance"
                        ci_info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                            instance,
                            _CI_PROFILE_BY_SLICES[profile.slice_count],
                            _CI_ENGINE_PROFILE_SHARED,
                        )
                        nvml.nvmlGpuInstanceCreateComputeInstance(instance, ci_info.id)
                    except nvml.NVMLError:
                        # No half-made MIG device: without a compute instance it is useless.
                        nvml.nvmlGpuInstanceDestroy(instance)
                        raise
                    what = "finding the new MIG device"
                    found = self._find(handle, profile, placement)
                    if found is None:
                        raise PrepareError(
                            f"node {self._node}: GPU {gpu.device_name} ({gpu.uuid}): the MIG "
                            f"device {profile.name} at memory slice {placement[0]} was created "
                            "but NVML does not list it",
                            retryable=True,
                        )
            except nvml.NVMLError as err:
                raise self._error(gpu, what, err) from None
        return self._device(gpu, profile, placement, found)

    def destroy(self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int]) -> bool:
        """See :meth:`MigManager.destroy`."""
        nvml = self._nvml
        what = "looking up the GPU"
        with self._lock:
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
                what = "listing MIG devices"
                found = self._find(handle, profile, placement)
                if found is None:
                    return False
                gi_id, ci_id, _ = found
                what = f"destroying GPU instance {gi_id}"
                instance = nvml.nvmlDeviceGetGpuInstanceById(handle, gi_id)
                compute = nvml.nvmlGpuInstanceGetComputeInstanceById(instance, ci_id)
                nvml.nvmlComputeInstanceDestroy(compute)
                nvml.nvmlGpuInstanceDestroy(instance)
            except nvml.NVMLError as err:
                raise self._error(gpu, what, err) from None
        return True
