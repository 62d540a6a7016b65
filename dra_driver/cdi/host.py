"""What the host offers a claim's containers: control device nodes and the driver's files.

The kubelet plugin scans the host for them (:func:`select_driver_files` picks the
driver's libraries, binaries, firmware and sockets from a listing) and passes the
result in as :class:`HostFiles`; nothing here touches the file system.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

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

# ``libcuda.so.1``, ``libcuda.so.550.54.15``: the unversioned name, then numeric parts.
_VERSIONED_LIBRARY_RE: Final = re.compile(r"^(?P<name>.+\.so)(?:\.\d+)+$")
_FIRMWARE_RE: Final = re.compile(r"^gsp_[A-Za-z0-9_]+\.bin$")


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
    mps_root: str | None = None
    """Host directory of the MPS control daemons' directories (:mod:`dra_driver.cdi.mps`);
    None: the plugin runs no daemons, MPS settings reach containers as env only."""
    mps_shared_shm: bool = False
    """The spec mounts a daemon's shared memory directory, ``<mps root>/<GPU UUID>/shm``, at
    the container's ``/dev/shm`` (on real GPUs the daemon's own ``/dev/shm`` too)."""
    metadata_root: str | None = None
    """Host directory of the claims' device metadata files
    (:mod:`dra_driver.device_metadata`); None: none are written or mounted."""


def select_driver_files(paths: Iterable[str]) -> tuple[str, ...]:
    """The paths among ``paths`` that :func:`is_driver_file` accepts, sorted, without repeats."""
    return tuple(sorted({p for p in paths if is_driver_file(p)}))
