"""NvmlBackend: the :class:`~dra_driver.discovery.model.DiscoveryBackend` on NVML.

It initialises NVML, shuts it down, and hands discovery, health events and
dynamic MIG to the modules of :mod:`kubelet_plugin.nvml` that do each.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from api.errors import DiscoveryError
from dra_driver.discovery.model import HealthEvent, NodeInventory, RecoveryAction
from dra_driver.discovery.processes import GpuProcess
from kubelet_plugin.nvml.discovery import NvmlDiscovery
from kubelet_plugin.nvml.events import NvmlHealthEvents
from kubelet_plugin.nvml.library import INIT_HINT, NvmlCalls, load_pynvml, preload_library
from kubelet_plugin.nvml.mig import NvmlMigManager
from kubelet_plugin.nvml.processes import NvmlProcessSampler
from kubelet_plugin.nvml.recovery import NvmlRecoveryProbe

__all__ = ["NvmlBackend"]

log = logging.getLogger(__name__)


class NvmlBackend:
    """Discovery and health events from the NVIDIA driver.

    Construction initialises NVML (``nvmlInit``) and raises DiscoveryError,
    with a hint at the fix, when that fails. ``close()`` frees the event set
    and shuts NVML down; the backend is also a context manager.
    ``driver_root``: where this process sees the driver's files; its
    ``libnvidia-ml.so.1`` is loaded first (:func:`preload_library`).
    ``discover()`` is serialised by a lock; ``wait_health_event()`` may block
    in another thread at the same time (NVML is thread-safe; the lock only
    keeps one discovery's reads consistent).
    """

    def __init__(
        self,
        node_name: str,
        *,
        nvml: Any = None,
        sysfs_root: Path | str = "/sys",
        proc_root: Path | str = "/proc",
        driver_root: Path | None = None,
    ) -> None:
        self.node_name = node_name
        if nvml is None and driver_root is not None:
            preload_library(driver_root)
        self._nvml: Any = nvml if nvml is not None else load_pynvml()
        lock = threading.Lock()
        calls = NvmlCalls(self._nvml, node_name)
        self.mig_manager = NvmlMigManager(self._nvml, node_name, lock, proc_root)
        """Dynamic MIG on this node's GPUs (shares the discovery lock)."""
        self._discovery = NvmlDiscovery(
            calls, lock=lock, mig_manager=self.mig_manager, sysfs_root=Path(sysfs_root)
        )
        self._events = NvmlHealthEvents(calls, lock=lock)
        self._recovery = NvmlRecoveryProbe(calls)
        self._processes = NvmlProcessSampler(calls, lock)
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as err:
            raise DiscoveryError(f"NVML did not initialise: {err}; {INIT_HINT}") from None
        self._closed = False

    def close(self) -> None:
        """Free the event set and shut NVML down; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._events.close()
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as err:
            log.warning("NVML shutdown failed: %s", err)

    def __enter__(self) -> NvmlBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def discover(self) -> NodeInventory:
        """Every GPU NVML enumerates, in NVML index order. Raises DiscoveryError."""
        return self._discovery.discover()

    def processes(self) -> tuple[GpuProcess, ...]:
        """The compute processes on the GPUs and MIG devices (:mod:`.processes`)."""
        return self._processes.processes()

    @property
    def unmonitored_gpus(self) -> tuple[str, ...]:
        """UUIDs of GPUs that support none of the health events (known after the first wait)."""
        return self._events.unmonitored_gpus

    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        """The next XID / ECC / GPU-lost event, or None after ``timeout_s``.

        Registers the GPUs on first use. Events of other types are skipped
        (returned as None, as a timeout would be); DiscoveryError for any
        other NVML failure.
        """
        return self._events.wait_health_event(timeout_s)

    def recovery_action(self, gpu_uuid: str) -> RecoveryAction | None:
        """The GPU's recovery action (NVML field 230); None where the driver lacks it."""
        return self._recovery.recovery_action(gpu_uuid)

    def validate(self, gpu_uuid: str) -> str | None:
        """None when NVML answers for the GPU and its memory and ECC state are sane."""
        return self._recovery.validate(gpu_uuid)
