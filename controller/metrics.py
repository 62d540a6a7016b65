"""Prometheus metrics of the controller.

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
``dra_driver_admission_reviews_total``         counter   ``webhook``, ``outcome`` (allowed,
                                                         denied, error): admission reviews
                                                         answered (``--webhook-address``)
============================================== ========= ===================================

Each :class:`ControllerMetrics` has its own registry, so tests (and several
controllers in one process) do not collide.

They are served, with the probes, by :class:`agent_kit.metrics_server.EndpointServer`;
what "live" and "ready" mean is decided in :mod:`controller.app`.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ControllerMetrics"]

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

        self.admission_reviews = Counter(
            "dra_driver_admission_reviews",
            "Admission reviews answered by the webhook, by webhook path and outcome.",
            ["webhook", "outcome"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
