"""A GPU tainted or recovered, told to people: Node Events and the health metrics.

:class:`NodeHealthNotices` is the monitor's
:class:`~kubelet_plugin.health.monitor.HealthNotices`: each taint raised is a Warning
Event ``GpuTainted`` on the Node (namespace ``default``, as the kubelet's) and a
``dra_driver_health_taint_delay_seconds`` sample; each recovery a Normal Event
``GpuRecovered`` and a ``dra_driver_health_recovery_seconds`` sample. Events go through
:class:`~agent_kit.events.EventRecorder` (rate-limited, never raising); the chart grants
events create/patch already.
"""

from __future__ import annotations

from typing import Final

from agent_kit.events import EventRecorder, ObjectRef
from agent_kit.kube import ClusterClient
from api.resource_v1 import DeviceTaint
from dra_driver.discovery.model import Gpu
from kubelet_plugin.health.recovery import Lifted
from kubelet_plugin.metrics import PluginMetrics

__all__ = ["COMPONENT", "NodeHealthNotices"]

#: The ``source.component`` of these Events.
COMPONENT: Final = "dra-driver-kubelet-plugin"


class NodeHealthNotices:
    """Events on Node ``node_name`` (UID ``node_uid``, None: unknown) through ``client``
    (None: metrics only), written from a thread of their own so that the health loop
    never waits on the API server; :meth:`stop` writes what waits and ends it."""

    def __init__(
        self,
        metrics: PluginMetrics,
        client: ClusterClient | None,
        node_name: str,
        node_uid: str | None,
    ) -> None:
        self._metrics = metrics
        self._events: EventRecorder | None = None
        if client is not None:
            self._events = EventRecorder(client, component=COMPONENT, instance=node_name)
            self._events.start()
        self._node = ObjectRef("Node", "v1", "default", node_name, node_uid or "")

    def stop(self) -> None:
        if self._events is not None:
            self._events.stop()

    def tainted(self, gpu: Gpu, taint: DeviceTaint, delay_s: float) -> None:
        self._metrics.observe_taint(taint.key, delay_s)
        if self._events is not None:
            value = f"={taint.value}" if taint.value else ""
            message = (
                f"{gpu.device_name} ({gpu.uuid}): device taint {taint.key}{value}:"
                f"{taint.effect}; see docs/operations.md, Health taints, for what to do"
            )
            self._events.emit(self._node, "Warning", "GpuTainted", message)

    def recovered(self, gpu: Gpu, lifted: Lifted) -> None:
        self._metrics.observe_recovery(lifted)
        if self._events is not None:
            how = (
                "NVML's recovery action reads NONE and the GPU validates"
                if lifted.method == "recovery-action"
                else "no health event for the recovery window"
            )
            if lifted.field == "not-supported":
                how += " (the driver reports no recovery action)"
            message = (
                f"{gpu.device_name} ({gpu.uuid}): device taints {', '.join(lifted.keys)} "
                f"removed after {lifted.held_s:.0f} s: {how}"
            )
            self._events.emit(self._node, "Normal", "GpuRecovered", message)
