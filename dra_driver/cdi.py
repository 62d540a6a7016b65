"""CDI spec building: the per-claim Container Device Interface spec a container runtime reads.

One spec per prepared claim, kind ``<driver name>/gpu`` (``gpu.dra-driver.io/gpu``),
file ``<driver name>-<claim uid>.json`` in the CDI root. The layout follows
NVIDIA's DRA driver (spec/cdi.md §6):

- spec-level ``containerEdits`` (applied once when any device of the spec is
  requested): the control device nodes that exist on the host
  (``/dev/nvidiactl``, ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools``,
  ``/dev/nvidia-modeset``), read-only bind mounts of the driver's libraries,
  binaries and firmware found under the driver root, ``NVIDIA_VISIBLE_DEVICES``
  with the UUIDs of the claim's GPUs, the CUDA MPS client settings, and an
  ``update-ldcache`` hook where a hook binary is configured;
- one device per allocated GPU, named ``<claim uid>-gpu-<minor>``, with its
  ``/dev/nvidia<minor>`` node and ``DRA_GPU_<ordinal>_*`` variables describing it;
  a MIG device (``<claim uid>-gpu-<minor>-mig-...``) gets its parent's
  ``/dev/nvidia<minor>`` and the ``/dev/nvidia-caps/nvidia-cap<N>`` nodes of its
  GPU and compute instance, and its ``MIG-...`` UUID stands where a GPU's would.

``cdiVersion`` is the lowest version the content needs (:func:`minimum_cdi_version`),
so that older runtimes still load the file: containerd 1.7 reads up to 0.8.0,
podman 4.3 up to 0.5.0. The model cannot express the fields that need 0.6.0 or
later (annotations, ``intelRdt``, ``additionalGids``, ``netDevices``), so the
version written is at most 0.5.0.

Everything here is pure: what exists on the host is passed in as
:class:`HostFiles` (the kubelet plugin scans for it).
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "CDI_CLASS",
    "CONTROL_DEVICE_NODES",
    "DRIVER_BINARIES",
    "DRIVER_BINARY_DIRS",
    "DRIVER_LIBRARIES",
    "DRIVER_LIBRARY_DIRS",
    "FIRMWARE_DIR",
    "MAX_CDI_VERSION",
    "MOUNT_OPTIONS",
    "PERSISTENCED_SOCKET",
    "CdiDevice",
    "CdiSpec",
    "ContainerEdits",
    "DeviceNode",
    "Hook",
    "HostFiles",
    "Mount",
    "SharingSettings",
    "SpecDevice",
    "build_cdi_spec",
    "cdi_device_id",
    "cdi_device_name",
    "cdi_kind",
    "encode_cdi_spec",
    "is_driver_file",
    "is_valid_cdi_class",
    "is_valid_cdi_device_name",
    "is_valid_cdi_vendor",
    "minimum_cdi_version",
    "select_driver_files",
    "spec_file_name",
]

#: The class part of the kind (``<driver>/gpu``).
CDI_CLASS: Final = "gpu"

#: The highest cdiVersion this project ever writes: containerd 1.7 rejects 1.0.0 and later.
MAX_CDI_VERSION: Final = "0.8.0"

#: Control device nodes every CUDA container needs, where the host has them.
CONTROL_DEVICE_NODES: Final = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)

#: Directories (relative to the driver root) where distributions put the driver's libraries.
DRIVER_LIBRARY_DIRS: Final = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/lib64",
)

#: Driver userspace libraries, by their unversioned name; files ``<name>.<version>`` match.
DRIVER_LIBRARIES: Final = frozenset(
    {
        "libcuda.so",
        "libcudadebugger.so",
        "libnvidia-ml.so",
        "libnvidia-ptxjitcompiler.so",
        "libnvidia-nvvm.so",
        "libnvidia-allocator.so",
        "libnvidia-cfg.so",
        "libnvidia-gpucomp.so",
        "libnvidia-opencl.so",
        "libnvidia-pkcs11.so",
        "libnvidia-pkcs11-openssl3.so",
        "libnvidia-nscq.so",
    }
)

#: Directories (relative to the driver root) searched for the driver's binaries.
DRIVER_BINARY_DIRS: Final = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")

#: Driver binaries a CUDA container may use.
DRIVER_BINARIES: Final = frozenset(
    {
        "nvidia-smi",
        "nvidia-debugdump",
        "nvidia-persistenced",
        "nvidia-cuda-mps-control",
        "nvidia-cuda-mps-server",
    }
)

#: GSP firmware lives in ``<FIRMWARE_DIR>/<driver version>/gsp_*.bin``.
FIRMWARE_DIR: Final = "/lib/firmware/nvidia"

#: The persistence daemon's socket, mounted when present.
PERSISTENCED_SOCKET: Final = "/run/nvidia-persistenced/socket"

#: Options of every driver-file mount: read-only, no setuid, no device files.
MOUNT_OPTIONS: Final = ("ro", "nosuid", "nodev", "bind")

# Name rules of the CDI parser (spec/cdi.md §2).
_VENDOR_RE: Final = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?$")
_CLASS_RE: Final = _VENDOR_RE
_DEVICE_NAME_RE: Final = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?$")
# ``libcuda.so.1``, ``libcuda.so.550.54.15``: the unversioned name, then numeric parts.
_VERSIONED_LIBRARY_RE: Final = re.compile(r"^(?P<name>.+\.so)(?:\.\d+)+$")
_FIRMWARE_RE: Final = re.compile(r"^gsp_[A-Za-z0-9_]+\.bin$")
_ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_MIB: Final = 1024 * 1024


# --- Names ----------------------------------------------------------------------------


def is_valid_cdi_vendor(vendor: str) -> bool:
    """Whether ``vendor`` is a valid CDI vendor (the part before ``/`` of a kind)."""
    return _VENDOR_RE.match(vendor) is not None


def is_valid_cdi_class(cls: str) -> bool:
    """Whether ``cls`` is a valid CDI class (the part after ``/`` of a kind)."""
    return _CLASS_RE.match(cls) is not None and len(cls) <= 63


def is_valid_cdi_device_name(name: str) -> bool:
    """Whether ``name`` is a valid CDI device name (a leading digit needs cdiVersion 0.5.0)."""
    return _DEVICE_NAME_RE.match(name) is not None


def cdi_kind(driver_name: str) -> str:
    """The spec kind for a driver: ``gpu.dra-driver.io/gpu``.

    Raises ValueError when the driver name is not a valid CDI vendor; driver
    names are DNS subdomains, which always are.
    """
    if not is_valid_cdi_vendor(driver_name):
        raise ValueError(f"driver name {driver_name!r} is not a valid CDI vendor name")
    return f"{driver_name}/{CDI_CLASS}"


def cdi_device_name(claim_uid: str, device: str, share_id: str | None = None) -> str:
    """The CDI device name of one allocated device: ``<claim uid>-<device>``.

    The claim UID makes names unique per claim, so a runtime's CDI cache never
    serves a stale entry for a reused device. A device allocated more than once
    within a claim (consumable capacity) is told apart by its share ID. Raises
    ValueError when the result is not a valid CDI device name (a device name
    from a ResourceSlice is a DNS label, so it never is invalid).
    """
    name = f"{claim_uid}-{device}" if share_id is None else f"{claim_uid}-{device}-{share_id}"
    if not is_valid_cdi_device_name(name):
        raise ValueError(f"{name!r} is not a valid CDI device name")
    return name


def cdi_device_id(driver_name: str, name: str) -> str:
    """The fully qualified CDI device ID the kubelet passes to the runtime: ``<kind>=<name>``."""
    return f"{cdi_kind(driver_name)}={name}"


def spec_file_name(driver_name: str, claim_uid: str) -> str:
    """The file name of a claim's spec in the CDI root: ``<driver>-<claim uid>.json``."""
    return f"{driver_name}-{claim_uid}.json"


