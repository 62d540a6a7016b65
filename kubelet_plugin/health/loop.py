"""The health monitor's loop: events to taints, expiry, admins' clears, saves and
republishing, on the plugin's health thread until it is told to stop."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from api.errors import DraDriverError
from dra_driver.discovery.model import HealthEvent

if TYPE_CHECKING:
    from kubelet_plugin.health.monitor import HealthMonitor

__all__ = ["run_health_loop"]

log = logging.getLogger(__name__)


def run_health_loop(
    monitor: HealthMonitor,
    stop: threading.Event,
    *,
    poll_s: float = 1.0,
    refresh_s: float = 10.0,
    retry_s: float = 5.0,
) -> None:
    """Wait for events, taint, expire, republish, until ``stop`` is set.

    Never raises for source or publishing errors (logged, retried after
    ``retry_s``); returns within about ``poll_s`` of ``stop``.
    """
    monitor.broadcast()
    monitor.start_beside(stop)
    publish_due: float | None = None  # monotonic time of the next publish attempt
    next_refresh = time.monotonic() + refresh_s
    while not stop.is_set():
        event: HealthEvent | None = None
        try:
            event = monitor.next_event(poll_s)
        except DraDriverError as err:
            log.warning("reading GPU health events failed: %s; retrying", err)
            stop.wait(retry_s)
        changed = monitor.handle(event) if event is not None else False
        if event is not None and event.kind == "gpu-lost" and not changed:
            # NVML answers every wait on a lost GPU at once: do not spin.
            stop.wait(poll_s)
        changed = monitor.expire() or changed
        changed = monitor.apply_clears() or changed
        if monitor.save_due:
            monitor.persist()
        now = time.monotonic()
        if changed:
            publish_due = now
            monitor.broadcast()
            next_refresh = now + refresh_s
        if publish_due is not None and now >= publish_due:
            publish_due = None if monitor.publish_taints() else now + retry_s
        if now >= next_refresh:
            monitor.broadcast()
            next_refresh = now + refresh_s
