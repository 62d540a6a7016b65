"""Where a GPU's MPS control daemon keeps its pipe and log directories, on the host and in
a container, and the CDI edits that connect a claim's containers to it.

One daemon per shared GPU (see :mod:`kubelet_plugin.mps`): its directories are
``<mps root>/<GPU UUID>/pipe`` and ``.../log`` on the host (the kubelet plugin
creates them and starts the daemon there); a container gets them at
``/run/dra-driver/mps/<GPU UUID>/pipe`` and ``.../log``. ``<mps root>/<GPU UUID>/shm`` is
mounted at the container's ``/dev/shm``, and on real GPUs it is the daemon's ``/dev/shm``
too: MPS clients and their server share memory there. Pure: paths only.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from dra_driver.cdi.model import Mount

__all__ = ["MPS_CONTAINER_ROOT", "MpsDirs", "mps_container_dirs", "mps_edits", "mps_host_dirs"]

#: Where a container sees the MPS directories of its GPUs.
MPS_CONTAINER_ROOT: Final = "/run/dra-driver/mps"

# The pipe directory holds the daemon's control pipe, which clients write to: read-write.
# The log directory is the daemon's: a container may read it, never fill it.
_PIPE_OPTIONS: Final = ("rw", "nosuid", "nodev", "noexec", "bind")
_LOG_OPTIONS: Final = ("ro", "nosuid", "nodev", "noexec", "bind")


@dataclass(frozen=True, slots=True)
class MpsDirs:
    """The two directories of one GPU's MPS control daemon."""

    pipe: str
    """``CUDA_MPS_PIPE_DIRECTORY``"""
    log: str
    """``CUDA_MPS_LOG_DIRECTORY``"""
    shm: str
    """The daemon's ``/dev/shm``, shared with its clients."""


def mps_host_dirs(mps_root: str, uuid: str) -> MpsDirs:
    """The daemon's directories on the host for the GPU ``uuid`` under ``mps_root``."""
    base = posixpath.join(mps_root, uuid)
    return MpsDirs(
        pipe=posixpath.join(base, "pipe"),
        log=posixpath.join(base, "log"),
        shm=posixpath.join(base, "shm"),
    )


def mps_container_dirs(uuid: str) -> MpsDirs:
    """Where a container sees the daemon's directories of the GPU ``uuid``."""
    return mps_host_dirs(MPS_CONTAINER_ROOT, uuid)


def mps_edits(
    mps_root: str, uuids: Sequence[str], *, shared_shm: bool = False
) -> tuple[list[str], list[Mount]]:
    """The env and mounts that connect a claim's containers to the daemons of ``uuids``
    (the claim's GPUs shared with MPS, in allocation order, without repeats).

    Every daemon's directories are mounted; ``CUDA_MPS_PIPE_DIRECTORY`` and
    ``CUDA_MPS_LOG_DIRECTORY`` name the first GPU's, since a CUDA process talks to one
    daemon: a process that wants another GPU's daemon sets them from
    ``DRA_GPU_<key>_MPS_PIPE_DIRECTORY``. With ``shared_shm`` the first daemon's shared
    memory directory becomes the container's ``/dev/shm`` (a container has one).
    """
    if not uuids:
        return [], []
    mounts: list[Mount] = []
    for uuid in uuids:
        host, container = mps_host_dirs(mps_root, uuid), mps_container_dirs(uuid)
        mounts.append(
            Mount(host_path=host.pipe, container_path=container.pipe, options=list(_PIPE_OPTIONS))
        )
        mounts.append(
            Mount(host_path=host.log, container_path=container.log, options=list(_LOG_OPTIONS))
        )
    if shared_shm:
        shm = mps_host_dirs(mps_root, uuids[0]).shm
        mounts.append(Mount(host_path=shm, container_path="/dev/shm", options=list(_PIPE_OPTIONS)))
    first = mps_container_dirs(uuids[0])
    env = [f"CUDA_MPS_PIPE_DIRECTORY={first.pipe}", f"CUDA_MPS_LOG_DIRECTORY={first.log}"]
    return env, mounts
