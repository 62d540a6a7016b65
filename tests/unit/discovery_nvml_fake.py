# The fake must carry pynvml's own (mixedCase) names.
# ruff: noqa: N802, N815
"""A fake ``pynvml`` module object for NvmlBackend tests.

It speaks pynvml's calling conventions (handles, ``NVMLError.value`` codes,
ctypes placement arrays filled through a count pointer, event data records)
with data taken from the same GPU model table the mock backend uses, so the
two backends can be compared field by field.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from dra_driver.discovery import normalize
from dra_driver.discovery.profiles import GpuModel, model_by_key

NOT_SUPPORTED = 3
INVALID_ARGUMENT = 2
NOT_FOUND = 6
TIMEOUT = 10
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
UNKNOWN = 999

_MESSAGES = {
    NOT_SUPPORTED: "Not Supported",
    INVALID_ARGUMENT: "Invalid Argument",
    NOT_FOUND: "Not Found",
    TIMEOUT: "Timeout",
    LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    FUNCTION_NOT_FOUND: "Function Not Found",
    GPU_IS_LOST: "GPU is lost",
    UNKNOWN: "Unknown Error",
}

EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID = 0x8
EVENT_CLOCK = 0x10


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML error {self.value}")


class FakePlacement(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint), ("size", ctypes.c_uint)]


@dataclass
class FakeMig:
    uuid: str
    gi_id: int
    ci_id: int
    profile_id: int
    start: int
    size: int
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    """(PID, used memory or None) of its compute processes."""


@dataclass
class FakeGpu:
    uuid: str
    model: GpuModel
    minor: int = 0
    bus_id: str = "00000000:18:00.0"
    numa: int | None = 0
    """None: the driver lacks nvmlDeviceGetNumaNodeId (sysfs is the fallback)."""
    memory_supported: bool = True
    mig_mode: tuple[int, int] | None = None
    """None: MIG not supported; (1, 1): MIG mode on."""
    migs: list[FakeMig] = field(default_factory=list)
    supported_events: int = EVENT_XID | EVENT_DOUBLE_BIT_ECC | EVENT_SINGLE_BIT_ECC | EVENT_CLOCK
    failures: dict[str, int] = field(default_factory=dict)
    """Method name -> NVML error code that call raises for this GPU."""
    nvlinks: list[str] | None = None
    """Per active NVLink, the remote GPU's bus ID or ``switch``; None: the driver lacks the
    NVLink calls (function not found); empty: no NVLink (not supported)."""
    fabric: tuple[bytes, int] | None = None
    """(cluster UUID, clique ID) of a completed NVSwitch fabric; None: not supported."""
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    """(PID, used memory or None: NVML's "not available") of its compute processes."""
    utilisation: list[tuple[int, int, int]] = field(default_factory=list)
    """(PID, timestamp in microseconds, SM %) samples; those newer than asked come back."""


def fake_gpu(key: str, uuid: str, **kwargs: Any) -> FakeGpu:
    model = model_by_key(key)
    assert model is not None, key
    if model.mig_capable and "mig_mode" not in kwargs:
        kwargs["mig_mode"] = (0, 0)
    return FakeGpu(uuid=uuid, model=model, **kwargs)


class FakeNvml:
    """Module-like object with the pynvml functions NvmlBackend calls."""

    NVMLError = FakeNVMLError
    c_nvmlGpuInstancePlacement_t = FakePlacement

    def __init__(
        self,
        gpus: list[FakeGpu],
        *,
        driver: str | bytes = "535.104.05",
        cuda: int = 12020,
        init_error: int | None = None,
    ) -> None:
        self.gpus = gpus
        self.driver = driver
        self.cuda = cuda
        self.init_error = init_error
        self.initialised = 0
        self.shut_down = 0
        self.event_sets_freed = 0
        self.registered: dict[str, int] = {}
        self.events: list[SimpleNamespace | int] = []
        self.placement_calls: list[tuple[int, int | None, int]] = []
        """(profile id, array length or None, count passed in) per placements call."""

    # --- helpers --------------------------------------------------------------------

    @staticmethod
    def _check(gpu: FakeGpu, name: str) -> None:
        code = gpu.failures.get(name)
        if code is not None:
            raise FakeNVMLError(code)

    # --- lifecycle and system -------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.shut_down += 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    # --- devices --------------------------------------------------------------------

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        if not 0 <= index < len(self.gpus):
            raise FakeNVMLError(INVALID_ARGUMENT)
        gpu = self.gpus[index]
        self._check(gpu, "nvmlDeviceGetHandleByIndex")
        return gpu

    def nvmlDeviceGetUUID(self, handle: FakeGpu | FakeMig) -> str:
        if isinstance(handle, FakeGpu):
            self._check(handle, "nvmlDeviceGetUUID")
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> bytes:
        # Some pynvml versions hand back bytes.
        return handle.model.product_name.encode()

    def nvmlDeviceGetMinorNumber(self, handle: FakeGpu) -> int:
        self._check(handle, "nvmlDeviceGetMinorNumber")
        return handle.minor

    def nvmlDeviceGetBrand(self, handle: FakeGpu) -> int:
        return handle.model.brand

    def nvmlDeviceGetArchitecture(self, handle: FakeGpu) -> int:
        self._check(handle, "nvmlDeviceGetArchitecture")
        return handle.model.architecture

    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeGpu) -> tuple[int, int]:
        return handle.model.compute_capability

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> SimpleNamespace:
        if not handle.memory_supported:
            raise FakeNVMLError(NOT_SUPPORTED)
        total = handle.model.memory_bytes
        return SimpleNamespace(total=total, free=total, used=0)

    def nvmlDeviceGetPciInfo(self, handle: FakeGpu) -> SimpleNamespace:
        return SimpleNamespace(busId=handle.bus_id, busIdLegacy=handle.bus_id[4:])

    def nvmlDeviceGetNumaNodeId(self, handle: FakeGpu) -> int:
        if handle.numa is None:
            raise FakeNVMLError(FUNCTION_NOT_FOUND)
        return handle.numa

    # --- NVLink and fabric -------------------------------------------------------------

    c_nvmlGpuFabricInfo_t = SimpleNamespace

    @staticmethod
    def _link(handle: FakeGpu, link: int) -> str:
        if handle.nvlinks is None:
            raise FakeNVMLError(FUNCTION_NOT_FOUND)
        if not handle.nvlinks:
            raise FakeNVMLError(NOT_SUPPORTED)
        if link >= len(handle.nvlinks):
            raise FakeNVMLError(INVALID_ARGUMENT)
        return handle.nvlinks[link]

    def nvmlDeviceGetNvLinkState(self, handle: FakeGpu, link: int) -> int:
        self._check(handle, "nvmlDeviceGetNvLinkState")
        self._link(handle, link)
        return 1

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, handle: FakeGpu, link: int) -> int:
        return 2 if self._link(handle, link) == "switch" else 0

    def nvmlDeviceGetNvLinkRemotePciInfo_v2(self, handle: FakeGpu, link: int) -> SimpleNamespace:
        return SimpleNamespace(busId=self._link(handle, link))

    def nvmlDeviceGetGpuFabricInfo(self, handle: FakeGpu, info: SimpleNamespace) -> None:
        if handle.fabric is None:
            raise FakeNVMLError(NOT_SUPPORTED)
        info.clusterUuid, info.cliqueId = handle.fabric
        info.state, info.status = 3, 0

    # --- processes ------------------------------------------------------------------

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu | FakeMig) -> list[Any]:
        if isinstance(handle, FakeGpu):
            self._check(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0, computeInstanceId=0)
            for pid, used in handle.processes
        ]

    def nvmlDeviceGetProcessUtilization(self, handle: FakeGpu, time_stamp: int) -> list[Any]:
        self._check(handle, "nvmlDeviceGetProcessUtilization")
        samples = [
            SimpleNamespace(pid=pid, timeStamp=at, smUtil=sm, memUtil=0, encUtil=0, decUtil=0)
            for pid, at, sm in handle.utilisation
            if at > time_stamp
        ]
        if not samples:
            raise FakeNVMLError(NOT_FOUND)
        return samples

    # --- MIG ------------------------------------------------------------------------

    def nvmlDeviceGetMigMode(self, handle: FakeGpu) -> list[int]:
        if handle.mig_mode is None:
            raise FakeNVMLError(NOT_SUPPORTED)
        return list(handle.mig_mode)

    def nvmlDeviceGetGpuInstanceProfileInfo(
        self, handle: FakeGpu, profile: int, version: int = 2
    ) -> SimpleNamespace:
        self._check(handle, "nvmlDeviceGetGpuInstanceProfileInfo")
        for spec in handle.model.mig_profiles:
            if spec.profile_enum == profile:
                return SimpleNamespace(
                    id=spec.profile_id,
                    isP2pSupported=0,
                    sliceCount=normalize.gpu_instance_slices(spec.profile_enum),
                    instanceCount=spec.instance_count,
                    multiprocessorCount=spec.multiprocessors,
                    copyEngineCount=spec.copy_engines,
                    decoderCount=spec.decoders,
                    encoderCount=spec.encoders,
                    jpegCount=spec.jpeg_engines,
                    ofaCount=spec.ofa_engines,
                    memorySizeMB=spec.memory_mib,
                )
        # Real NVML answers both, depending on the profile.
        raise FakeNVMLError(NOT_SUPPORTED if profile % 2 else INVALID_ARGUMENT)

    def nvmlDeviceGetGpuInstancePossiblePlacements(
        self, handle: FakeGpu, profile_id: int, placements: Any, count_ref: Any
    ) -> int:
        self._check(handle, "nvmlDeviceGetGpuInstancePossiblePlacements")
        spec = next(s for s in handle.model.mig_profiles if s.profile_id == profile_id)
        count = count_ref.contents
        self.placement_calls.append(
            (profile_id, None if placements is None else len(placements), count.value)
        )
        if placements is not None:
            if len(placements) < len(spec.placements):
                raise FakeNVMLError(INVALID_ARGUMENT)
            for i, (start, size) in enumerate(spec.placements):
                placements[i].start = start
                placements[i].size = size
        count.value = len(spec.placements)
        return 0

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeGpu) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeGpu, index: int) -> FakeMig:
        # Real NVML leaves holes: slots are per GPU instance, not packed.
        by_slot = {2 * i: mig for i, mig in enumerate(handle.migs)}
        if index not in by_slot:
            raise FakeNVMLError(NOT_FOUND)
        return by_slot[index]

    def nvmlDeviceGetGpuInstanceId(self, mig: FakeMig) -> int:
        return mig.gi_id

    def nvmlDeviceGetComputeInstanceId(self, mig: FakeMig) -> int:
        return mig.ci_id

    def nvmlDeviceGetGpuInstanceById(self, handle: FakeGpu, gi_id: int) -> FakeMig:
        for mig in handle.migs:
            if mig.gi_id == gi_id:
                return mig
        raise FakeNVMLError(NOT_FOUND)

    def nvmlGpuInstanceGetInfo(self, instance: FakeMig) -> SimpleNamespace:
        return SimpleNamespace(
            id=instance.gi_id,
            profileId=instance.profile_id,
            placement=SimpleNamespace(start=instance.start, size=instance.size),
        )

    # --- events ---------------------------------------------------------------------

    def nvmlEventSetCreate(self) -> str:
        return "event-set"

    def nvmlDeviceGetSupportedEventTypes(self, handle: FakeGpu) -> int:
        self._check(handle, "nvmlDeviceGetSupportedEventTypes")
        return handle.supported_events

    def nvmlDeviceRegisterEvents(self, handle: FakeGpu, mask: int, event_set: str) -> None:
        assert event_set == "event-set"
        self.registered[handle.uuid] = mask

    def nvmlEventSetWait_v2(self, event_set: str, timeout_ms: int) -> SimpleNamespace:
        if not self.events:
            raise FakeNVMLError(TIMEOUT)
        event = self.events.pop(0)
        if isinstance(event, int):
            raise FakeNVMLError(event)
        return event

    def nvmlEventSetFree(self, event_set: str) -> None:
        self.event_sets_freed += 1

    def event(self, gpu: FakeGpu, event_type: int, data: int = 0) -> None:
        self.events.append(
            SimpleNamespace(
                device=gpu,
                eventType=event_type,
                eventData=data,
                gpuInstanceId=0xFFFFFFFF,
                computeInstanceId=0xFFFFFFFF,
            )
        )


def make_sysfs(root: Path, bus_id: str, pcie_root: str, numa: int | None = None) -> None:
    """``/sys/bus/pci/devices/<bus id>`` as a link into ``/sys/devices/<root>/...``."""
    domain_bus = pcie_root.removeprefix("pci")
    device_dir = root / "devices" / pcie_root / f"{domain_bus}:01.0" / bus_id
    device_dir.mkdir(parents=True)
    if numa is not None:
        (device_dir / "numa_node").write_text(f"{numa}\n")
    links = root / "bus" / "pci" / "devices"
    links.mkdir(parents=True, exist_ok=True)
    (links / bus_id).symlink_to(device_dir)