# --- Model ------------------------------------------------------------------------------


class _CdiModel(BaseModel):
    """CDI JSON names, and no unknown fields: the Go loaders reject them too."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


def _check_env(entries: list[str] | None) -> list[str] | None:
    for entry in entries or ():
        name, sep, _ = entry.partition("=")
        if not sep or _ENV_NAME_RE.match(name) is None:
            raise ValueError(f"env entry {entry!r} must be NAME=value")
    return entries


def _check_absolute(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must be absolute")
    return path


class DeviceNode(_CdiModel):
    """A device node; the runtime fills in type, major and minor by stat()-ing the host path."""

    path: str
    """Path inside the container."""
    host_path: str | None = None
    """Path on the host when it differs from ``path`` (needs cdiVersion 0.5.0)."""
    permissions: str | None = None

    @field_validator("path", "host_path")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        return path if path is None else _check_absolute(path)


class Mount(_CdiModel):
    host_path: str
    container_path: str
    options: list[str] | None = None
    type: str | None = None
    """Setting it needs cdiVersion 0.4.0; bind mounts work without it."""

    @field_validator("host_path", "container_path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        return _check_absolute(path)


class Hook(_CdiModel):
    hook_name: str
    path: str
    args: list[str] | None = None
    env: list[str] | None = None
    timeout: int | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        return _check_absolute(path)

    @field_validator("env")
    @classmethod
    def _env(cls, env: list[str] | None) -> list[str] | None:
        return _check_env(env)


class ContainerEdits(_CdiModel):
    env: list[str] | None = None
    device_nodes: list[DeviceNode] | None = None
    mounts: list[Mount] | None = None
    hooks: list[Hook] | None = None

    @field_validator("env")
    @classmethod
    def _env(cls, env: list[str] | None) -> list[str] | None:
        return _check_env(env)

    def is_empty(self) -> bool:
        return not (self.env or self.device_nodes or self.mounts or self.hooks)


class CdiDevice(_CdiModel):
    name: str
    container_edits: ContainerEdits

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not is_valid_cdi_device_name(name):
            raise ValueError(f"{name!r} is not a valid CDI device name")
        return name

    @field_validator("container_edits")
    @classmethod
    def _not_empty(cls, edits: ContainerEdits) -> ContainerEdits:
        # The Go validator refuses a device without edits ("empty device edits").
        if edits.is_empty():
            raise ValueError("a device needs at least one container edit")
        return edits


class CdiSpec(_CdiModel):
    cdi_version: str
    kind: str
    devices: list[CdiDevice]
    container_edits: ContainerEdits | None = None

    @field_validator("devices")
    @classmethod
    def _devices(cls, devices: list[CdiDevice]) -> list[CdiDevice]:
        if not devices:
            raise ValueError("a spec needs at least one device")
        names = [d.name for d in devices]
        if len(set(names)) != len(names):
            raise ValueError(f"device names must be unique within a spec: {names}")
        return devices

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str) -> str:
        vendor, sep, cls_name = kind.partition("/")
        if not sep or not is_valid_cdi_vendor(vendor) or not is_valid_cdi_class(cls_name):
            raise ValueError(f"kind {kind!r} must be <vendor>/<class>")
        return kind


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def minimum_cdi_version(spec: CdiSpec) -> str:
    """The lowest cdiVersion that can express ``spec`` (spec/cdi.md §4), at least 0.3.0.

    0.4.0 for a mount with ``type``; 0.5.0 for a device node with ``hostPath``
    or a device name that starts with a digit. ``spec.cdi_version`` is ignored.
    """
    needed = "0.3.0"

    def need(version: str) -> None:
        nonlocal needed
        if _version_key(version) > _version_key(needed):
            needed = version

    edits = [d.container_edits for d in spec.devices]
    if spec.container_edits is not None:
        edits.append(spec.container_edits)
    for edit in edits:
        if any(m.type is not None for m in edit.mounts or ()):
            need("0.4.0")
        if any(n.host_path is not None for n in edit.device_nodes or ()):
            need("0.5.0")
    if any(d.name[0].isdigit() for d in spec.devices):
        need("0.5.0")
    return needed


def encode_cdi_spec(spec: CdiSpec) -> bytes:
    """The spec file's bytes: compact JSON with the CDI field names, unset fields left out.

    Compact because indenting switches ``json`` to its pure-Python encoder, which
    costs more than the rest of preparing a claim; ``jq`` reads it fine.
    """
    document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return (json.dumps(document, separators=(",", ":")) + "\n").encode()


# --- What the host offers -----------------------------------------------------------------


def is_driver_file(path: str) -> bool:
    """Whether ``path`` (absolute, relative to the driver root) is a file to mount.

    Libraries: a known driver library with a version suffix (``libcuda.so.1``,
    ``libcuda.so.550.54.15``) directly in one of :data:`DRIVER_LIBRARY_DIRS`.
    Binaries: one of :data:`DRIVER_BINARIES` in :data:`DRIVER_BINARY_DIRS`.
    Firmware: ``gsp_*.bin`` in a version directory under :data:`FIRMWARE_DIR`.
    And the persistence daemon's socket.
    """
    directory, base = posixpath.split(path)
    if directory in DRIVER_LIBRARY_DIRS:
        match = _VERSIONED_LIBRARY_RE.match(base)
        return match is not None and match.group("name") in DRIVER_LIBRARIES
    if directory in DRIVER_BINARY_DIRS:
        return base in DRIVER_BINARIES
    if posixpath.dirname(directory) == FIRMWARE_DIR:
        return _FIRMWARE_RE.match(base) is not None
    return path == PERSISTENCED_SOCKET


@dataclass(frozen=True, slots=True)
class HostFiles:
    """What the host offers every container of a claim; found by the kubelet plugin.

    Paths in ``control_devices`` and ``driver_files`` are absolute as seen from
    their root (``/dev/nvidiactl``, ``/usr/lib/x86_64-linux-gnu/libcuda.so.1``);
    the host path is the root joined with it, the container path is the path itself.
    """

    dev_root: str = "/"
    """Host directory that holds ``dev/`` (``/`` normally; the mock backend uses another)."""
    driver_root: str = "/"
    """Host directory where the driver is installed (``/``, or ``/run/nvidia/driver``
    for a containerised driver)."""
    control_devices: tuple[str, ...] = ()
    """Those of :data:`CONTROL_DEVICE_NODES` that exist under the dev root."""
    driver_files: tuple[str, ...] = ()
    """Files under the driver root for which :func:`is_driver_file` holds."""
    hook_path: str | None = None
    """Host path of ``nvidia-cdi-hook``; None: no hook in the spec."""


def _host_path(root: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(root, path.lstrip("/")))


def _device_node(root: str, path: str) -> DeviceNode:
    host = _host_path(root, path)
    # Leave hostPath out when it equals the path: that keeps cdiVersion down.
    return DeviceNode(path=path, host_path=None if host == path else host)


# --- Spec building ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SharingSettings:
    """How a prepared GPU is shared, after config merging and defaults.

    ``strategy`` is ``TimeSlicing`` or ``MPS`` (exclusive use has no settings).
    """

    strategy: str
    time_slice_interval: str | None = None
    mps_active_thread_percentage: int | None = None
    mps_pinned_memory_limit_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class SpecDevice:
    """One GPU of a claim as the spec needs it."""

    name: str
    """CDI device name, from :func:`cdi_device_name`."""
    uuid: str
    device_node: str
    """Container path of the device node, ``/dev/nvidia<minor>`` (a MIG device's parent's)."""
    sharing: SharingSettings | None = None
    """None: exclusive use."""
    extra_device_nodes: tuple[str, ...] = ()
    """Further nodes of this device: a MIG device's ``/dev/nvidia-caps/nvidia-cap<N>``."""


