"""``dra-driver controller``: the parts put together, and ``dra-driver explain claim`` live.

:class:`Controller` wires the watches (one :class:`~agent_kit.kube.Reflector`
per resource into the :class:`~controller.cache.ClusterCache`), the work queue,
the placement workers, the leader elector, the cluster pool and DeviceClass
sync, metrics and the probe endpoints. Threads:

- one reflector per resource: ResourceSlices, DeviceClasses, DeviceTaintRules
  (their taints count as the slices' own), ResourceClaims, Nodes, and Pods that
  are not finished (a field selector on the phase: bound pods count against their
  node's cpu and memory), and PodGroups where the cluster serves them;
- ``workers`` placement workers sharing one :class:`~controller.placement.Placer`
  (decisions are serialised on the cache's lock, API writes run in parallel); they
  take keys once every watch has delivered its first list (never a decision on a
  partial picture of the cluster);
- the leader elector (when ``--leader-elect``); becoming the leader queues
  every pod that may need work, losing it stops every write at once (fence);
- the config sync: while leading, the cluster pools and DeviceClasses are
  brought in line with the configuration every ``CONFIG_SYNC_S`` seconds;
- the fragmentation gauges: every ``FRAGMENTATION_INTERVAL_S`` seconds, once the watches
  have synced, :func:`~dra_driver.fragmentation.measure` reads the cache's snapshot under
  its lock (one pass over the driver's devices) and the gauges serve that result.

With ``--webhook-address``, the GpuConfig validating admission webhook
(:mod:`controller.admission`) is served over HTTPS by every replica, leader or not: it
only reads the object under review.

Readiness: every watch has delivered its first list. Liveness: every thread
is alive and no watch has failed ``LIVENESS_FAILURES`` times in a row.

Shutdown (SIGTERM, SIGINT): stop taking keys, let the placements in flight
finish (writes stay fenced), release the Lease so a standby takes over at
once, stop the endpoints. Exit status 0; 2 for invalid settings or
configuration (an endpoint address that cannot be bound, a webhook certificate that
cannot be read); 1 when the API server cannot be reached at start-up.

Logs are structured: ``--log-format json`` writes one JSON object per line
(``time``, ``level``, ``logger``, ``message`` and the record's extra fields).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, TextIO

from agent_kit.admission_server import AdmissionServer, ServingCertificate
from agent_kit.events import EventRecorder
from agent_kit.kube import (
    ApiError,
    ClusterClient,
    KubeConfigError,
    KubernetesClient,
    ObjectList,
    Reflector,
    Resource,
    call_with_retries,
    default_kubeconfig,
    load_api_client,
)
from agent_kit.logs import configure_logging
from agent_kit.metrics_server import EndpointServer
from api.errors import DraDriverError, ExitCode, InvalidInputError
from api.resource_v1 import DeviceClass, DeviceTaintRule, Node, ResourceClaim, ResourceSlice
from controller.admission import GPU_CONFIG_PATH, GpuConfigReviewer
from controller.cache import ClusterCache, decode
from controller.leader import LeaderElector
from controller.metrics import FRAGMENTATION_INTERVAL_S, ControllerMetrics
from controller.placement import AlwaysLeader, Fence, Placer, run_worker, serves_pod_groups
from controller.pools import (
    PoolPublisher,
    build_device_classes,
    load_config,
    sync_device_classes,
)
from controller.settings import Settings, settings_from_args
from controller.workqueue import WorkQueue
from dra_driver.allocator import Explanation, Snapshot, explain
from dra_driver.fragmentation import measure

__all__ = [
    "Controller",
    "configure_logging",
    "explain_claim",
    "main",
    "run",
    "run_explain_claim",
]

log = logging.getLogger(__name__)

WATCHED: Final[tuple[Resource, ...]] = (
    "resourceslices",
    "deviceclasses",
    "devicetaintrules",
    "resourceclaims",
    "nodes",
    "pods",
    "podgroups",
)
#: Pods that still count: not Succeeded, not Failed.
POD_SELECTOR: Final = "status.phase!=Succeeded,status.phase!=Failed"
CONFIG_SYNC_S: Final = 30.0
#: The ``source.component`` of the controller's Events.
CONTROLLER_COMPONENT: Final = "dra-driver-controller"
LIVENESS_FAILURES: Final = 10


# --- The controller -----------------------------------------------------------------------


class Controller:
    """Everything ``dra-driver controller`` runs (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        client: ClusterClient,
        *,
        workers: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client = client
        self.stop = threading.Event()
        self.metrics = ControllerMetrics()
        self.queue = WorkQueue(maxsize=settings.queue_size, resync=self.pending_keys)
        self.cache = ClusterCache(gate=settings.gate, on_change=self.queue.add_all, clock=clock)
        self.events = EventRecorder(
            client,
            component=CONTROLLER_COMPONENT,
            instance=settings.identity,
            interval_s=settings.event_interval_seconds,
        )
        self.elector: LeaderElector | None = None
        fence: Fence = AlwaysLeader()
        if settings.leader_elect:
            self.elector = LeaderElector(
                client,
                namespace=settings.namespace,
                name=settings.lease_name,
                identity=settings.identity,
                lease_duration_s=settings.lease_duration_seconds,
                renew_deadline_s=settings.renew_deadline_seconds,
                retry_period_s=settings.retry_period_seconds,
                on_started=self._on_started,
                on_stopped=self._on_stopped,
                clock=clock,
            )
            fence = self.elector
        self.fence = fence
        self.placer = Placer(
            client,
            self.cache,
            self.events,
            self.metrics,
            driver_name=settings.driver_name,
            policy=settings.policy,
            max_retries=settings.max_placement_retries,
            grace_s=settings.unschedulable_grace_seconds,
            settle_s=settings.settle_delay,
            fence=fence,
            clock=clock,
        )
        self.reflectors = [
            Reflector(
                client,
                resource,
                self.cache,
                stop=self.stop,
                field_selector=POD_SELECTOR if resource == "pods" else None,
                watch_timeout_s=settings.watch_timeout_seconds,
                on_relist=lambda r: self.metrics.relists.labels(r).inc(),
            )
            for resource in WATCHED
        ]
        self.pools = PoolPublisher(client, driver_name=settings.driver_name)
        self.workers = workers if workers is not None else settings.workers
        self._threads: list[threading.Thread] = []
        self._config_due = threading.Event()
        self.endpoints: list[EndpointServer] = []
        self.webhook: AdmissionServer | None = None
        #: Errors of the last configuration sync (None: it went through).
        self.config_error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start every thread and endpoint; returns at once."""
        self._start_endpoints()
        self.events.start()
        if not serves_pod_groups(self.client):
            self.reflectors = [r for r in self.reflectors if r.resource != "podgroups"]
        for reflector in self.reflectors:
            self._spawn(f"watch-{reflector.resource}", reflector.run)
        if self.elector is not None:
            self._spawn("leader-election", self._elect)
        else:
            self._on_started()
        for index in range(self.workers):
            self._spawn(f"placement-{index}", self._place)
        self._spawn("config-sync", self._sync_config_loop)
        self._spawn("fragmentation", self._fragmentation_loop)

    def _place(self) -> None:
        """One placement worker. It takes keys only once every watch has delivered its
        first list: a decision on a partial picture would place a pod on a device a
        DeviceTaintRule not listed yet takes away, hand out a device a claim not listed
        yet holds, or call a pod unplaceable because no Node was listed yet. Keys queued
        meanwhile wait in the queue."""
        while not self.stop.is_set() and not self.wait_synced(0.5):
            pass
        run_worker(self.placer, self.queue, self.stop)

    def _elect(self) -> None:
        assert self.elector is not None
        self.elector.run(self.stop)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_endpoints(self) -> None:
        health, metrics = self.settings.health_address, self.settings.metrics_address
        if health and health == metrics:
            self.endpoints.append(
                EndpointServer(
                    health, metrics=self.metrics, liveness=self.liveness, readiness=self.readiness
                )
            )
        else:
            if health:
                self.endpoints.append(
                    EndpointServer(health, liveness=self.liveness, readiness=self.readiness)
                )
            if metrics:
                self.endpoints.append(EndpointServer(metrics, metrics=self.metrics))
        for server in self.endpoints:
            server.start()
        if self.settings.webhook_address:
            self.webhook = AdmissionServer(
                self.settings.webhook_address,
                ServingCertificate(self.settings.webhook_cert_dir),
                {GPU_CONFIG_PATH: GpuConfigReviewer(self.settings.driver_name)},
                on_review=lambda path, outcome: self.metrics.admission_reviews.labels(
                    path, outcome
                ).inc(),
            )
            self.webhook.start()

    def wait_synced(self, timeout_s: float) -> bool:
        """Wait until every watch delivered its first list; False on timeout."""
        deadline = time.monotonic() + timeout_s
        for reflector in self.reflectors:
            if not reflector.synced.wait(max(deadline - time.monotonic(), 0)):
                return False
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop (see "Shutdown" in the module docstring); idempotent."""
        self.stop.set()
        self.queue.shutdown()
        self._config_due.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            # Watches block in a read until the server ends them; they are daemons,
            # so only the workers and the elector are waited for.
            if thread.name.startswith("watch-"):
                continue
            thread.join(max(deadline - time.monotonic(), 0))
        self.events.stop(timeout_s=max(deadline - time.monotonic(), 0.1))
        for server in self.endpoints:
            server.stop()
        self.endpoints.clear()
        if self.webhook is not None:
            self.webhook.stop()
            self.webhook = None

    # -- probes ---------------------------------------------------------------------------

    def readiness(self) -> str | None:
        waiting = [r.resource for r in self.reflectors if not r.synced.is_set()]
        if waiting:
            return f"waiting for the first list of {', '.join(waiting)}"
        return None

    def liveness(self) -> str | None:
        dead = [t.name for t in self._threads if not t.is_alive()]
        if dead and not self.stop.is_set():
            return f"threads ended: {', '.join(dead)}"
        failing = [r.resource for r in self.reflectors if r.failures >= LIVENESS_FAILURES]
        if failing:
            return f"watches failing repeatedly: {', '.join(failing)}"
        return None

    # -- leadership -----------------------------------------------------------------------

    def pending_keys(self) -> list[str]:
        """Pods that may need the controller: gated, or unbound with claims."""
        gate = self.settings.gate
        return sorted(
            pod.key
            for pod in self.cache.pods()
            if pod.has_gate(gate) or (not pod.bound and pod.claims)
        )

    def _on_started(self) -> None:
        self.metrics.leader.set(1)
        self.queue.add_all(self.pending_keys())
        self._config_due.set()

    def _on_stopped(self) -> None:
        self.metrics.leader.set(0)

    # -- pools and DeviceClasses ------------------------------------------------------------

    def _sync_config_loop(self) -> None:
        while not self.stop.is_set():
            self._config_due.wait(CONFIG_SYNC_S)
            self._config_due.clear()
            if self.stop.is_set() or not self.fence.can_write():
                continue
            self.sync_config()

    # -- fragmentation gauges ---------------------------------------------------------------

    def _fragmentation_loop(self) -> None:
        while not self.stop.wait(FRAGMENTATION_INTERVAL_S):
            if self.cache.synced(WATCHED):
                self.measure_fragmentation()

    def measure_fragmentation(self) -> None:
        """Compute the fragmentation gauges from the cache once (see the module docstring)."""
        try:
            with self.cache.lock:
                found = measure(self.cache.snapshot(), self.settings.driver_name)
        except InvalidInputError as err:  # a snapshot that cannot be rebuilt: keep the last
            log.warning("fragmentation not measured", extra={"error": str(err)})
            return
        self.metrics.fragmentation.update(found)

    def sync_config(self) -> None:
        """Bring cluster pools and DeviceClasses in line with the configuration once."""
        settings = self.settings
        try:
            config = load_config(
                self.client,
                path=str(settings.config) if settings.config else None,
                config_map=settings.config_map,
            )
            if settings.manage_device_classes:
                sync_device_classes(
                    self.client, build_device_classes(settings.driver_name, config.device_classes)
                )
            self.pools.sync(config.pools)
            self.config_error = None
        except (InvalidInputError, ApiError, OSError) as err:
            if str(err) != self.config_error:
                log.error("configuration sync failed", extra={"error": str(err)})
            self.config_error = str(err)


def run(settings: Settings, *, client: ClusterClient | None = None) -> int:
    """Run the controller until SIGTERM or SIGINT; return the exit status."""
    configure_logging(settings.log_format, settings.log_level)
    log.info("starting", extra=settings.summary())
    if client is None:
        try:
            api_client = load_api_client(str(settings.kubeconfig) if settings.kubeconfig else None)
        except KubeConfigError as err:
            log.error("cannot load the cluster configuration", extra={"error": str(err)})
            return ExitCode.FAILED
        client = KubernetesClient(api_client, timeout_s=settings.api_timeout_seconds)
    controller = Controller(settings, client)

    def stop(signum: int, frame: object) -> None:
        del frame
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        controller.stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    try:
        controller.start()
    except (OSError, ssl.SSLError) as err:
        # An address that cannot be bound, or a webhook certificate that cannot be read.
        log.error("cannot start the endpoints", extra={"error": str(err)})
        controller.shutdown()
        return ExitCode.INVALID
    controller.stop.wait()
    controller.shutdown()
    log.info("stopped")
    return ExitCode.OK


def main(args: argparse.Namespace, *, prog: str = "dra-driver") -> int:
    """``dra-driver controller``: settings from the parsed flags and the environment, then run."""
    try:
        settings = settings_from_args(args)
    except InvalidInputError as err:
        print(f"{prog} controller: error: {err}", file=sys.stderr)
        return ExitCode.INVALID
    return run(settings)


# --- dra-driver explain claim NAMESPACE/NAME ---------------------------------------------------


def explain_claim(
    client: ClusterClient, namespace: str, name: str, *, node: str | None = None
) -> Explanation:
    """Explain, per node and request, how claim ``namespace/name`` fits the live cluster.

    The claim is explained as if it were pending (its own allocation, if any,
    does not count as in use); every other allocated claim does, and every
    DeviceTaintRule taints the devices it selects, as the scheduler sees them. Raises
    ApiError (404 when the claim does not exist) and InvalidInputError.
    """
    target = decode(ResourceClaim, client.get("resourceclaims", name, namespace=namespace))
    target.status = None
    lists: dict[Resource, ObjectList] = {
        resource: call_with_retries(functools.partial(client.list, resource))
        for resource in (
            "resourceslices",
            "deviceclasses",
            "devicetaintrules",
            "resourceclaims",
            "nodes",
        )
    }
    claims = [decode(ResourceClaim, raw) for raw in lists["resourceclaims"].items]
    allocated = [
        c
        for c in claims
        if c.status is not None
        and c.status.allocation is not None
        and not (c.metadata.namespace == namespace and c.metadata.name == name)
    ]
    snapshot = Snapshot.build(
        slices=[decode(ResourceSlice, raw) for raw in lists["resourceslices"].items],
        classes=[decode(DeviceClass, raw) for raw in lists["deviceclasses"].items],
        claims=allocated,
        nodes=[decode(Node, raw) for raw in lists["nodes"].items],
        taint_rules=[decode(DeviceTaintRule, raw) for raw in lists["devicetaintrules"].items],
    )
    return explain(snapshot, [target], node=node)


def run_explain_claim(
    target: Sequence[str],
    *,
    kubeconfig: str | None = None,
    node: str | None,
    output: str,
    out: TextIO,
    prog: str = "dra-driver",
    client: ClusterClient | None = None,
) -> int:
    """``explain claim NAMESPACE/NAME``: print the explanation; return the exit status.

    The cluster is the one of ``kubeconfig``, else ``KUBECONFIG`` or
    ``~/.kube/config``, else the in-cluster configuration. 0 printed; 1 the API
    server could not answer (or the claim does not exist); 2 a malformed target.
    """
    if len(target) != 2 or target[0] != "claim" or target[1].count("/") != 1:
        print(
            f"{prog}: error: use 'explain claim NAMESPACE/NAME' (or 'explain -f FILE')",
            file=sys.stderr,
        )
        return ExitCode.INVALID
    namespace, name = target[1].split("/")
    try:
        if client is None:
            client = KubernetesClient(load_api_client(kubeconfig or default_kubeconfig()))
        explanation = explain_claim(client, namespace, name, node=node)
    except ApiError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return ExitCode.FAILED
    except DraDriverError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return ExitCode.INVALID
    except Exception as err:  # the client's ConfigException: no kubeconfig, no cluster
        print(f"{prog}: error: cannot reach the cluster: {err}", file=sys.stderr)
        return ExitCode.FAILED
    if output == "json":
        json.dump(explanation.to_json(), out, indent=2)
        out.write("\n")
    else:
        out.write(explanation.render_table())
    return ExitCode.OK
