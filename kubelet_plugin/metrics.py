"""Prometheus metrics of the kubelet plugin.

=========================================== ========= =====================================
metric                                      type      labels / meaning
=========================================== ========= =====================================
``dra_driver_requests_total``               counter   ``operation`` (prepare, unprepare),
                                                      ``result``: success (every claim
                                                      done), error (some claim failed),
                                                      exception (the call raised)
``dra_driver_request_duration_seconds``     histogram ``operation``; one kubelet call
``dra_driver_claims_total``                 counter   ``operation``, ``result`` (success,
                                                      error): per claim of every call
``dra_driver_prepared_claims``              gauge     claims prepared on this node now
``dra_driver_prepared_devices``             gauge     devices of those claims
``dra_driver_published_devices``            gauge     devices in this node's ResourceSlices
``dra_driver_tainted_devices``              gauge     published devices with a taint
``dra_driver_device_plugin_detected``       gauge     1 while a device plugin serves GPUs
                                                      on the node (none published then,
                                                      unless --device-plugin-coexistence
                                                      publish)
``dra_driver_health_events_total``          counter   ``kind`` (xid, ecc-double-bit, ...),
                                                      ``action`` (tainted, renewed,
                                                      ignored, unknown-gpu)
``dra_driver_device_taints``                gauge     ``key``, ``effect``: GPUs carrying
                                                      that taint now (read at scrape)
``dra_driver_health_taint_delay_seconds``   histogram ``key``: from the fault to the taint
                                                      (NVML events carry no time: from
                                                      reading the event)
``dra_driver_health_recovery_seconds``      histogram ``method`` (recovery-action,
                                                      quiet-window), ``field``
                                                      (supported, not-supported: the
                                                      driver lacks the recovery action
                                                      and the quiet window decided,
                                                      no-probe): from the taint to its
                                                      lifting
``dra_driver_health_stream_clients``        gauge     kubelet health streams open now
``dra_driver_health_auto_resets_total``     counter   ``outcome`` (reset, failed,
                                                      waiting-claims, waiting-processes):
                                                      what ``--auto-reset`` did, once per
                                                      change per GPU
=========================================== ========= =====================================

Counting happens in :class:`MeteredNodeDriver`, a decorator around any
:class:`~kubelet_plugin.node_driver.NodeDriver`, so the driver itself knows
nothing of metrics. Each :class:`PluginMetrics` has its own registry (no
process-global state), so tests and several plugins in one process do not
collide. :class:`agent_kit.metrics_server.EndpointServer` serves them on
``--metrics-address`` at ``/metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.resource_v1 import DeviceTaint
from dra_driver.discovery.model import HealthEventKind
from kubelet_plugin.health.monitor import TaintAction
from kubelet_plugin.health.recovery import Lifted
from kubelet_plugin.node_driver import ClaimRef, NodeDriver, PrepareResult

__all__ = ["MeteredNodeDriver", "PluginMetrics"]

Operation = Literal["prepare", "unprepare"]

#: Prepare takes milliseconds when all goes well and may take seconds when the
#: API server is slow; the kubelet gives up at 45 s.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
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
    20.0,
    45.0,
)


#: A taint comes within a second of its fault; recovery takes minutes to a reboot's hours.
TAINT_DELAY_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECOVERY_BUCKETS: Final = (10.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


class _TaintCollector(Collector):
    """``dra_driver_device_taints``: GPUs per taint key and effect, read at each scrape."""

    def __init__(self, taints: Callable[[], Mapping[str, Sequence[DeviceTaint]]]) -> None:
        self._taints = taints

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "dra_driver_device_taints",
            "GPUs of this node carrying a device taint, by key and effect.",
            labels=["key", "effect"],
        )
        counts: dict[tuple[str, str], int] = {}
        for taints in self._taints().values():
            for taint in taints:
                counts[taint.key, taint.effect] = counts.get((taint.key, taint.effect), 0) + 1
        for (key, effect), count in sorted(counts.items()):
            family.add_metric([key, effect], count)
        return [family]


class PluginMetrics:
    """The plugin's metrics in a registry of their own (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "dra_driver_requests",
            "NodePrepareResources / NodeUnprepareResources calls by result.",
            ["operation", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "dra_driver_request_duration_seconds",
            "Time to answer one NodePrepareResources / NodeUnprepareResources call.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.claims = Counter(
            "dra_driver_claims",
            "Claims prepared / unprepared, by per-claim result.",
            ["operation", "result"],
            registry=self.registry,
        )
        self.prepared_claims = Gauge(
            "dra_driver_prepared_claims",
            "Claims prepared on this node.",
            registry=self.registry,
        )
        self.prepared_devices = Gauge(
            "dra_driver_prepared_devices",
            "Devices of the claims prepared on this node.",
            registry=self.registry,
        )
        self.published_devices = Gauge(
            "dra_driver_published_devices",
            "Devices in this node's ResourceSlices.",
            registry=self.registry,
        )
        self.tainted_devices = Gauge(
            "dra_driver_tainted_devices",
            "Published devices carrying a taint.",
            registry=self.registry,
        )
        self.cleanup_pending = Gauge(
            "dra_driver_cleanup_pending_claims",
            "Failed prepares whose CDI spec could not be removed yet (retried every 30 s).",
            registry=self.registry,
        )
        self.device_plugin_detected = Gauge(
            "dra_driver_device_plugin_detected",
            "1 while a device plugin serves GPUs on this node (see --device-plugin-coexistence).",
            registry=self.registry,
        )
        self.health_events = Counter(
            "dra_driver_health_events",
            "GPU health events by kind and what they did.",
            ["kind", "action"],
            registry=self.registry,
        )
        self.auto_resets = Counter(
            "dra_driver_health_auto_resets",
            "What the automatic GPU reset (--auto-reset) did, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.taint_delay = Histogram(
            "dra_driver_health_taint_delay_seconds",
            "Time from a GPU fault to its device taint.",
            ["key"],
            buckets=TAINT_DELAY_BUCKETS,
            registry=self.registry,
        )
        self.recovery = Histogram(
            "dra_driver_health_recovery_seconds",
            "Time from a device taint to its lifting, by what lifted it.",
            ["method", "field"],
            buckets=RECOVERY_BUCKETS,
            registry=self.registry,
        )
        self.health_stream_clients = Gauge(
            "dra_driver_health_stream_clients",
            "Kubelet health streams (DRAResourceHealth.NodeWatchResources) open now.",
            registry=self.registry,
        )
        for operation in ("prepare", "unprepare"):
            # Present from the start (at zero), so rate() works from the first scrape.
            self.duration.labels(operation)
            for result in ("success", "error"):
                self.requests.labels(operation, result)
                self.claims.labels(operation, result)

    def track_prepared(self, prepared: Callable[[], Mapping[str, Sequence[object]]]) -> None:
        """Read the prepared-claims gauges from ``prepared`` at each scrape.

        ``prepared`` returns claim UID to that claim's prepared devices.
        """
        self.prepared_claims.set_function(lambda: float(len(prepared())))
        self.prepared_devices.set_function(
            lambda: float(sum(len(devices) for devices in prepared().values()))
        )

    def track_cleanup_pending(self, count: Callable[[], int]) -> None:
        """Read the cleanup-pending gauge from ``count`` at each scrape."""
        self.cleanup_pending.set_function(lambda: float(count()))

    def track_tainted(self, count: Callable[[], int]) -> None:
        """Read the tainted-devices gauge from ``count`` at each scrape."""
        self.tainted_devices.set_function(lambda: float(count()))

    def count_health_event(self, kind: HealthEventKind, action: TaintAction) -> None:
        self.health_events.labels(kind, action).inc()

    def count_auto_reset(self, outcome: str) -> None:
        self.auto_resets.labels(outcome).inc()

    def track_taints(self, taints: Callable[[], Mapping[str, Sequence[DeviceTaint]]]) -> None:
        """Read ``dra_driver_device_taints`` from ``taints`` (GPU name to taints) at scrape."""
        self.registry.register(_TaintCollector(taints))

    def track_health_clients(self, count: Callable[[], int]) -> None:
        """Read the health-stream-clients gauge from ``count`` at each scrape."""
        self.health_stream_clients.set_function(lambda: float(count()))

    def observe_taint(self, key: str, delay_s: float) -> None:
        self.taint_delay.labels(key).observe(delay_s)

    def observe_recovery(self, lifted: Lifted) -> None:
        self.recovery.labels(lifted.method, lifted.field).observe(lifted.held_s)

    def render(self) -> bytes:
        """The text exposition format, as the endpoint serves it."""
        return generate_latest(self.registry)


