"""Building the node's :class:`~kubelet_plugin.mps.MpsDaemons` from what the host offers."""

from __future__ import annotations

import dataclasses
import posixpath
from pathlib import Path

from prometheus_client import CollectorRegistry

from dra_driver.cdi import DRIVER_LIBRARY_DIRS, HostFiles
from kubelet_plugin.mps.daemons import MPS_CONTROL_BINARY, MpsDaemons

__all__ = ["mps_daemons"]


def mps_daemons(
    host: HostFiles,
    *,
    driver_root: Path,
    mps_root: Path,
    required: bool,
    registry: CollectorRegistry | None = None,
    check_interval_s: float = 5.0,
) -> tuple[HostFiles, MpsDaemons]:
    """The daemons, and ``host`` with ``mps_root`` set when they can run.

    The binary is the driver's ``nvidia-cuda-mps-control`` that the host scan
    found (``host.driver_files``), run from ``driver_root`` (this process's view
    of it). ``mps_root`` must be the same path on the host and in the plugin
    (the plugin directory is mounted at its host path): CDI specs mount it.
    """
    found = sorted(p for p in host.driver_files if posixpath.basename(p) == MPS_CONTROL_BINARY)
    binary = driver_root / found[0].lstrip("/") if found else None
    library_path = None
    if driver_root != Path("/"):
        directories = {
            posixpath.dirname(p)
            for p in host.driver_files
            if posixpath.dirname(p) in DRIVER_LIBRARY_DIRS
        }
        library_path = ":".join(str(driver_root / d.lstrip("/")) for d in sorted(directories))
    daemons = MpsDaemons(
        binary=binary,
        mps_root=mps_root,
        required=required,
        library_path=library_path or None,
        registry=registry,
        check_interval_s=check_interval_s,
    )
    if binary is not None:
        host = dataclasses.replace(host, mps_root=str(mps_root))
    return host, daemons
