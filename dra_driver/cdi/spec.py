"""Building a claim's CDI spec from its GPUs and what the host offers (layout: the package doc)."""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from dra_driver.cdi.host import DRIVER_LIBRARY_DIRS, HostFiles
from dra_driver.cdi.model import (
    MAX_CDI_VERSION,
    CdiDevice,
    CdiSpec,
    ContainerEdits,
    DeviceNode,
    Hook,
    Mount,
    cdi_kind,
    minimum_cdi_version,
    version_key,
)
from dra_driver.cdi.mps import mps_container_dirs, mps_edits

#: Options of every driver-file mount: read-only, no setuid, no device files.
MOUNT_OPTIONS: Final = ("ro", "nosuid", "nodev", "bind")
#: Options of a data file mounted by a device of its own (a device metadata file).
FILE_MOUNT_OPTIONS: Final = ("ro", "nosuid", "nodev", "noexec", "bind")

_MIB: Final = 1024 * 1024


def _host_path(root: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(root, path.lstrip("/")))


def _device_node(root: str, path: str) -> DeviceNode:
    host = _host_path(root, path)
    # Leave hostPath out when it equals the path: that keeps cdiVersion down.
    return DeviceNode(path=path, host_path=None if host == path else host)


@dataclass(frozen=True, slots=True)
class SharingSettings:
    """How a prepared GPU is shared, after config merging and defaults.

    ``strategy`` is ``TimeSlicing`` or ``MPS`` (exclusive use has no settings).
    """

    strategy: str
    time_slice_interval: str | None = None
    mps_active_thread_percentage: int | None = None
    mps_pinned_memory_limit_bytes: int | None = None


def gpu_env_key(device: str, share_id: str | None = None) -> str:
    """The ``<key>`` of a device's ``DRA_GPU_<key>_*`` variables: its published name without
    the ``gpu-`` prefix (and with its share ID), upper case, ``_`` for anything else than a
    letter or digit: ``gpu-3`` -> ``3``, ``gpu-0-mig-1g.10gb-0`` -> ``0_MIG_1G_10GB_0``.

    Unique per device of a node, so a container given devices of several claims (or of
    several requests) gets every device's variables, none overwriting another's."""
    name = device.removeprefix("gpu-")
    if share_id:
        name = f"{name}-{share_id}"
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


@dataclass(frozen=True, slots=True)
class SpecDevice:
    """One GPU of a claim as the spec needs it."""

    name: str
    """CDI device name, from :func:`cdi_device_name`."""
    env_key: str
    """The ``<key>`` of its ``DRA_GPU_<key>_*`` variables, from :func:`gpu_env_key`."""
    uuid: str
    device_node: str
    """Container path of the device node, ``/dev/nvidia<minor>`` (a MIG device's parent's)."""
    sharing: SharingSettings | None = None
    """None: exclusive use."""
    extra_device_nodes: tuple[str, ...] = ()
    """Further nodes of this device: a MIG device's ``/dev/nvidia-caps/nvidia-cap<N>``."""


@dataclass(frozen=True, slots=True)
class FileDevice:
    """A CDI device of the spec that mounts one host file read-only, and nothing else: a
    request's device metadata file (:mod:`dra_driver.device_metadata`)."""

    name: str
    host_path: str
    container_path: str


def _mebibytes(size: int) -> str:
    # CUDA reads pinned memory limits as <n>M; round up so a limit never shrinks to 0.
    return f"{math.ceil(size / _MIB)}M"


def _mps_uuids(devices: Sequence[SpecDevice]) -> list[str]:
    return list(
        dict.fromkeys(
            d.uuid for d in devices if d.sharing is not None and d.sharing.strategy == "MPS"
        )
    )


def _device_env(device: SpecDevice, mps_root: str | None) -> list[str]:
    prefix = f"DRA_GPU_{device.env_key}_"
    env = [f"{prefix}UUID={device.uuid}"]
    sharing = device.sharing
    env.append(f"{prefix}SHARING_STRATEGY={'Exclusive' if sharing is None else sharing.strategy}")
    if sharing is None:
        return env
    if sharing.time_slice_interval is not None:
        env.append(f"{prefix}TIME_SLICE_INTERVAL={sharing.time_slice_interval}")
    if sharing.mps_active_thread_percentage is not None:
        env.append(f"{prefix}MPS_ACTIVE_THREAD_PERCENTAGE={sharing.mps_active_thread_percentage}")
    if sharing.mps_pinned_memory_limit_bytes is not None:
        limit = _mebibytes(sharing.mps_pinned_memory_limit_bytes)
        env.append(f"{prefix}MPS_PINNED_DEVICE_MEM_LIMIT={limit}")
    if sharing.strategy == "MPS" and mps_root is not None:
        env.append(f"{prefix}MPS_PIPE_DIRECTORY={mps_container_dirs(device.uuid).pipe}")
    return env