def _mebibytes(size: int) -> str:
    # CUDA reads pinned memory limits as <n>M; round up so a limit never shrinks to 0.
    return f"{math.ceil(size / _MIB)}M"


def _device_env(ordinal: int, device: SpecDevice) -> list[str]:
    prefix = f"DRA_GPU_{ordinal}_"
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
    return env


def _claim_env(devices: Sequence[SpecDevice]) -> list[str]:
    env = [f"NVIDIA_VISIBLE_DEVICES={','.join(d.uuid for d in devices)}"]
    mps = [d for d in devices if d.sharing is not None and d.sharing.strategy == "MPS"]
    percentages = [
        d.sharing.mps_active_thread_percentage
        for d in mps
        if d.sharing is not None and d.sharing.mps_active_thread_percentage is not None
    ]
    if percentages:
        # One value per CUDA client: the smallest keeps the client within every
        # device's share; the per-device values are in DRA_GPU_<n>_*.
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
        env=_claim_env(devices),
        device_nodes=nodes or None,
        mounts=mounts or None,
        hooks=hooks or None,
    )


def build_cdi_spec(*, driver_name: str, devices: Sequence[SpecDevice], host: HostFiles) -> CdiSpec:
    """The spec for one claim's GPUs, with the lowest cdiVersion its content needs.

    Deterministic: the same inputs give byte-identical :func:`encode_cdi_spec`
    output, so re-deriving a spec after a crash rewrites the same file. Devices
    keep their order; their position is the ordinal in ``DRA_GPU_<n>_*`` and in
    ``NVIDIA_VISIBLE_DEVICES``. Raises ValueError for an empty device list or an
    invalid name (callers build names with :func:`cdi_device_name`).
    """
    if not devices:
        raise ValueError("a CDI spec needs at least one device")
    spec_devices = [
        CdiDevice(
            name=device.name,
            container_edits=ContainerEdits(
                env=_device_env(ordinal, device),
                device_nodes=[
                    _device_node(host.dev_root, path)
                    for path in (device.device_node, *device.extra_device_nodes)
                ],
            ),
        )
        for ordinal, device in enumerate(devices)
    ]
    draft = CdiSpec(
        cdi_version=MAX_CDI_VERSION,
        kind=cdi_kind(driver_name),
        devices=spec_devices,
        container_edits=_common_edits(devices, host),
    )
    version = minimum_cdi_version(draft)
    if _version_key(version) > _version_key(MAX_CDI_VERSION):  # pragma: no cover - see module doc
        raise ValueError(f"spec needs cdiVersion {version}, above {MAX_CDI_VERSION}")
    return draft.model_copy(update={"cdi_version": version})


def select_driver_files(paths: Iterable[str]) -> tuple[str, ...]:
    """The paths among ``paths`` that :func:`is_driver_file` accepts, sorted, without repeats."""
    return tuple(sorted({p for p in paths if is_driver_file(p)}))
