"""The per-claim usage metrics, read at each scrape.

=================================================== ===== ==================================
metric                                              type  labels / meaning
=================================================== ===== ==================================
``dra_driver_gpu_memory_used_bytes``                gauge ``namespace``, ``pod``,
                                                          ``container``, ``claim``,
                                                          ``device``: device memory the
                                                          container's processes use on the
                                                          device its claim holds
``dra_driver_gpu_utilisation``                      gauge same labels: share of the
                                                          device's SM time they used in
                                                          NVML's latest sample, 0 to 1 (not
                                                          on MIG devices: NVML does not
                                                          sample them per process)
``dra_driver_gpu_unattributed_memory_used_bytes``   gauge ``device``, ``reason``: memory of
                                                          processes no claim could be named
                                                          for (:mod:`.attribution`)
``dra_driver_gpu_unattributed_utilisation``         gauge ``device``, ``reason``
=================================================== ===== ==================================

Every scrape lists the processes again and attributes them against the claims prepared at
that moment, so the series of a claim that is unprepared, or of a container whose
processes ended, are gone from the next scrape: the number of series is bounded by the
node's processes on GPUs, never by history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.checkpoint import ClaimEntry
from api.errors import DraDriverError
from dra_driver.discovery.processes import ProcessSampler
from kubelet_plugin.usage.attribution import CgroupReader, attribute, holders_by_device
from kubelet_plugin.usage.pods import KubernetesPodDirectory, PodDirectory

__all__ = ["LABELS", "UsageCollector", "usage_families"]

log = logging.getLogger(__name__)

LABELS: Final = ("namespace", "pod", "container", "claim", "device")


class UsageCollector(Collector):
    """Collects the per-claim usage metrics (module docstring) at each scrape.

    A scrape never fails because of them: when NVML or the API server cannot be read the
    families come out empty (or partly unattributed) and a warning is logged.
    """

    def __init__(
        self,
        sampler: ProcessSampler,
        prepared: Callable[[], Mapping[str, ClaimEntry]],
        cgroups: CgroupReader,
        pods: PodDirectory,
        *,
        device_names: Mapping[str, str] | None = None,
    ) -> None:
        self._sampler = sampler
        self._prepared = prepared
        self._cgroups = cgroups
        self._pods = pods
        self._device_names = dict(device_names or {})

    def describe(self) -> list[GaugeMetricFamily]:
        """The families' names, without reading NVML (what the registry asks at register)."""
        return list(usage_families())

    def collect(self) -> list[GaugeMetricFamily]:
        memory, utilisation, lost_memory, lost_utilisation = families = usage_families()
        prepared = self._prepared()
        if isinstance(self._pods, KubernetesPodDirectory):
            self._pods.retain({(e.namespace, e.name) for e in prepared.values()})
        try:
            processes = self._sampler.processes()
        except DraDriverError as err:
            log.warning("GPU usage not sampled this scrape: %s", err)
            return list(families)
        sample = attribute(
            processes,
            holders_by_device(prepared),
            self._cgroups,
            self._pods,
            device_names=self._device_names,
        )
        for key, usage in sorted(sample.attributed.items()):
            labels = [key.namespace, key.pod, key.container, key.claim, key.device]
            if usage.memory_bytes is not None:
                memory.add_metric(labels, usage.memory_bytes)
            if usage.utilisation is not None:
                utilisation.add_metric(labels, usage.utilisation)
        for (device, reason), usage in sorted(sample.unattributed.items()):
            if usage.memory_bytes is not None:
                lost_memory.add_metric([device, reason], usage.memory_bytes)
            if usage.utilisation is not None:
                lost_utilisation.add_metric([device, reason], usage.utilisation)
        return list(families)


def usage_families() -> tuple[GaugeMetricFamily, ...]:
    """The four families, empty: their names and help, for whoever lists what is exported."""
    return (
        GaugeMetricFamily(
            "dra_driver_gpu_memory_used_bytes",
            "Device memory used by a container's processes on a device its claim holds.",
            labels=LABELS,
        ),
        GaugeMetricFamily(
            "dra_driver_gpu_utilisation",
            "Share of the device's SM time a container's processes used (0 to 1), "
            "NVML's latest per-process sample; not on MIG devices.",
            labels=LABELS,
        ),
        GaugeMetricFamily(
            "dra_driver_gpu_unattributed_memory_used_bytes",
            "Device memory of processes no claim could be named for, by reason.",
            labels=["device", "reason"],
        ),
        GaugeMetricFamily(
            "dra_driver_gpu_unattributed_utilisation",
            "SM time share of processes no claim could be named for, by reason.",
            labels=["device", "reason"],
        ),
    )
