"""GPU health events through NVML: XID critical errors, ECC errors, a lost GPU.

:class:`NvmlHealthEvents` registers every GPU on one NVML event set on first
use and turns what the set delivers into
:class:`~dra_driver.discovery.model.HealthEvent` values.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final

from api.errors import DiscoveryError
from dra_driver.discovery.model import HealthEvent
from kubelet_plugin.nvml.library import ABSENT, GPU_IS_LOST, TIMEOUT, NvmlCalls, decode_text

__all__ = ["NvmlHealthEvents"]

log = logging.getLogger(__name__)

_EVENT_SINGLE_BIT_ECC: Final = 0x1  # nvmlEventTypeSingleBitEccError
_EVENT_DOUBLE_BIT_ECC: Final = 0x2  # nvmlEventTypeDoubleBitEccError
_EVENT_XID: Final = 0x8  # nvmlEventTypeXidCriticalError
_HEALTH_EVENTS: Final = _EVENT_XID | _EVENT_DOUBLE_BIT_ECC | _EVENT_SINGLE_BIT_ECC


class NvmlHealthEvents:
    """The NVML event set of this node's GPUs; :meth:`close` frees it.

    Registration takes ``lock`` (shared with discovery); waiting does not, so
    a wait may block while a discovery runs (NVML is thread-safe).
    """

    def __init__(self, calls: NvmlCalls, *, lock: threading.Lock) -> None:
        self._calls = calls
        self._nvml: Any = calls.nvml
        self.node_name = calls.node_name
        self._lock = lock
        self._event_set: Any = None
        self._unmonitored: tuple[str, ...] = ()

    def close(self) -> None:
        """Free the event set, if one was made; failures are logged."""
        if self._event_set is not None:
            try:
                self._nvml.nvmlEventSetFree(self._event_set)
            except self._nvml.NVMLError as err:
                log.warning("freeing the NVML event set failed: %s", err)
            self._event_set = None

    @property
    def unmonitored_gpus(self) -> tuple[str, ...]:
        """UUIDs of GPUs that support none of the health events (known after the first wait)."""
        return self._unmonitored

    def _register_events(self) -> Any:
        nvml = self._nvml
        with self._lock:
            if self._event_set is not None:
                return self._event_set
            event_set = self._calls.call("nvmlEventSetCreate", nvml.nvmlEventSetCreate)
            unmonitored: list[str] = []
            count = self._calls.call("nvmlDeviceGetCount", nvml.nvmlDeviceGetCount)
            for index in range(count):
                handle = self._calls.call(
                    f"GPU {index}: nvmlDeviceGetHandleByIndex",
                    nvml.nvmlDeviceGetHandleByIndex,
                    index,
                )
                uuid = decode_text(
                    self._calls.call(
                        f"GPU {index}: nvmlDeviceGetUUID", nvml.nvmlDeviceGetUUID, handle
                    )
                )
                supported = self._calls.optional(
                    f"GPU {index} ({uuid}): nvmlDeviceGetSupportedEventTypes",
                    nvml.nvmlDeviceGetSupportedEventTypes,
                    handle,
                )
                mask = _HEALTH_EVENTS & int(supported or 0)
                if not mask:
                    unmonitored.append(uuid)
                    continue
                try:
                    nvml.nvmlDeviceRegisterEvents(handle, mask, event_set)
                except nvml.NVMLError as err:
                    if getattr(err, "value", None) not in ABSENT:
                        raise DiscoveryError(
                            f"node {self.node_name}: GPU {index} ({uuid}): "
                            f"nvmlDeviceRegisterEvents: {err}"
                        ) from None
                    unmonitored.append(uuid)
            if unmonitored:
                log.warning("node %s: no health events from GPUs %s", self.node_name, unmonitored)
            self._unmonitored = tuple(unmonitored)
            self._event_set = event_set
            return event_set

    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        """The next XID / ECC / GPU-lost event, or None after ``timeout_s``.

        Registers the GPUs on first use. Events of other types are skipped
        (returned as None, as a timeout would be); DiscoveryError for any
        other NVML failure.
        """
        nvml = self._nvml
        event_set = self._register_events()
        try:
            data = nvml.nvmlEventSetWait_v2(event_set, max(0, int(timeout_s * 1000)))
        except nvml.NVMLError as err:
            code = getattr(err, "value", None)
            if code == TIMEOUT:
                return None
            if code == GPU_IS_LOST:
                return HealthEvent(kind="gpu-lost", gpu_uuid=None, occurred_at=time.time())
            raise DiscoveryError(f"node {self.node_name}: nvmlEventSetWait: {err}") from None
        seen = time.time()  # NVML's event data carries no time: when it was read
        try:
            uuid: str | None = decode_text(nvml.nvmlDeviceGetUUID(data.device))
        except nvml.NVMLError as err:
            if getattr(err, "value", None) == GPU_IS_LOST:
                return HealthEvent(kind="gpu-lost", gpu_uuid=None, occurred_at=seen)
            uuid = None
        event_type = int(data.eventType)
        if event_type & _EVENT_XID:
            return HealthEvent("xid", uuid, int(data.eventData), occurred_at=seen)
        if event_type & _EVENT_DOUBLE_BIT_ECC:
            return HealthEvent("ecc-double-bit", uuid, occurred_at=seen)
        if event_type & _EVENT_SINGLE_BIT_ECC:
            return HealthEvent("ecc-single-bit", uuid, occurred_at=seen)
        return None
