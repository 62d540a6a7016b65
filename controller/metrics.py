"""Prometheus metrics of the controller, and the HTTP endpoint for metrics and probes.

============================================== ========= ===================================
metric                                         type      labels / meaning
============================================== ========= ===================================
``dra_driver_placements_total``                counter   ``policy``: pods whose claims were
                                                         placed and gate removed
``dra_driver_placement_latency_seconds``       histogram from the gate first seen to the gate
                                                         removed, per pod
``dra_driver_placement_conflicts_total``       counter   ``resource``: writes refused for a
                                                         stale version (resourceclaims,
                                                         pods); devices another writer
                                                         allocated meanwhile (devices)
``dra_driver_placement_failures_total``        counter   ``reason``: unsatisfiable,
                                                         invalid, api-error, not-leader,
                                                         unschedulable-after-placement
``dra_driver_placement_retries_total``         counter   placed pods released and placed
                                                         again after the scheduler failed them
``dra_driver_device_conflicts_total``          counter   a device of ours another claim holds
                                                         too, by ``kind`` (exclusive,
                                                         capacity, counters) and ``outcome``:
                                                         yielded (ours released and placed
                                                         again), kept (the other claim
                                                         yields), after-gate (found after
                                                         the gate was removed: an admin must
                                                         act)
``dra_driver_workqueue_depth``                 gauge     pods waiting in the work queue
``dra_driver_leader``                          gauge     1 while this replica is the leader
``dra_driver_events_total``                    counter   ``reason``: Events written
``dra_driver_watch_relists_total``             counter   ``resource``: relists after 410 Gone
============================================== ========= ===================================

Each :class:`ControllerMetrics` has its own registry, so tests (and several
controllers in one process) do not collide.

:class:`EndpointServer` serves ``/metrics`` (when given metrics), ``/healthz``
(liveness) and ``/readyz`` (readiness) on one address; the probes call the
functions they are given, so what "live" and "ready" mean is decided in
:mod:`controller.app`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from controller.settings import split_host_port

__all__ = ["ControllerMetrics", "EndpointServer"]

log = logging.getLogger(__name__)

#: From a few milliseconds (decided and written at once) to minutes (waiting for devices).
LATENCY_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


class ControllerMetrics:
    """The controller's metrics in a registry of their own (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.placements = Counter(
            "dra_driver_placements",
            "Pods whose claims the controller placed (gate removed), by policy.",
            ["policy"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dra_driver_placement_latency_seconds",
            "Seconds from a gated pod first seen to its gate removed.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.conflicts = Counter(
            "dra_driver_placement_conflicts",
            "Writes refused because the object changed meanwhile (409), by resource.",
            ["resource"],
            registry=self.registry,
        )
        self.failures = Counter(
            "dra_driver_placement_failures",
            "Placement attempts that did not place the pod, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.retries = Counter(
            "dra_driver_placement_retries",
            "Placed pods released and placed again after the scheduler could not bind them.",
            registry=self.registry,
        )
        self.device_conflicts = Counter(
            "dra_driver_device_conflicts",
            "Devices of a placed pod that another claim holds too, by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "dra_driver_workqueue_depth", "Pods waiting in the work queue.", registry=self.registry
        )
        self.leader = Gauge(
            "dra_driver_leader", "1 while this replica is the leader.", registry=self.registry
        )
        self.events = Counter(
            "dra_driver_events",
            "Kubernetes Events written, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.relists = Counter(
            "dra_driver_watch_relists",
            "Lists repeated because a watch expired (410 Gone), by resource.",
            ["resource"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class EndpointServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over HTTP (see the module docstring).

    A probe answers 200 ``ok`` when its function returns None, else 503 with the
    returned text (why it is not live or ready).
    """

    def __init__(
        self,
        address: str,
        *,
        metrics: ControllerMetrics | None = None,
        liveness: Callable[[], str | None] | None = None,
        readiness: Callable[[], str | None] | None = None,
    ) -> None:
        host, port = split_host_port(address)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the stdlib's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics" and server.metrics is not None:
                    self._answer(200, server.metrics.render(), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/livez"):
                    self._probe(server.liveness)
                elif path == "/readyz":
                    self._probe(server.readiness)
                else:
                    self._answer(404, b"not found\n", "text/plain")

            def _probe(self, check: Callable[[], str | None] | None) -> None:
                problem = check() if check is not None else None
                if problem is None:
                    self._answer(200, b"ok\n", "text/plain")
                else:
                    self._answer(503, (problem + "\n").encode(), "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args  # probes every few seconds would flood the log

        self.metrics = metrics
        self.liveness = liveness
        self.readiness = readiness
        self._server = ThreadingHTTPServer((host or "0.0.0.0", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="endpoints", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("serving endpoints", extra={"port": self.port})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