def _claim_env(devices: Sequence[SpecDevice]) -> list[str]:
    # "void": the container gets its GPUs from the device nodes CDI injects, never from a
    # runtime hook reading this variable (which would hand a container that uses one
    # device of a claim every device of it). Each device's UUID is in DRA_GPU_<key>_UUID.
    env = ["NVIDIA_VISIBLE_DEVICES=void"]
    mps = [d for d in devices if d.sharing is not None and d.sharing.strategy == "MPS"]
    percentages = [
        d.sharing.mps_active_thread_percentage
        for d in mps
        if d.sharing is not None and d.sharing.mps_active_thread_percentage is not None
    ]
    if percentages:
        # One value per CUDA client: the smallest keeps the client within every
        # device's share; the per-device values are in DRA_GPU_<key>_*.
        env.append(f"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={min(percentages)}")
    limits = [
        f"{d.uuid}={_mebibytes(d.sharing.mps_pinned_memory_limit_bytes)}"
        for d in mps
        if d.sharing is not None and d.sharing.mps_pinned_memory_limit_bytes is not None
    ]
    if limits:
        env.append(f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT={','.join(limits)}")
    return env


def _common_edits(devices: Sequence[SpecDevice], host: HostFiles) -> ContainerEdits:
    nodes = [_device_node(host.dev_root, path) for path in host.control_devices]
    mounts = [
        Mount(
            host_path=_host_path(host.driver_root, path),
            container_path=path,
            options=list(MOUNT_OPTIONS),
        )
        for path in sorted(host.driver_files)
    ]
    env = _claim_env(devices)
    if host.mps_root is not None:
        mps_env, mps_mounts = mps_edits(
            host.mps_root, _mps_uuids(devices), shared_shm=host.mps_shared_shm
        )
        env += mps_env
        mounts += mps_mounts
    hooks: list[Hook] = []
    library_dirs = sorted(
        {
            posixpath.dirname(p)
            for p in host.driver_files
            if posixpath.dirname(p) in DRIVER_LIBRARY_DIRS
        }
    )
    if host.hook_path is not None and library_dirs:
        args = ["nvidia-cdi-hook", "update-ldcache"]
        for directory in library_dirs:
            args += ["--folder", directory]
        hooks.append(Hook(hook_name="createContainer", path=host.hook_path, args=args))
    return ContainerEdits(
        env=env,
        device_nodes=nodes or None,
        mounts=mounts or None,
        hooks=hooks or None,
    )


def build_cdi_spec(
    *,
    driver_name: str,
    devices: Sequence[SpecDevice],
    host: HostFiles,
    file_devices: Sequence[FileDevice] = (),
) -> CdiSpec:
    """The spec for one claim's GPUs, with the lowest cdiVersion its content needs.

    ``file_devices`` follow the GPUs, each a device of its own that mounts one file.

    Deterministic: the same inputs give byte-identical :func:`encode_cdi_spec`
    output, so re-deriving a spec after a crash rewrites the same file. Devices
    keep their order. Raises ValueError for an empty device list, an invalid name
    (callers build names with :func:`cdi_device_name`) or two devices with one
    ``env_key``.
    """
    if not devices:
        raise ValueError("a CDI spec needs at least one device")
    keys = [d.env_key for d in devices]
    if len(set(keys)) != len(keys):
        raise ValueError(f"devices share an env key: {keys}")
    spec_devices = [
        CdiDevice(
            name=device.name,
            container_edits=ContainerEdits(
                env=_device_env(device, host.mps_root),
                device_nodes=[
                    _device_node(host.dev_root, path)
                    for path in (device.device_node, *device.extra_device_nodes)
                ],
            ),
        )
        for device in devices
    ]
    spec_devices += [
        CdiDevice(
            name=file.name,
            container_edits=ContainerEdits(
                mounts=[
                    Mount(
                        host_path=file.host_path,
                        container_path=file.container_path,
                        options=list(FILE_MOUNT_OPTIONS),
                    )
                ]
            ),
        )
        for file in file_devices
    ]
    draft = CdiSpec(
        cdi_version=MAX_CDI_VERSION,
        kind=cdi_kind(driver_name),
        devices=spec_devices,
        container_edits=_common_edits(devices, host),
    )
    version = minimum_cdi_version(draft)
    if version_key(version) > version_key(MAX_CDI_VERSION):  # pragma: no cover - see package doc
        raise ValueError(f"spec needs cdiVersion {version}, above {MAX_CDI_VERSION}")
    return draft.model_copy(update={"cdi_version": version})
