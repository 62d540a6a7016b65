"""Fake NVIDIA device nodes for the mock backend, under a configurable dev root.

With mock GPUs there is no driver to create ``/dev/nvidia*``, yet CDI specs
name those paths and a container runtime refuses a spec whose device node is
missing. :func:`create_device_nodes` creates them as empty regular files under
``<dev root>/dev/`` (a container runtime bind-mounts a regular file as happily
as a character device, and no privileges are needed):

- ``nvidia<minor>`` for every GPU of the inventory,
- the control nodes ``nvidiactl``, ``nvidia-uvm``, ``nvidia-uvm-tools`` and
  ``nvidia-modeset`` that every CUDA container gets.

Never point it at the real ``/``: it refuses to touch a dev root whose
``dev/nvidiactl`` is a character device, i.e. where a real driver lives.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from api.errors import DiscoveryError
from dra_driver.discovery.model import NodeInventory

__all__ = ["CONTROL_DEVICE_NODES", "create_device_nodes", "device_node_path"]

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

    Idempotent: existing files are left as they are (so a restart keeps what
    containers have bind-mounted). Files are mode 0666 like the real nodes.
    Raises DiscoveryError when the dev root holds real NVIDIA device nodes or
    a path cannot be created.
    """
    root = Path(dev_root)
    control = device_node_path(root, "/dev/nvidiactl")
    try:
        if control.exists() and stat.S_ISCHR(control.stat().st_mode):
            raise DiscoveryError(
                f"{control} is a real character device: fake device nodes belong under a "
                "dev root of their own (e.g. /var/run/dra-driver/mock), not the host's /"
            )
        nodes = [gpu.device_node for gpu in inventory.gpus] + list(CONTROL_DEVICE_NODES)
        paths: list[Path] = []
        for node in nodes:
            path = device_node_path(root, node)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # O_EXCL: two plugins starting at once must not truncate each other's file.
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    pass
                else:
                    os.close(fd)
                    # The umask narrowed the mode; device nodes are world read-writable.
                    path.chmod(0o666)
            paths.append(path)
    except OSError as err:
        raise DiscoveryError(f"cannot create fake device nodes under {root}: {err}") from None
    return paths
