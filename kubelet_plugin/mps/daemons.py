"""The MPS control daemons of this node: one per GPU shared with MPS, held by the claims on it.

Why one daemon per GPU, not one per claim (NVIDIA's DRA driver runs one per
claim): what users asked for is several users on one GPU, and with consumable
shares (``--shared-gpus``) several claims hold one GPU. MPS runs one server
per user ID at a time: clients of a second UID queue until the first UID's
clients are done (they wait, they do not fail), so containers that share a GPU
must run as the same UID to run side by side. Two daemons on one GPU would not
help: each would start its own server and they would time-slice. So a claim
joins a GPU only when its containers run as the UID the GPU serves, checked at
prepare (:mod:`.users`, with ``pods``); the UID is kept with the daemon's state.

Why a supervised daemonised process, not a workload (a Deployment per
claim): the daemon must be up before the kubelet hears that prepare
succeeded (a container started earlier runs without MPS, silently), and the
plugin already runs privileged on the node with the driver root mounted; a
pod scheduled per claim adds an API round trip and a second failure domain.
The daemon outlives a plugin restart (``-d`` daemonises it; the plugin finds it
again, :mod:`.daemon`), so running pods keep their MPS server.

Limits: ``set_default_active_thread_percentage`` and
``set_default_device_pinned_mem_limit`` are daemon-wide defaults that apply
to servers spawned afterwards; ``set_active_thread_percentage <server PID>``
and ``set_device_pinned_mem_limit <server PID>`` change a running server for
the clients that connect to it afterwards (its connected clients keep what they
got). The plugin sets both to the ceiling over the claims holding the GPU (the
largest thread percentage and the largest pinned memory limit; 100 % and no
memory command when one claim has none), before the first client connects, and
again whenever the ceiling changes. Each claim's own limits are in its
containers' env (``CUDA_MPS_*``), which can only lower what a client gets, and
which a container can change. So: no client that connects after a change gets
more than the ceiling; a claim's own, lower limit holds for clients that keep the
env they were given. docs/sharing.md says it for users.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from api.checkpoint import ClaimEntry
from api.errors import PrepareError
from api.resource_v1 import ResourceClaim
from dra_driver.cdi import SharingSettings
from kubelet_plugin.enforcement import GpuShare, prepared_shares
from kubelet_plugin.mps.daemon import MpsDaemon, MpsDaemonError, daemon_uuids, is_gpu_uuid
from kubelet_plugin.mps.users import (
    PodReader,
    claim_users,
    read_served_user,
    refusal,
    served_uid,
    write_served_user,
)

__all__ = ["MPS_CONTROL_BINARY", "MpsCeiling", "MpsDaemons", "ceiling"]

log = logging.getLogger(__name__)

MPS_CONTROL_BINARY: Final = "nvidia-cuda-mps-control"
_MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MpsCeiling:
    """The daemon-wide defaults of one GPU's daemon; None: no command for it."""

    thread_percentage: int
    pinned_memory_bytes: int | None

    def _memory(self) -> str | None:
        if self.pinned_memory_bytes is None:
            return None
        return f"{-(-self.pinned_memory_bytes // _MIB)}M"  # rounded up, never 0

    def commands(self) -> list[str]:
        """The daemon-wide defaults, for the servers spawned from now on."""
        # With CUDA_VISIBLE_DEVICES one UUID, the daemon sees its GPU as device 0.
        commands = [f"set_default_active_thread_percentage {self.thread_percentage}"]
        if (memory := self._memory()) is not None:
            commands.append(f"set_default_device_pinned_mem_limit 0 {memory}")
        return commands

    def server_commands(self, server_pid: int) -> list[str]:
        """The same limits for the running server ``server_pid``: they hold for the clients
        that connect to it from now on; its connected clients keep theirs."""
        commands = [f"set_active_thread_percentage {server_pid} {self.thread_percentage}"]
        if (memory := self._memory()) is not None:
            commands.append(f"set_device_pinned_mem_limit {server_pid} 0 {memory}")
        return commands


