"""Finding the driver's sharing tools on the host, building the enforcers that run them,
and the Node Events of their MPS daemons.

``nvidia-cuda-mps-control`` (:mod:`kubelet_plugin.mps`) and ``nvidia-smi``
(:mod:`kubelet_plugin.time_slicing`) are the ones the host scan found under the
driver root (``host.driver_files``), run from ``driver_root``, this process's
view of it, with the driver root's library directories as ``LD_LIBRARY_PATH``
when the driver is not installed in ``/``.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry

from agent_kit.events import EventRecorder, ObjectRef
from agent_kit.kube import ClusterClient
from dra_driver.cdi import DRIVER_LIBRARY_DIRS, HostFiles
from kubelet_plugin.enforcement import SharingEnforcer
from kubelet_plugin.mps import MPS_CONTROL_BINARY, MpsDaemons
from kubelet_plugin.mps.users import PodReader
from kubelet_plugin.time_slicing import NVIDIA_SMI, TimeSlicePolicy

__all__ = ["MpsRestartEvents", "driver_library_path", "driver_tool", "sharing_enforcers"]


#: The source of the MPS daemon Events (as of the plugin's other Node Events).
EVENTS_COMPONENT: Final = "dra-driver-kubelet-plugin"


class MpsRestartEvents:
    """A Warning Event ``MpsDaemonRestarted`` on the Node for each MPS daemon started again.

    Written on a thread of its own (best effort, rate-limited: :mod:`agent_kit.events`);
    :meth:`stop` when the plugin stops.
    """

    def __init__(self, client: ClusterClient, node_name: str, node_uid: str | None) -> None:
        self._events = EventRecorder(client, component=EVENTS_COMPONENT, instance=node_name)
        self._node = ObjectRef("Node", "v1", "default", node_name, node_uid or "")
        self._events.start()

    def restarted(self, gpu: str, claims: str) -> None:
        self._events.emit(
            self._node,
            "Warning",
            "MpsDaemonRestarted",
            f"the MPS control daemon of GPU {gpu} died and was started again; the "
            f"processes of claims {claims} on it lost their MPS server",
        )

    def stop(self) -> None:
        self._events.stop()


def driver_tool(host: HostFiles, driver_root: Path, name: str) -> Path | None:
    """The driver binary ``name`` the host scan found, as this process sees it; None if none."""
    found = sorted(p for p in host.driver_files if posixpath.basename(p) == name)
    return driver_root / found[0].lstrip("/") if found else None


def driver_library_path(host: HostFiles, driver_root: Path) -> str | None:
    """``LD_LIBRARY_PATH`` for the driver's tools: its library directories, when the driver
    root is not ``/``; None otherwise."""
    if driver_root == Path("/"):
        return None
    directories = sorted(
        {posixpath.dirname(p) for p in host.driver_files}.intersection(DRIVER_LIBRARY_DIRS)
    )
    return ":".join(str(driver_root / d.lstrip("/")) for d in directories) or None


def sharing_enforcers(
    host: HostFiles,
    *,
    driver_root: Path,
    mps_root: Path,
    real_gpus: bool,
    registry: CollectorRegistry | None = None,
    check_interval_s: float = 5.0,
    on_restart: Callable[[str, str], None] | None = None,
    pods: PodReader | None = None,
) -> tuple[HostFiles, list[SharingEnforcer]]:
    """The enforcers, and ``host`` with ``mps_root`` set when MPS daemons can run.

    ``mps_root`` must be the same path on the host and in the plugin (the plugin
    directory is mounted at its host path): CDI specs mount it. ``real_gpus``
    false (the mock backend): a missing MPS binary leaves MPS as env, a daemon runs
    without its shared memory directory as its own ``/dev/shm`` (an unprivileged plugin
    cannot mount; a mock GPU has no MPS server to use it), though its clients share that
    directory as on real GPUs, and the time slice is not applied (there is no GPU for
    ``nvidia-smi`` to set). ``on_restart`` and ``pods`` (the one-UID-per-GPU check): see
    :class:`~kubelet_plugin.mps.MpsDaemons`.
    """
    library_path = driver_library_path(host, driver_root)
    binary = driver_tool(host, driver_root, MPS_CONTROL_BINARY)
    daemons = MpsDaemons(
        binary=binary,
        mps_root=mps_root,
        required=real_gpus,
        library_path=library_path,
        registry=registry,
        check_interval_s=check_interval_s,
        shared_shm=real_gpus,
        on_restart=on_restart,
        pods=pods,
    )
    if binary is not None:
        host = dataclasses.replace(host, mps_root=str(mps_root), mps_shared_shm=True)
    enforcers: list[SharingEnforcer] = [daemons]
    if real_gpus:
        smi = driver_tool(host, driver_root, NVIDIA_SMI)
        enforcers.append(TimeSlicePolicy(smi, library_path=library_path))
    return host, enforcers
