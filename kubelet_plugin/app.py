"""``dra-driver kubelet-plugin``: the node agent put together and run until a signal.

:func:`run` starts, in order:

1. GPU discovery with the chosen backend (the mock backend also creates fake
   device nodes under ``--dev-root`` and takes injected faults, see
   :class:`~kubelet_plugin.health.faults.FaultSpool`);
2. the API client (``--kubeconfig`` or the in-cluster service account) and
   the Node's UID, so the node's ResourceSlices are owned by the Node;
3. the driver, whose start-up recovery repairs what a crash or reboot left
   behind (checkpoint, CDI specs);
4. the metrics endpoint; the health monitor with the taints saved before
   (:mod:`kubelet_plugin.health.node_health`), so the first publish and health
   snapshot carry them; the gRPC servers: the kubelet may call at once;
5. the claims' ``status.devices`` writer (:mod:`kubelet_plugin.claim_status`), the
   device-plugin guard (a device plugin serving the node's GPUs makes the
   pool publish no device, :mod:`kubelet_plugin.device_plugin_guard`), the
   publisher thread (publishes the node's slices, watches them, repairs
   deletions) and the health thread (events to taints, device health stream).

SIGTERM or SIGINT stops it in the reverse order: the registration socket goes
first (the kubelet deregisters the plugin), calls in progress finish, the
threads are joined, every socket file is removed; the exit status is 0. A
start-up failure is logged as one line saying what failed and how to fix it,
and the exit status is 1 (2 for invalid flags). A thread that dies of an
unexpected error stops the plugin with status 1, so the kubelet restarts it
instead of leaving a half-working agent.

With ``--pod-uid`` (rolling updates with max surge) the instance names its
sockets after its pod, serialises prepares with the other instance of the node
through ``<plugin dir>/serialize.lock`` and publishes slices only once it holds
``<plugin dir>/publisher.lock``, which the instance it replaces lets go of when
it stops (:mod:`kubelet_plugin.node_lock`).

Logs go to stderr as text or JSON lines (``--log-format``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from agent_kit.events import EventRecorder
from agent_kit.kube import (
    ApiError,
    KubernetesClient,
)
from agent_kit.logs import configure_logging
from agent_kit.metrics_server import EndpointServer
from api.errors import DraDriverError, ExitCode, InvalidInputError
from api.resource_v1 import DeviceTaint
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import (
    DiscoveryBackend,
    MigManager,
    NodeInventory,
    RecoveryProbe,
)
from kubelet_plugin.cdi_writer import CdiWriter, scan_host_files
from kubelet_plugin.checkpoint_store import CheckpointStore, read_boot_id
from kubelet_plugin.claim_events import ClaimEvents
from kubelet_plugin.claim_source import KubernetesClaimSource
from kubelet_plugin.claim_status import ClaimStatusReporter, ClaimStatusWriter
from kubelet_plugin.device_plugin_guard import COMPONENT as GUARD_COMPONENT
from kubelet_plugin.device_plugin_guard import DevicePluginGuard
from kubelet_plugin.devnodes import DevNodeMigManager, create_device_nodes
from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.health.faults import FaultSpool, mock_boot_id
from kubelet_plugin.health.loop import run_health_loop
from kubelet_plugin.health.monitor import HealthEventSource, HealthMonitor
from kubelet_plugin.health.node_health import AutoResetParts, published_device_names, start_monitor
from kubelet_plugin.health.notices import NodeHealthNotices
from kubelet_plugin.health.service import HealthBroadcaster
from kubelet_plugin.metrics import MeteredNodeDriver, PluginMetrics
from kubelet_plugin.mps.users import KubernetesPodReader
from kubelet_plugin.node_lock import NodeFileLock
from kubelet_plugin.publisher import SlicePublisher
from kubelet_plugin.server import PluginServer
from kubelet_plugin.settings import Settings, build_parser, settings_from_args
from kubelet_plugin.sharing_tools import MpsRestartEvents, sharing_enforcers
from kubelet_plugin.slice_client import SliceClient
from kubelet_plugin.startup import kube_api_client, open_backend, read_node_uid
from kubelet_plugin.usage import ProcessSampler, usage_collector

__all__ = ["NodeAgent", "main", "run", "run_command"]

log = logging.getLogger(__name__)


#: How long a thread gets to finish once asked to stop before it is reported.
THREAD_JOIN_TIMEOUT_S: Final = 10.0

#: Bound of each API call (a watch: on top of its own timeout). A claim read in a
#: prepare must leave the kubelet's 45 s deadline room for a retry.
API_TIMEOUT_S: Final = 10.0


@dataclass
class NodeAgent:
    """Everything :func:`run` starts, so that :meth:`stop` can undo what started.

    ``api_client`` overrides the one built from the settings (tests).
    ``on_crash`` is called when a background thread dies of an unexpected error.
    """

    settings: Settings
    api_client: Any = None
    on_crash: Callable[[], None] = lambda: None
    backend: DiscoveryBackend | None = None
    inventory: NodeInventory | None = None
    driver: GpuDriver | None = None
    metrics: PluginMetrics = field(default_factory=PluginMetrics)
    metrics_server: EndpointServer | None = None
    server: PluginServer | None = None
    publisher: SlicePublisher | None = None
    status_writer: ClaimStatusWriter | None = None
    claim_events: ClaimEvents | None = None
    monitor: HealthMonitor | None = None
    health_notices: NodeHealthNotices | None = None
    mps_events: MpsRestartEvents | None = None
    serialize_lock: NodeFileLock | None = None
    publisher_lock: NodeFileLock | None = None
    crashed: bool = False
    _kube: KubernetesClient | None = None
    _stop_threads: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _owns_api_client: bool = False

    def start(self) -> None:
        """Start every piece (module docstring order); raises on the first failure,
        leaving :meth:`stop` to undo what started."""
        settings = self.settings
        backend = self.backend = open_backend(settings)
        inventory = self.inventory = backend.discover()
        events: HealthEventSource = backend
        mig_manager: MigManager | None = None
        probe: RecoveryProbe | None = None
        boot_id = read_boot_id()
        if isinstance(backend, MockBackend):
            create_device_nodes(settings.dev_root, inventory)
            mig_manager = DevNodeMigManager(backend.mig_manager, settings.dev_root)
            spool = FaultSpool(backend, settings.mock_faults_dir)
            spool.ensure_directory()
            events, probe = spool, backend.recovery
            boot_id = mock_boot_id(settings.mock_faults_dir) or boot_id  # a played reboot
        else:
            from kubelet_plugin.nvml import NvmlBackend

            if isinstance(backend, NvmlBackend):
                mig_manager, probe = backend.mig_manager, backend
        log.info(
            "node %s: %d GPU(s) found by the %s backend",
            settings.node_name,
            len(inventory.gpus),
            type(backend).__name__,
        )
        host = scan_host_files(
            settings.dev_root,
            settings.driver_root,
            _text(settings.hook_path),
            host_driver_root=settings.host_driver_root,
        )
        host = dataclasses.replace(host, metadata_root=str(settings.metadata_dir))

        if self.api_client is None:
            self.api_client = kube_api_client(settings)
            self._owns_api_client = True
        # One client for claims, the Node and the slices. Its timeout bounds a claim read
        # well within the kubelet's 45 s; the publisher's watch adds its own on top.
        kube = self._kube = KubernetesClient(self.api_client, timeout_s=API_TIMEOUT_S)
        node_uid = read_node_uid(kube, settings.node_name)

        if settings.pod_uid is not None:
            # A rolling update may run this instance beside the one it replaces.
            self.serialize_lock = NodeFileLock(settings.serialize_lock)
            self.publisher_lock = NodeFileLock(settings.publisher_lock)
            log.info(
                "plugin instance %s: sockets named after it, calls serialised through %s",
                settings.pod_uid,
                settings.serialize_lock,
            )
        self.mps_events = mps_events = MpsRestartEvents(kube, settings.node_name, node_uid)
        host, enforcers = sharing_enforcers(
            host,
            driver_root=settings.driver_root,
            mps_root=settings.mps_dir,
            real_gpus=not isinstance(backend, MockBackend),
            registry=self.metrics.registry,
            on_restart=mps_events.restarted,
            pods=KubernetesPodReader(kube),
        )
        driver = self.driver = GpuDriver(
            driver_name=settings.driver_name,
            inventory=inventory,
            claim_source=KubernetesClaimSource(kube),
            checkpoints=CheckpointStore(settings.checkpoint_file),
            cdi=CdiWriter(settings.cdi_root, settings.driver_name),
            host=host,
            boot_id=boot_id,
            mig_manager=mig_manager,
            node_lock=self.serialize_lock,
            enforcers=enforcers,
        )
        driver.start()

        metrics = self.metrics
        metrics.track_prepared(lambda: _prepared_devices(driver))
        metrics.track_cleanup_pending(lambda: len(driver.cleanup_pending()))
        if isinstance(backend, ProcessSampler):  # per-claim usage, read at each scrape
            metrics.registry.register(usage_collector(backend, driver.prepared, kube, inventory))
        device_names = published_device_names(settings, inventory)
        metrics.published_devices.set(len(device_names))
        if settings.metrics_address is not None:
            self.metrics_server = EndpointServer(settings.metrics_address, metrics=metrics)
            self.metrics_server.start()

        broadcaster = HealthBroadcaster()
        publisher = self.publisher = SlicePublisher(
            SliceClient(kube),
            node_name=settings.node_name,
            driver_name=settings.driver_name,
            device_order=settings.device_order,
            partitionable=settings.partitionable,
            shared_gpus=settings.shared_gpus,
            node_uid=node_uid,
        )
        publisher_lock = self.publisher_lock
        # The claims' status.devices (KEP-4817), written after each prepare and health change.
        status_writer = self.status_writer = ClaimStatusWriter(kube, settings.driver_name)
        status_writer.start()
        # Events on the claims: a failed prepare, a device they hold tainted or recovered.
        claim_events = self.claim_events = ClaimEvents(kube, settings.node_name)
        claim_events.start()
        reporter = ClaimStatusReporter(
            driver,
            status_writer,
            prepared=driver.prepared,
            inventory=inventory,
            events=claim_events,
        )

        def publish_taints(taints: Mapping[str, Sequence[DeviceTaint]]) -> None:
            reporter.health_changed(taints)
            if publisher_lock is None or publisher_lock.is_held:
                publisher.publish(inventory, taints)
            else:
                # The instance being replaced still publishes; ours starts with these.
                publisher.set_inventory(inventory, taints)

        notices = self.health_notices = NodeHealthNotices(
            metrics, kube, settings.node_name, node_uid
        )
        monitor = self.monitor = start_monitor(
            settings,
            inventory,
            events,
            boot_id=boot_id,
            on_taints=publish_taints,
            broadcaster=broadcaster,
            metrics=metrics,
            owns_state=lambda: publisher_lock is None or publisher_lock.is_held,
            probe=probe,
            notices=notices,
            auto_reset=AutoResetParts(backend, host, driver.prepared),
        )
        # Nothing is published or streamed before it carries the taints restored.
        publisher.set_inventory(inventory, monitor.taints())
        reporter.health_changed(monitor.taints())
        monitor.broadcast()

        self.server = PluginServer(
            settings.driver_name,
            MeteredNodeDriver(reporter, metrics),
            registry_dir=settings.registry_dir,
            plugins_dir=settings.plugins_dir,
            health_source=broadcaster,
            liveness_address=settings.liveness_address,
            pod_uid=settings.pod_uid,
        )
        self.server.start()

        def publish() -> None:
            if publisher_lock is not None:
                if not publisher_lock.acquire_when_free(
                    self._stop_threads, what="publishing the node's ResourceSlices"
                ):
                    return
                monitor.take_over()  # the taints the instance replaced saved last
                publisher.set_inventory(inventory, monitor.taints())
            publisher.run(self._stop_threads)

        self._guard_device_plugins(kube, publisher)
        self._spawn("slice-publisher", publish)
        self._spawn("health-monitor", lambda: run_health_loop(monitor, self._stop_threads))

    def _guard_device_plugins(self, kube: KubernetesClient, publisher: SlicePublisher) -> None:
        """Look for a device plugin serving this node's GPUs now (before the first publish)
        and every --device-plugin-check-seconds (kubelet_plugin.device_plugin_guard)."""
        settings, metrics, lock = self.settings, self.metrics, self.publisher_lock
        refuse = settings.device_plugin_coexistence == "refuse"

        def on_change(found: str | None) -> None:
            metrics.device_plugin_detected.set(0 if found is None else 1)
            if not refuse or publisher.withheld == (found is not None):
                return
            publisher.withhold(found is not None)
            if publisher.generation == 0 or not (lock is None or lock.is_held):
                return  # the first publish, or the instance holding the lock, sees it
            try:
                publisher.sync()
            except (ApiError, DraDriverError) as err:
                log.warning("republishing the node's ResourceSlices failed: %s", err)

        guard = DevicePluginGuard(
            kube,
            node_name=settings.node_name,
            resources=settings.device_plugin_resources,
            sockets_dir=settings.device_plugins_dir,
            on_change=on_change,
            refuse=refuse,
            events=EventRecorder(kube, component=GUARD_COMPONENT, instance=settings.node_name),
        )
        metrics.device_plugin_detected.set(0)
        guard.update()
        self._spawn(
            "device-plugin-guard",
            lambda: guard.run(self._stop_threads, settings.device_plugin_check_seconds),
        )

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except BaseException:
                if self._stop_threads.is_set():
                    # Cutting the watch at shutdown may surface as any error.
                    log.debug("%s ended with an error while stopping", name, exc_info=True)
                    return
                log.exception("%s thread died; stopping the plugin", name)
                self.crashed = True
                self.on_crash()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Stop what started, in reverse order; idempotent, never raises."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.server is not None:
            steps.append(("gRPC servers", self.server.stop))
        steps.append(("background threads", self._join_threads))
        if self.status_writer is not None:
            steps.append(("claim status writer", self.status_writer.stop))
        if self.health_notices is not None:
            steps.append(("health Events", self.health_notices.stop))
        if self.claim_events is not None:
            steps.append(("claim Events", self.claim_events.stop))
        if self.driver is not None:
            steps.append(("driver", self.driver.close))
        if self.mps_events is not None:
            steps.append(("MPS Events", self.mps_events.stop))
        if self.metrics_server is not None:
            steps.append(("metrics endpoint", self.metrics_server.stop))
        close = getattr(self.backend, "close", None)
        if callable(close):
            steps.append(("GPU backend", close))
        if self._owns_api_client and self.api_client is not None:
            steps.append(("API client", self.api_client.close))
        for lock in (self.publisher_lock, self.serialize_lock):
            if lock is not None:
                steps.append((f"lock {lock.path}", lock.close))
        for what, step in steps:
            try:
                step()
            except Exception:
                log.exception("stopping the %s failed", what)

    def _join_threads(self) -> None:
        self._stop_threads.set()
        if self._kube is not None:
            # The publisher's watch would block for minutes: cut it.
            self._kube.interrupt_watches()
        for thread in self._threads:
            thread.join(THREAD_JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.error("thread %s did not stop within %g s", thread.name, THREAD_JOIN_TIMEOUT_S)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _prepared_devices(driver: GpuDriver) -> dict[str, Sequence[object]]:
    return {
        uid: entry.devices
        for uid, entry in driver.prepared().items()
        if entry.state == "PrepareCompleted"
    }


# --- Running ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` while inside; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _describe(err: BaseException) -> str:
    if isinstance(err, DraDriverError):
        return str(err)
    if isinstance(err, OSError) and err.filename:
        return f"{err.strerror or err} ({err.filename}); check the path and the permissions"
    return f"{type(err).__name__}: {err}"


def run(settings: Settings, *, stop: threading.Event | None = None, api_client: Any = None) -> int:
    """Run the node agent until ``stop`` is set (or SIGTERM / SIGINT when ``stop`` is None).

    Returns the exit status: 0 after an orderly stop, 1 when start-up failed or
    a background thread died.
    """
    stop_event = stop if stop is not None else threading.Event()
    agent = NodeAgent(settings, api_client=api_client, on_crash=stop_event.set)
    log.info("kubelet plugin starting", extra={"settings": settings.summary()})
    with _signals_set(stop_event) if stop is None else contextlib.nullcontext():
        try:
            agent.start()
        except Exception as err:
            log.error("kubelet plugin failed to start: %s", _describe(err))
            agent.stop()
            return ExitCode.FAILED
        server = agent.server
        log.info(
            "kubelet plugin %s running on node %s",
            settings.driver_name,
            settings.node_name,
            extra={
                "registration_socket": str(server.registration_socket) if server else "",
                "dra_socket": str(server.dra_socket) if server else "",
                "metrics_address": agent.metrics_server.bound_address
                if agent.metrics_server
                else "",
                "liveness_address": (server.liveness_address or "") if server else "",
            },
        )
        while not stop_event.wait(1.0):
            pass
        agent.stop()
    if agent.crashed:
        log.error("kubelet plugin stopped after a failure")
        return ExitCode.FAILED
    log.info("kubelet plugin stopped")
    return ExitCode.OK


def run_command(args: argparse.Namespace, *, prog: str = "dra-driver kubelet-plugin") -> int:
    """The ``kubelet-plugin`` subcommand: settings from ``args`` and the environment, then run."""
    try:
        settings = settings_from_args(args)
    except InvalidInputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return ExitCode.INVALID
    configure_logging(settings.log_format, settings.log_level)
    return run(settings)


def main(argv: list[str] | None = None) -> int:
    """``python -m kubelet_plugin.app [flags]``: the same as ``dra-driver kubelet-plugin``."""
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
