"""The placement worker: takes pod keys from the work queue and hands each to the reconciler,
then tells the queue what to do with the key next."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from controller.placement.reconciler import Placer, Result
from controller.workqueue import WorkQueue

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def run_worker(
    placer: Placer,
    queue: WorkQueue,
    stop: threading.Event,
    *,
    on_idle: Callable[[], Any] | None = None,
) -> None:
    """Take keys from ``queue`` and reconcile them until ``stop`` is set.

    An unexpected exception is logged and the key retried after its backoff;
    it never ends the worker.
    """
    while not stop.is_set():
        key = queue.get(timeout_s=0.5)
        if key is None:
            if on_idle is not None:
                on_idle()
            continue
        try:
            result = placer.reconcile(key)
        except Exception:
            log.exception("placement failed unexpectedly", extra={"pod": key})
            result = Result(backoff=True)
        try:
            if result.backoff:
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
                if result.requeue_after is not None:
                    queue.add_after(key, result.requeue_after)
        finally:
            queue.done(key)
        placer.metrics.queue_depth.set(len(queue))
