"""Dynamic MIG through NVML: :class:`NvmlMigManager` creates and destroys MIG devices.

A MIG device is a GPU instance at a placement plus one compute instance
spanning it; its capability device minors are read from
``/proc/driver/nvidia/capabilities``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from api.errors import PrepareError
from dra_driver.discovery.model import Gpu, MigDevice, MigProfile
from kubelet_plugin.nvml.library import (
    IN_USE,
    INSUFFICIENT_RESOURCES,
    NOT_FOUND,
    decode_text,
)

__all__ = ["NvmlMigManager"]

log = logging.getLogger(__name__)

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
            retryable=code in (IN_USE, INSUFFICIENT_RESOURCES),
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
                if getattr(err, "value", None) == NOT_FOUND:
                    continue
                raise
            gi_id = int(nvml.nvmlDeviceGetGpuInstanceId(mig))
            info = nvml.nvmlGpuInstanceGetInfo(nvml.nvmlDeviceGetGpuInstanceById(handle, gi_id))
            if int(info.profileId) == profile.profile_id and (
                int(info.placement.start) == placement[0]
            ):
                ci_id = int(nvml.nvmlDeviceGetComputeInstanceId(mig))
                return gi_id, ci_id, decode_text(nvml.nvmlDeviceGetUUID(mig))
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
