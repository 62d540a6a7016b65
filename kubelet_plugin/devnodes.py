"""Fake NVIDIA device nodes for the mock backend, under a configurable dev root.

With mock GPUs there is no driver to create ``/dev/nvidia*``, yet CDI specs
name those paths and a container runtime refuses a spec whose device node is
missing, or is not a device node: both containerd and podman stat the host
path and reject a regular file ("not a device node"). So
:func:`create_device_nodes` creates, under ``<dev root>/dev/``, character
devices with the numbers the NVIDIA driver uses (major 195: ``nvidia<minor>``
= 195:minor, ``nvidiactl`` = 195:255, ``nvidia-modeset`` = 195:254; the UVM
nodes get major 511, where the driver's dynamic major usually lands). Without
the driver loaded, opening them fails with ENXIO, but a container sees them in
``/dev`` exactly as on a GPU node. Without the privilege to create device nodes
(not root, or no CAP_MKNOD) it falls back to empty regular files and says so:
enough for unit tests and ``discover``, not for a container runtime.

- ``nvidia<minor>`` for every GPU of the inventory,
- the control nodes ``nvidiactl``, ``nvidia-uvm``, ``nvidia-uvm-tools`` and
  ``nvidia-modeset`` that every CUDA container gets,
- ``nvidia-caps/nvidia-cap<N>`` for the GPU and compute instance of every MIG
  device: the static ones here, the dynamic ones when
  :class:`DevNodeMigManager` creates them (major 508: the real driver's
  ``nvidia-caps`` major is dynamic too).

A marker file ``dev/.dra-driver-mock`` records that the nodes are ours. Never
point it at the real ``/``: it refuses a dev root whose ``dev/nvidiactl`` is a
character device without that marker, i.e. where a real driver lives.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final

from api.errors import DiscoveryError, PrepareError
from dra_driver.discovery.model import Gpu, MigDevice, MigManager, MigProfile, NodeInventory

__all__ = [
    "CONTROL_DEVICE_NODES",
    "DevNodeMigManager",
    "create_cap_nodes",
    "create_device_nodes",
    "device_node_path",
]

log = logging.getLogger(__name__)

#: Marks a dev root whose NVIDIA nodes were made by this module.
MOCK_MARKER: Final = "/dev/.dra-driver-mock"
_NVIDIA_MAJOR: Final = 195
_UVM_MAJOR: Final = 511
_CAPS_MAJOR: Final = 508
_CAP_PREFIX: Final = "/dev/nvidia-caps/nvidia-cap"
_CONTROL_NUMBERS: Final = {
    "/dev/nvidiactl": (_NVIDIA_MAJOR, 255),
    "/dev/nvidia-modeset": (_NVIDIA_MAJOR, 254),
    "/dev/nvidia-uvm": (_UVM_MAJOR, 0),
    "/dev/nvidia-uvm-tools": (_UVM_MAJOR, 1),
}

#: Device nodes every CUDA container needs besides its GPUs, relative to the dev root.
CONTROL_DEVICE_NODES: Final = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)


def device_node_path(dev_root: Path | str, node: str) -> Path:
    """Where ``node`` (``/dev/nvidia0``) lives under ``dev_root``."""
    return Path(dev_root) / node.lstrip("/")


def create_device_nodes(dev_root: Path | str, inventory: NodeInventory) -> list[Path]:
    """Create the inventory's device nodes and the control nodes; return their paths.

    Idempotent: existing nodes are left as they are (so a restart keeps what
    containers use). Nodes are mode 0666 like the real ones. Raises
    DiscoveryError when the dev root holds real NVIDIA device nodes or a path
    cannot be created.
    """
    root = Path(dev_root)
    control = device_node_path(root, "/dev/nvidiactl")
    marker = device_node_path(root, MOCK_MARKER)
    try:
        if control.exists() and stat.S_ISCHR(control.stat().st_mode) and not marker.exists():
            raise DiscoveryError(
                f"{control} is a real character device: fake device nodes belong under a "
                "dev root of their own (e.g. /var/run/dra-driver/mock), not the host's /"
            )
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        numbers = {gpu.device_node: (_NVIDIA_MAJOR, gpu.minor) for gpu in inventory.gpus}
        numbers.update(_CONTROL_NUMBERS)
        for gpu in inventory.gpus:
            for mig in gpu.mig_devices:
                numbers.update(_cap_numbers(mig.cap_device_nodes))
        paths: list[Path] = []
        as_files = False
        for node, (major, minor) in numbers.items():
            path = device_node_path(root, node)
            if not path.exists():
                as_files = _create_node(path, major, minor, as_files=as_files)
            paths.append(path)
    except OSError as err:
        raise DiscoveryError(f"cannot create fake device nodes under {root}: {err}") from None
    return paths


def _cap_numbers(nodes: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    return {node: (_CAPS_MAJOR, int(node.removeprefix(_CAP_PREFIX))) for node in nodes}


def create_cap_nodes(dev_root: Path | str, mig: MigDevice) -> list[Path]:
    """Create the fake ``nvidia-cap<N>`` nodes of one MIG device; idempotent; their paths.

    Raises OSError when a node cannot be created.
    """
    paths = []
    as_files = False
    for node, (major, minor) in _cap_numbers(mig.cap_device_nodes).items():
        path = device_node_path(dev_root, node)
        if not path.exists():
            as_files = _create_node(path, major, minor, as_files=as_files)
        paths.append(path)
    return paths


class DevNodeMigManager:
    """A :class:`~dra_driver.discovery.model.MigManager` around the mock backend's that
    also creates the fake capability nodes of each MIG device it makes.

    The nodes stay when the device is destroyed: the real driver's
    ``nvidia-cap<N>`` nodes exist whether or not a MIG device uses them.
    """

    def __init__(self, inner: MigManager, dev_root: Path | str) -> None:
        self._inner = inner
        self._dev_root = Path(dev_root)

    def create(self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int]) -> MigDevice:
        mig = self._inner.create(gpu, profile, placement)
        try:
            create_cap_nodes(self._dev_root, mig)
        except OSError as err:
            self._inner.destroy(gpu, profile, placement)
            raise PrepareError(
                f"cannot create the capability nodes of MIG device {mig.uuid} under "
                f"{self._dev_root}: {err}",
                retryable=True,
            ) from err
        return mig

    def destroy(self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int]) -> bool:
        return self._inner.destroy(gpu, profile, placement)


def _create_node(path: Path, major: int, minor: int, *, as_files: bool) -> bool:
    """Create one node (a character device, else a regular file); True once files are used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not as_files:
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        except FileExistsError:
            return False  # another plugin starting at the same time made it
        except PermissionError:
            log.warning(
                "no privilege to create device nodes under %s: creating regular files, which "
                "container runtimes refuse as CDI device nodes (run as root for containers)",
                path.parent,
            )
            as_files = True
        else:
            # The umask narrowed the mode; device nodes are world read-writable.
            path.chmod(0o666)
            return False
    try:
        # O_EXCL: two plugins starting at once must not truncate each other's file.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return True
    os.close(fd)
    path.chmod(0o666)
    return True