def ceiling(settings: Sequence[SharingSettings]) -> MpsCeiling:
    """The ceiling over the settings of the claims holding one GPU (module docstring)."""
    percentages = [s.mps_active_thread_percentage for s in settings]
    limits = [s.mps_pinned_memory_limit_bytes for s in settings]
    set_percentages = [p for p in percentages if p is not None]
    set_limits = [b for b in limits if b is not None]
    return MpsCeiling(
        thread_percentage=max(set_percentages) if len(set_percentages) == len(settings) else 100,
        pinned_memory_bytes=max(set_limits)
        if set_limits and len(set_limits) == len(settings)
        else None,
    )


class MpsDaemons:
    """Starts, limits, supervises and stops the daemons; thread-safe.

    ``binary`` is the driver's ``nvidia-cuda-mps-control`` (None: not found).
    ``required``: a claim asking for MPS without a binary gets a prepare error
    (real GPUs); not required (the mock backend), MPS stays env only, with a warning.
    ``registry`` gets the metrics ``dra_driver_mps_daemons`` (daemons running for
    claims) and ``dra_driver_mps_daemon_restarts_total`` (daemons found dead and
    started again); ``on_restart(gpu uuid, claim UIDs)`` hears of each daemon started
    again (the plugin writes a Node Event). Each daemon has a shared memory directory
    that the CDI specs mount at its clients' ``/dev/shm``; ``shared_shm``: the daemon runs
    with it as its own ``/dev/shm`` too (:class:`~kubelet_plugin.mps.MpsDaemon`).
    :meth:`start` adopts or starts the daemons of prepared claims and stops orphans,
    then checks every ``check_interval_s`` seconds. ``pods`` reads the pods a claim is
    reserved for: with it, a claim whose containers run as another UID than the GPU
    serves is refused at prepare (:mod:`.users`); without it (tests of other matters),
    nothing is checked.
    """

    def __init__(
        self,
        *,
        binary: Path | None,
        mps_root: Path,
        required: bool = True,
        library_path: str | None = None,
        registry: CollectorRegistry | None = None,
        check_interval_s: float = 5.0,
        shared_shm: bool = False,
        on_restart: Callable[[str, str], None] | None = None,
        pods: PodReader | None = None,
    ) -> None:
        self.mps_root = mps_root
        self._pods = pods
        self._shared_shm = shared_shm
        self._on_restart = on_restart
        self._binary = binary
        self._required = required
        self._library_path = library_path
        self._interval = check_interval_s
        self._lock = threading.Lock()
        self._holders: dict[str, dict[str, SharingSettings]] = {}  # uuid -> claim uid -> settings
        self._daemons: dict[str, MpsDaemon] = {}
        self._sent: dict[str, MpsCeiling] = {}
        self._users: dict[str, int | None] = {}  # uuid -> the UID it serves (None: unknown)
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        registry = registry if registry is not None else CollectorRegistry()
        self.restarts = Counter(
            "dra_driver_mps_daemon_restarts",
            "MPS control daemons found dead and started again.",
            registry=registry,
        )
        Gauge(
            "dra_driver_mps_daemons",
            "MPS control daemons running for prepared claims.",
            registry=registry,
        ).set_function(lambda: len(self._daemons))

    @property
    def enabled(self) -> bool:
        return self._binary is not None

    def running(self) -> dict[str, int]:
        """GPU UUID to the pid of its daemon, for the GPUs held now."""
        with self._lock:
            return {
                uuid: daemon.record.pid
                for uuid, daemon in self._daemons.items()
                if daemon.record is not None
            }

    # --- claims ---------------------------------------------------------------------

    def hold(
        self,
        claim_uid: str,
        label: str,
        shares: Sequence[GpuShare],
        *,
        claim: ResourceClaim | None = None,
    ) -> None:
        """Make the daemons of ``shares`` run with this claim among their holders.

        Idempotent. Raises PrepareError (retryable where a retry can help) when
        no binary is found and one is required, or a daemon does not start; and,
        with ``pods`` and the ``claim``, when its containers run as another UID than
        a GPU serves (not retryable: the pod must change), before any daemon starts.
        """
        shares = [(uuid, s) for uuid, s in shares if s.strategy == "MPS"]
        if not shares:
            return
        if self._binary is None:
            message = (
                f"asks for MPS on {', '.join(u for u, _ in shares)}, but no "
                f"{MPS_CONTROL_BINARY} was found under the driver root: install the driver's "
                "MPS binaries there, or share the GPU with TimeSlicing"
            )
            if self._required:
                raise PrepareError(message, claim=label)
            log.warning("%s: %s; MPS settings reach the containers as env only", label, message)
            return
        # Read before the lock: the GETs must not hold up other claims' prepares.
        users = claim_users(claim, self._pods, label) if self._pods and claim else None
        with self._lock:
            uuids = list(dict.fromkeys(u for u, _ in shares))
            for uuid in uuids:
                others = len(set(self._holders.get(uuid, {})) - {claim_uid})
                served = self._users.get(uuid)
                if users is not None and (problem := refusal(users, uuid, others, served)):
                    raise PrepareError(problem, claim=label)
            for uuid, settings in shares:
                self._holders.setdefault(uuid, {})[claim_uid] = settings
            try:
                for uuid in uuids:
                    if set(self._holders[uuid]) == {claim_uid}:
                        self._serve(uuid, None if users is None else served_uid(users))
                    self._ensure(uuid)
            except (MpsDaemonError, OSError) as err:
                self._drop_locked(claim_uid)
                raise PrepareError(
                    f"{err}; the kubelet retries", claim=label, retryable=True
                ) from err

    def serving(self) -> dict[str, int | None]:
        """GPU UUID to the UID its daemon serves (None: unknown), for the GPUs held now."""
        with self._lock:
            return {uuid: self._users.get(uuid) for uuid in self._holders}

    def _serve(self, uuid: str, uid: int | None) -> None:
        """Record the UID the GPU's daemon serves, before the daemon starts."""
        write_served_user(self.mps_root / uuid, uid)
        self._users[uuid] = uid

    def release(self, claim_uid: str) -> None:
        """Drop the claim from its GPUs' holders; a daemon nobody holds is stopped. Never raises."""
        with self._lock:
            self._drop_locked(claim_uid)

    def _drop_locked(self, claim_uid: str) -> None:
        for uuid in [u for u, holders in self._holders.items() if claim_uid in holders]:
            del self._holders[uuid][claim_uid]
            if self._holders[uuid]:
                self._apply_ceiling(uuid)
                continue
            del self._holders[uuid]
            self._sent.pop(uuid, None)
            self._users.pop(uuid, None)
            daemon = self._daemons.pop(uuid, None)
            if daemon is not None:
                daemon.stop()  # removes its directory, and the UID recorded there
            else:
                self._daemon(uuid).stop()

    # --- start-up and supervision ----------------------------------------------------

    def start(self, entries: Mapping[str, ClaimEntry]) -> None:
        """Hold the GPUs of the prepared claims in ``entries``: adopt their running daemons
        (never restarted under running pods), start missing ones, stop the daemons no
        claim holds; then supervise. A missing daemon that ran since boot counts as a
        restart (metric, ``on_restart``). Errors are logged: supervision retries them."""
        if self._binary is None:
            return
        with self._lock:
            self._holders = _prepared_holders(entries)
            self._load_users()
            for uuid in daemon_uuids(self.mps_root):
                if uuid not in self._holders:
                    log.info("GPU %s: MPS daemon of no prepared claim; stopping it", uuid)
                    self._daemon(uuid).stop()
            for uuid in list(self._holders):
                # Read before _ensure writes a new record: a daemon recorded since boot that
                # is gone now died under its clients (with the previous plugin's container,
                # say); one recorded before the boot went with the reboot, and its pods too.
                lost = self._daemon(uuid).recorded_this_boot()
                try:
                    started = self._ensure(uuid)
                except MpsDaemonError as err:
                    log.error("%s; supervision tries again", err)
                    continue
                if started and lost:
                    claims = ", ".join(sorted(self._holders[uuid]))
                    log.warning(
                        "GPU %s: the MPS control daemon of claims %s had died since boot; "
                        "started it again",
                        uuid,
                        claims,
                    )
                    self.restarts.inc()
                    if self._on_restart is not None:
                        self._on_restart(uuid, claims)
        self._thread = threading.Thread(target=self._supervise, name="mps-daemons", daemon=True)
        self._thread.start()

    def sync(self, entries: Mapping[str, ClaimEntry]) -> None:
        """Take the holders from ``entries``, the checkpoint another plugin instance changed
        (rolling update): a daemon of a claim it prepared is adopted (started if missing),
        one whose last claim it unprepared is stopped. Never raises."""
        if self._binary is None:
            return
        with self._lock:
            self._holders = _prepared_holders(entries)
            self._load_users()
            for uuid in [u for u in self._daemons if u not in self._holders]:
                self._sent.pop(uuid, None)
                self._daemons.pop(uuid).stop()
            for uuid in self._holders:
                try:
                    self._ensure(uuid)
                except MpsDaemonError as err:
                    log.error("%s; supervision tries again", err)

    def check(self) -> None:
        """One supervision pass: a held GPU whose daemon is gone gets a new one. Never raises."""
        with self._lock:
            for uuid in list(self._holders):
                daemon = self._daemons.get(uuid)
                if daemon is not None and daemon.alive():
                    continue
                claims = ", ".join(sorted(self._holders[uuid]))
                log.warning(
                    "GPU %s: MPS control daemon is gone (claims %s); starting it again",
                    uuid,
                    claims,
                )
                self.restarts.inc()
                try:
                    self._ensure(uuid)
                except MpsDaemonError as err:
                    log.error("%s; trying again in %g s", err, self._interval)
                    continue
                if self._on_restart is not None:
                    self._on_restart(uuid, claims)

    def close(self) -> None:
        """Stop supervising; the daemons keep running for their pods (a restart adopts them)."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join()

    def _supervise(self) -> None:
        while not self._closed.wait(self._interval):
            self.check()

    # --- helpers (caller holds the lock) -----------------------------------------------

    def _load_users(self) -> None:
        """The UIDs the held GPUs serve, as recorded (another plugin process may have
        recorded them); a GPU without a record serves an unknown user."""
        self._users = {uuid: read_served_user(self.mps_root / uuid) for uuid in self._holders}

    def _daemon(self, uuid: str) -> MpsDaemon:
        binary = self._binary or Path(MPS_CONTROL_BINARY)
        return MpsDaemon(
            binary,
            self.mps_root,
            uuid,
            library_path=self._library_path,
            shared_shm=self._shared_shm,
        )

    def _ensure(self, uuid: str) -> bool:
        """The GPU's daemon running: the known one, one found running (a previous plugin
        process started it), or a new one; then its ceiling applied. True: a new one."""
        started = False
        daemon = self._daemons.get(uuid)
        if daemon is None or not daemon.alive():
            daemon = self._daemons[uuid] = self._daemon(uuid)
            self._sent.pop(uuid, None)
            if daemon.adopt():
                log.info("GPU %s: adopted the running MPS control daemon", uuid)
            else:
                daemon.start()
                started = True
        self._apply_ceiling(uuid)
        return started

    def _apply_ceiling(self, uuid: str) -> None:
        wanted = ceiling(list(self._holders[uuid].values()))
        daemon = self._daemons.get(uuid)
        if daemon is None or self._sent.get(uuid) == wanted:
            return
        try:
            for command in wanted.commands():
                daemon.send(command)
            # Defaults first: a server spawned after the list is read already has them.
            for server in _server_pids(daemon.send("get_server_list")):
                for command in wanted.server_commands(server):
                    daemon.send(command)
        except MpsDaemonError as err:
            log.error("%s; sent again at the next change or restart", err)
            return
        self._sent[uuid] = wanted


def _server_pids(listing: str) -> list[int]:
    """The server PIDs ``get_server_list`` printed, one a line."""
    return [int(word) for word in listing.split() if word.isdigit()]


def _prepared_holders(entries: Mapping[str, ClaimEntry]) -> dict[str, dict[str, SharingSettings]]:
    """GPU UUID -> claim UID -> settings, for the MPS GPUs of the prepared claims."""
    holders: dict[str, dict[str, SharingSettings]] = {}
    for uid, shares in prepared_shares(entries).items():
        for uuid, settings in shares:
            if settings.strategy != "MPS":
                continue
            if not is_gpu_uuid(uuid):
                log.error(
                    "claim UID %s: checkpoint names GPU %r, not a GPU UUID; skipped", uid, uuid
                )
                continue
            holders.setdefault(uuid, {})[uid] = settings
    return holders
