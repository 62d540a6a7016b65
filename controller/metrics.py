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
``dra_driver_free_gpus``                       gauge     ``node``, ``product``: whole GPUs
                                                         free (nothing of them held, no taint)
``dra_driver_free_mig_devices``                gauge     ``node``, ``profile``: MIG devices
                                                         that could still be allocated at once
``dra_driver_free_shared_memory_bytes``        gauge     ``node``, ``product``: memory of
                                                         shared GPUs no share consumed
``dra_driver_largest_share_memory_bytes``      gauge     ``node``: the most memory one more
                                                         share can get on one GPU
``dra_driver_node_fragmentation_ratio``        gauge     ``node``, ``class`` (gpu, mig,
                                                         share): stranded free capacity over
                                                         free capacity on the node
``dra_driver_fragmentation_ratio``             gauge     ``class``: the same, cluster-wide
``dra_driver_largest_gpu_request``             gauge     the most whole GPUs one claim can
                                                         still get (most free on one node)
``dra_driver_mig_profile_nodes``               gauge     ``profile``: nodes where one more
                                                         device of the profile fits
============================================== ========= ===================================

The fragmentation gauges (free units, largest requests, ratios: defined in
:mod:`dra_driver.fragmentation`) are computed on a timer (:data:`FRAGMENTATION_INTERVAL_S`), not
per watch event, and served from the last result at once: a scrape never sees half an update,
and a node that is gone loses its series at the next computation. Labels are bounded by the
nodes, GPU products and MIG profiles the driver publishes.

Each :class:`ControllerMetrics` has its own registry, so tests (and several
controllers in one process) do not collide.

They are served, with the probes, by :class:`agent_kit.metrics_server.EndpointServer`;
what "live" and "ready" mean is decided in :mod:`controller.app`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dra_driver.fragmentation import CLASSES, Fragmentation

__all__ = ["FRAGMENTATION_INTERVAL_S", "ControllerMetrics", "FragmentationCollector"]

#: Seconds between two computations of the fragmentation gauges.
FRAGMENTATION_INTERVAL_S: Final = 30.0

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


class FragmentationCollector(Collector):
    """The fragmentation gauges, from the last :class:`Fragmentation` handed to :meth:`update`."""

    def __init__(self) -> None:
        self._last = Fragmentation([])

    def update(self, fragmentation: Fragmentation) -> None:
        self._last = fragmentation  # one reference swap: a scrape sees one result whole

    def collect(self) -> Iterator[GaugeMetricFamily]:
        found = self._last
        gpus = GaugeMetricFamily(
            "dra_driver_free_gpus",
            "Whole GPUs free (nothing of them held, no taint), by node and product.",
            labels=["node", "product"],
        )
        mig = GaugeMetricFamily(
            "dra_driver_free_mig_devices",
            "MIG devices that could still be allocated at once, by node and profile.",
            labels=["node", "profile"],
        )
        shared = GaugeMetricFamily(
            "dra_driver_free_shared_memory_bytes",
            "Memory of shared GPUs that no share consumed, by node and product.",
            labels=["node", "product"],
        )
        largest_share = GaugeMetricFamily(
            "dra_driver_largest_share_memory_bytes",
            "The most memory one more share can get on one GPU of the node.",
            labels=["node"],
        )
        node_ratio = GaugeMetricFamily(
            "dra_driver_node_fragmentation_ratio",
            "Free capacity in partly used containers over free capacity, by node and class.",
            labels=["node", "class"],
        )
        for node in found.nodes:
            for product, count in sorted(node.gpus.items()):
                gpus.add_metric([node.node, product], count)
            for profile, count in sorted(node.mig.items()):
                mig.add_metric([node.node, profile], count)
            for product, free in sorted(node.share_memory.items()):
                shared.add_metric([node.node, product], free)
            if node.share_memory:
                largest_share.add_metric([node.node], node.largest_share)
            for kind in CLASSES:
                node_ratio.add_metric([node.node, kind], node.ratio(kind))
        ratio = GaugeMetricFamily(
            "dra_driver_fragmentation_ratio",
            "Free capacity in partly used containers over free capacity, cluster-wide, by class.",
            labels=["class"],
        )
        for kind in CLASSES:
            ratio.add_metric([kind], found.ratio(kind))
        largest = GaugeMetricFamily(
            "dra_driver_largest_gpu_request",
            "The most whole GPUs one claim can still get (the most free on one node).",
            value=found.largest_gpu_request,
        )
        fits = GaugeMetricFamily(
            "dra_driver_mig_profile_nodes",
            "Nodes where one more MIG device of the profile fits.",
            labels=["profile"],
        )
        for profile, nodes in found.mig_nodes().items():
            fits.add_metric([profile], nodes)
        yield from (gpus, mig, shared, largest_share, node_ratio, ratio, largest, fits)


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
        self.fragmentation = FragmentationCollector()
        self.registry.register(self.fragmentation)

    def render(self) -> bytes:
        return generate_latest(self.registry)