class MeteredNodeDriver:
    """A NodeDriver that counts and times every call of the driver it wraps.

    Behaviour is the wrapped driver's: same answers, same exceptions.
    """

    def __init__(self, inner: NodeDriver, metrics: PluginMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        started = time.perf_counter()
        try:
            results = self._inner.prepare(claims)
        except BaseException:
            self._record("prepare", "exception", started, [])
            raise
        self._record("prepare", None, started, [r.error for r in results.values()])
        return results

    def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str | None]:
        started = time.perf_counter()
        try:
            results = self._inner.unprepare(claims)
        except BaseException:
            self._record("unprepare", "exception", started, [])
            raise
        self._record("unprepare", None, started, list(results.values()))
        return results

    def _record(
        self,
        operation: Operation,
        outcome: str | None,
        started: float,
        errors: Sequence[str | None],
    ) -> None:
        metrics = self._metrics
        metrics.duration.labels(operation).observe(time.perf_counter() - started)
        failed = sum(1 for error in errors if error)
        if failed:
            metrics.claims.labels(operation, "error").inc(failed)
        if len(errors) > failed:
            metrics.claims.labels(operation, "success").inc(len(errors) - failed)
        if outcome is None:
            outcome = "error" if failed else "success"
        metrics.requests.labels(operation, outcome).inc()
