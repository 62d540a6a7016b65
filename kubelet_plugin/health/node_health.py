"""The node's health monitor put together from the settings, with its taints restored.

:func:`start_monitor` is the one place that decides where the taints live
(``<plugin dir>/taints.json``), where clear requests wait (``<plugin
dir>/taint-clears/``) and what the monitor starts from, so that
:mod:`kubelet_plugin.app` only orders the pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from api.resource_v1 import DeviceTaint
from api.taint_state import TaintState
from dra_driver.discovery.model import NodeInventory, RecoveryProbe
from dra_driver.slices import build_slices
from kubelet_plugin.health.auto_reset import AutoResetParts, auto_reset_for
from kubelet_plugin.health.monitor import HealthEventSource, HealthMonitor, HealthNotices
from kubelet_plugin.health.service import HealthBroadcaster
from kubelet_plugin.health.taint_store import TAINT_FILE_NAME, TaintStore, load_taints
from kubelet_plugin.metrics import PluginMetrics
from kubelet_plugin.settings import Settings

__all__ = ["AutoResetParts", "published_device_names", "start_monitor"]


def published_device_names(settings: Settings, inventory: NodeInventory) -> list[str]:
    """Names of every device the node's slices publish, in publishing order."""
    slices = build_slices(
        inventory,
        driver_name=settings.driver_name,
        device_order=settings.device_order,
        partitionable=settings.partitionable,
        shared_gpus=settings.shared_gpus,
    )
    return [device.name for s in slices for device in s.spec.devices or []]


def start_monitor(
    settings: Settings,
    inventory: NodeInventory,
    events: HealthEventSource,
    *,
    boot_id: str,
    on_taints: Callable[[Mapping[str, Sequence[DeviceTaint]]], object],
    broadcaster: HealthBroadcaster,
    metrics: PluginMetrics,
    owns_state: Callable[[], bool] = lambda: True,
    probe: RecoveryProbe | None = None,
    notices: HealthNotices | None = None,
    auto_reset: AutoResetParts | None = None,
) -> HealthMonitor:
    """A monitor holding the taints saved before (after the reboot rules), the clear
    requests waiting applied, and the result saved; nothing published yet.

    ``owns_state``: whether this instance publishes (holds the publisher lock
    during a rolling update); one that does not neither saves nor applies clears
    until it calls :meth:`HealthMonitor.take_over`. ``probe`` reads NVML's recovery
    action (:class:`~kubelet_plugin.health.recovery.RecoveryGate`); ``notices`` hears of
    each GPU tainted or recovered (Node Events, metrics). ``metrics`` counts the events and
    reads the taints and the health stream's clients at each scrape. ``auto_reset``: what
    ``--auto-reset`` needs (:func:`~kubelet_plugin.health.auto_reset.auto_reset_for`); its
    loop runs beside the monitor's.

    Never raises for the taint file: an unreadable one is moved aside and every
    GPU starts tainted (:func:`~kubelet_plugin.health.taint_store.load_taints`).
    A failed save is logged and retried by the monitor's loop.
    """
    store = TaintStore(settings.plugin_dir / TAINT_FILE_NAME)
    gpus = {gpu.device_name: gpu.uuid for gpu in inventory}

    def load() -> TaintState:
        return load_taints(store, boot_id=boot_id, gpus=gpus, domain=settings.driver_name)

    reset = None
    if auto_reset is not None:
        reset = auto_reset_for(settings, inventory, probe, auto_reset, metrics.count_auto_reset)
    monitor = HealthMonitor(
        driver_name=settings.driver_name,
        inventory=inventory,
        device_names=published_device_names(settings, inventory),
        events=events,
        effects=settings.health_policy,
        ignored_xids=settings.ignored_xids,
        recovery=timedelta(seconds=settings.health_recovery_seconds),
        on_taints=on_taints,
        broadcaster=broadcaster,
        on_event=metrics.count_health_event,
        state=load(),
        save=store.save,
        clears_dir=settings.plugin_dir,
        owns_state=owns_state,
        reload=load,
        probe=probe,
        notices=notices,
        beside=None if reset is None else reset.run,
    )
    metrics.track_tainted(monitor.tainted_device_count)
    metrics.track_taints(monitor.taints)
    metrics.track_health_clients(lambda: broadcaster.subscriber_count)
    monitor.apply_clears()
    monitor.persist()  # the new boot ID, and what the rules dropped or the clears removed
    return monitor
