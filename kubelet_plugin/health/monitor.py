"""Health events to device taints: :class:`HealthMonitor`, one set of taints per GPU.

:class:`HealthMonitor` reads the backend's health events (NVML's XID critical
errors, ECC errors, a lost GPU; or faults injected into the mock backend,
:mod:`~kubelet_plugin.health.faults`) and keeps one set of taints per GPU,
raised as :mod:`~kubelet_plugin.health.taints` says:

========================= ========================== ===========================
event                     taint key                  taint value
========================= ========================== ===========================
XID critical error        ``<driver>/xid``           the XID number (the latest)
ECC error                 ``<driver>/ecc``           ``double-bit``/``single-bit``
GPU lost                  ``<driver>/gpu-lost``      none
========================= ========================== ===========================

and on each NVLink peer of a GPU whose recovery action reads DRAIN_P2P,
``<driver>/nvlink-peer-drain.<gpu>`` (:mod:`~kubelet_plugin.health.peers`).

- The effect of each kind comes from the health policy
  (``--health-policy``, e.g. ``xid=NoSchedule,gpu-lost=NoExecute``); a kind
  the policy leaves out taints nothing. XIDs are classified
  (:mod:`~kubelet_plugin.health.classification`): one on the ignore list
  (application errors such as 13 or 43, NVIDIA's defaults) raises an
  informational taint (effect ``None``), one that needs a reset or a reboot a
  ``NoExecute`` one.
- A taint carries ``timeAdded``: when this plugin first saw the fault. A
  repeated event keeps the taint as it is (an ECC taint is never weakened by a
  later event with a milder effect); an XID with another number replaces the
  value and the time.
- A GPU's taints apply to its MIG devices too (see
  :func:`dra_driver.slices.build_slices`).
- Recovery (:class:`~kubelet_plugin.health.recovery.RecoveryGate`): a GPU
  without a new event for the recovery window (``--health-recovery-seconds``)
  loses its taints, once NVML's recovery action reads NONE and the GPU
  validates where the driver reports the action; a reboot action keeps them
  until the node reboots. A lost GPU does not: it
  sends no events once lost, so silence says nothing about its health; the
  taint stays until a reboot or an admin's clear. Nor does the taint standing
  in for an unreadable taint file (``<driver>/taint-state-unreadable``).
- Every change republishes the slices (through ``on_taints``, normally
  :meth:`SlicePublisher.publish`; retried while it fails) and the device
  health stream (:class:`~kubelet_plugin.health.service.HealthBroadcaster`):
  devices with a NoSchedule or NoExecute taint are ``Unhealthy``, others
  ``Healthy``; the complete list is sent again every ``refresh_s`` seconds,
  well inside the kubelet's 30 s health timeout.

Taints persist (:mod:`~kubelet_plugin.health.taint_store`): the monitor starts
from the state the store restored, saves every change through ``save`` before
it is published, and applies the clear requests admins drop
(:meth:`HealthMonitor.apply_clears`, also before the first publish).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol, get_args

from api import limits
from api.errors import DraDriverError, InvalidInputError
from api.resource_v1 import DeviceTaint
from api.taint_state import TaintCause, TaintState
from dra_driver.discovery.model import (
    Gpu,
    HealthEvent,
    HealthEventKind,
    NodeInventory,
    RecoveryProbe,
)
from kubelet_plugin.health.classification import effect_of, xid_outcome
from kubelet_plugin.health.gpu_health import GpuHealth
from kubelet_plugin.health.peers import fence_peers, unfence_peers
from kubelet_plugin.health.recovery import Lifted, RecoveryGate
from kubelet_plugin.health.service import DeviceHealth, Health, HealthBroadcaster
from kubelet_plugin.health.taint_store import pending_clears
from kubelet_plugin.health.taints import UNHEALTHY_EFFECTS, rfc3339, taint_for

__all__ = ["HealthEventSource", "HealthMonitor", "HealthNotices", "TaintAction"]

log = logging.getLogger(__name__)

#: What one event did, for metrics: taints changed, an existing taint's window
#: renewed, nothing (policy or ignore list), or the event named no GPU of this node.
TaintAction = Literal["tainted", "renewed", "ignored", "unknown-gpu"]


class HealthEventSource(Protocol):
    """Where events come from: a DiscoveryBackend, a FaultSpool, a test script."""

    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        """The next event, or None when none came within ``timeout_s`` (or earlier).

        Raises DraDriverError (DiscoveryError) when the source failed.
        """
        ...


class HealthNotices(Protocol):
    """Who hears of a GPU tainted or recovered (Node Events, metrics); must not raise."""

    def tainted(self, gpu: Gpu, taint: DeviceTaint, delay_s: float) -> None:
        """``taint`` was raised on ``gpu`` (or changed), ``delay_s`` after the fault."""
        ...

    def recovered(self, gpu: Gpu, lifted: Lifted) -> None:
        """``gpu`` lost the taints ``lifted`` names."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_policy(effects: Mapping[HealthEventKind, str], recovery: timedelta) -> None:
    unknown = [kind for kind in effects if kind not in get_args(HealthEventKind)]
    bad_effects = [e for e in effects.values() if e not in limits.TAINT_EFFECTS]
    if unknown or bad_effects or recovery <= timedelta(0):
        raise InvalidInputError(
            f"unknown event kinds {unknown}, unknown effects {bad_effects} or a recovery "
            f"window of {recovery} (must be positive)",
            obj="health policy",
        )


def _owner(inventory: NodeInventory, device_name: str) -> str | None:
    """The device name of the GPU a published device belongs to; None: no GPU's."""
    for gpu in inventory:
        if device_name == gpu.device_name or device_name.startswith(gpu.device_name + "-"):
            return gpu.device_name
    return None


def _device_health(
    pool: str, device: str, taints: Mapping[str, DeviceTaint], now: datetime
) -> DeviceHealth:
    """Unhealthy with a NoSchedule or NoExecute taint; the message lists every taint."""
    ordered = [taints[key] for key in sorted(taints)]
    unhealthy = any(t.effect in UNHEALTHY_EFFECTS for t in ordered)
    message = ", ".join(
        f"{t.key}{'=' + t.value if t.value else ''}:{t.effect} since {t.time_added}"
        for t in ordered
    )
    health = Health.UNHEALTHY if unhealthy else Health.HEALTHY
    return DeviceHealth(pool=pool, device=device, health=health, last_updated=now, message=message)


def _keep_own(adopted: GpuHealth, mine: GpuHealth, *, since: str) -> None:
    """Add to ``adopted`` the taints of ``mine`` whose event came at ``since`` or later."""
    for key, cause in mine.causes.items():
        if cause.seen_at >= since and key not in adopted.taints:  # RFC 3339, one format
            adopted.taints[key], adopted.causes[key] = mine.taints[key], cause
            adopted.last_event = max(filter(None, (adopted.last_event, mine.last_event)))
            adopted.lost = adopted.lost or mine.lost


def _taint_of(
    event: HealthEvent, effect: str, now: datetime, *, domain: str, ignored: frozenset[int]
) -> tuple[DeviceTaint, TaintCause]:
    """The taint ``event`` raises (an XID's effect as classified) and its cause."""
    if event.kind == "xid" and event.xid is not None:
        effect = effect_of(xid_outcome(event.xid, ignored=ignored, policy_effect=effect), effect)
    cause = TaintCause(
        kind=event.kind, xid=event.xid, gpu_uuid=event.gpu_uuid, seen_at=rfc3339(now)
    )
    return taint_for(event, effect, now, domain=domain), cause


class HealthMonitor:
    """Health events to device taints and device health (see the module docstring).

    ``device_names`` are the names of every published device (GPUs and MIG
    devices); a device belongs to the GPU whose ``gpu-<minor>`` it is or starts
    with. ``effects`` maps event kinds to taint effects. ``clock`` returns the
    current time, timezone-aware (tests pass a fake). ``on_taints`` receives
    the complete taint map (GPU device name to taints) after every change and
    may raise DraDriverError or OSError, which is retried later. ``on_event``
    (metrics) hears every event's kind and :data:`TaintAction`. ``state`` is
    where to start (restored from disk); ``save`` gets the whole state after
    every change, before ``on_taints``, and may raise OSError (logged, retried);
    ``clears_dir`` is where admins' clear requests wait. ``owns_state`` says
    whether this instance saves and applies clears (during a rolling update only
    the one publishing does); ``reload`` reads the saved state at
    :meth:`take_over`.

    :meth:`handle` and :meth:`expire` are safe to call from any thread; the
    published state is always the state after the last call.
    """

    def __init__(
        self,
        *,
        driver_name: str,
        inventory: NodeInventory,
        device_names: Iterable[str],
        events: HealthEventSource,
        effects: Mapping[HealthEventKind, str],
        ignored_xids: Iterable[int] = (),
        recovery: timedelta,
        on_taints: Callable[[Mapping[str, Sequence[DeviceTaint]]], object] | None = None,
        broadcaster: HealthBroadcaster | None = None,
        on_event: Callable[[HealthEventKind, TaintAction], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        state: TaintState | None = None,
        save: Callable[[TaintState], None] | None = None,
        clears_dir: Path | None = None,
        owns_state: Callable[[], bool] = lambda: True,
        reload: Callable[[], TaintState] | None = None,
        probe: RecoveryProbe | None = None,
        notices: HealthNotices | None = None,
        beside: Callable[[Callable[[], Mapping[str, Sequence[DeviceTaint]]], threading.Event], None]
        | None = None,
    ) -> None:
        _check_policy(effects, recovery)
        self.driver_name = driver_name
        self._inventory = inventory
        self._events = events
        self._effects = dict(effects)
        self._ignored = frozenset(ignored_xids)
        self._recovery = recovery
        self._on_taints = on_taints
        self._broadcaster = broadcaster
        self._on_event = on_event
        self._clock = clock
        self._save = save
        self._save_due = False
        self._clears_dir = clears_dir
        self._owns_state = owns_state
        self._reload = reload
        self._notices = notices
        self._beside = beside  # on a thread of its own from the loop (the automatic reset)
        self._gate = RecoveryGate(probe, recovery, self._ignored, self._effects.get("xid"))
        self._no_peers: set[str] = set()  # DRAIN_P2P GPUs without known peers, logged
        self._started = rfc3339(clock())
        self._boot_id = state.boot_id if state is not None else ""
        self._lock = threading.Lock()
        restored = state.gpus if state is not None else {}
        self._gpus = {g.device_name: GpuHealth.of(g, restored) for g in inventory}
        self._by_uuid: dict[str, Gpu] = {}
        for gpu in inventory:
            self._by_uuid[gpu.uuid] = gpu
            for mig in gpu.mig_devices:
                self._by_uuid[mig.uuid] = gpu
        # Published device -> its GPU's device name (None: no GPU, always healthy).
        self._devices = {name: _owner(inventory, name) for name in device_names}

    # --- state ------------------------------------------------------------------------

    def taints(self) -> dict[str, list[DeviceTaint]]:
        """GPU device name to its taints (sorted by key); GPUs without taints left out."""
        with self._lock:
            return {
                name: [state.taints[key].model_copy() for key in sorted(state.taints)]
                for name, state in self._gpus.items()
                if state.taints
            }

    def tainted_device_count(self) -> int:
        """Published devices (MIG devices included) that carry at least one taint."""
        with self._lock:
            return sum(
                1
                for owner in self._devices.values()
                if owner is not None and self._gpus[owner].taints
            )

    def snapshot(self) -> list[DeviceHealth]:
        """The health of every published device now, for the kubelet's health stream."""
        now = self._clock()
        pool = self._inventory.node_name
        with self._lock:
            return [
                _device_health(pool, name, self._gpus[owner].taints if owner else {}, now)
                for name, owner in self._devices.items()
            ]

    # --- events -----------------------------------------------------------------------

    def _targets(self, event: HealthEvent) -> list[Gpu] | None:
        if event.gpu_uuid is None:
            return list(self._inventory.gpus)
        gpu = self._by_uuid.get(event.gpu_uuid)
        return [gpu] if gpu is not None else None

    def handle(self, event: HealthEvent) -> bool:
        """Apply one event; True when the taints changed (then republish)."""
        action = self._apply(event)
        if self._on_event is not None:
            self._on_event(event.kind, action)
        return action == "tainted"

    def _apply(self, event: HealthEvent) -> TaintAction:
        effect = self._effects.get(event.kind)
        what = f"XID {event.xid}" if event.kind == "xid" else event.kind
        if effect is None:
            log.info("%s on %s: no taint (not in the health policy)", what, event.gpu_uuid)
            return "ignored"
        targets = self._targets(event)
        if targets is None:
            log.warning("%s on unknown GPU %s: not a GPU of this node", what, event.gpu_uuid)
            return "unknown-gpu"
        now = self._clock()
        taint, cause = _taint_of(event, effect, now, domain=self.driver_name, ignored=self._ignored)
        with self._lock:
            tainted = [
                g for g in targets if self._gpus[g.device_name].raise_taint(taint, cause, now)
            ]
        self.persist()
        if self._notices is not None:
            delay = max(0.0, now.timestamp() - (event.occurred_at or now.timestamp()))
            for gpu in tainted:
                self._notices.tainted(gpu, taint, delay)
        if not tainted:
            log.debug("%s on %s: already tainted, recovery window restarted", what, event.gpu_uuid)
            return "renewed"
        log.warning(
            "%s on %s: taint %s%s:%s",
            what,
            ", ".join(f"{gpu.device_name} ({gpu.uuid})" for gpu in tainted),
            taint.key,
            f"={taint.value}" if taint.value else "",
            taint.effect,
        )
        return "tainted"

    def expire(self) -> bool:
        """Remove the taints of the GPUs that recovered (:class:`RecoveryGate`); True when
        the taints changed (lifted, raised, or now waiting for a reboot)."""
        now = self._clock()
        fenced = []
        with self._lock:
            verdicts = [
                (g, self._gate.check(g.device_name, self._gpus[g.device_name], now))
                for g in self._inventory
            ]
            for gpu, verdict in verdicts:  # DRAIN_P2P fences the peers (peers.py)
                if verdict.drain_p2p:
                    fenced += fence_peers(
                        self._gpus,
                        self._inventory,
                        gpu,
                        now,
                        domain=self.driver_name,
                        said=self._no_peers,
                    )
                elif verdict.lifted is not None:
                    unfence_peers(self._gpus, gpu.uuid)
        changed = any(verdict.changed for _, verdict in verdicts) or bool(fenced)
        if changed:
            self.persist()
        if self._notices is not None:
            for peer, taint in fenced:
                self._notices.tainted(peer, taint, 0.0)
            for gpu, verdict in verdicts:
                if verdict.lifted is not None:
                    self._notices.recovered(gpu, verdict.lifted)
        return changed

    # --- persistence and admins' clears ----------------------------------------------

    def state(self) -> TaintState:
        """What is saved: every GPU with taints, and the boot it is saved in."""
        with self._lock:
            gpus = {name: s.persisted() for name, s in self._gpus.items() if s.taints}
        return TaintState(boot_id=self._boot_id, gpus=gpus)

    def persist(self) -> bool:
        """Hand the state to ``save``; False (logged, retried by the loop) when it failed."""
        if self._save is None or not self._owns_state():
            return True
        try:
            self._save(self.state())
        except OSError as err:
            log.error("saving the device taints failed: %s; a restart now would lose them", err)
            self._save_due = True
            return False
        self._save_due = False
        return True

    def clear(self, device: str | None) -> list[str] | None:
        """Remove every taint of ``device``'s GPU (a GPU or MIG device name, or a UUID;
        None: of every GPU), on an admin's request. The GPU names cleared; None when
        ``device`` is not one of this node's."""
        with self._lock:
            if device is None:
                names = list(self._gpus)
            else:
                gpu = self._by_uuid.get(device)
                owner = gpu.device_name if gpu is not None else self._devices.get(device)
                if owner is None:
                    return None
                names = [owner]
            cleared = [name for name in names if self._gpus[name].taints]
            for name in names:
                self._gpus[name].clear()
                cleared += unfence_peers(self._gpus, self._gpus[name].uuid)
            cleared = list(dict.fromkeys(cleared))
        self.persist()
        for name in cleared:
            log.warning("%s: taints cleared on an admin's request", name)
        return cleared

    def apply_clears(self) -> bool:
        """Apply the clear requests waiting in ``clears_dir``; True when any taint went."""
        if self._clears_dir is None or not self._owns_state():
            return False
        changed = False
        for request in pending_clears(self._clears_dir):
            cleared = self.clear(request.device)
            if cleared is None:
                request.reject(f"{request.device!r} is no device of this node")
                continue
            request.done()
            changed = changed or bool(cleared)
        return changed

    def take_over(self) -> None:
        """Adopt the state the instance this one replaces saved (``reload``), plus the
        taints this instance raised itself since it started; then save it."""
        if self._reload is None:
            return
        state = self._reload()
        with self._lock:
            for gpu in self._inventory:
                adopted = GpuHealth.of(gpu, state.gpus)
                _keep_own(adopted, self._gpus[gpu.device_name], since=self._started)
                self._gpus[gpu.device_name] = adopted
        self.persist()

    # --- the loop ---------------------------------------------------------------------

    def broadcast(self) -> None:
        """Send the current health of every device to the kubelet's streams."""
        if self._broadcaster is not None:
            self._broadcaster.publish(self.snapshot())

    def publish_taints(self) -> bool:
        """Hand the taints to ``on_taints``; False (logged) when that failed."""
        if self._on_taints is None:
            return True
        try:
            self._on_taints(self.taints())
        except (DraDriverError, OSError) as err:
            log.warning("publishing device taints failed: %s; retrying", err)
            return False
        return True

    def next_event(self, timeout_s: float) -> HealthEvent | None:
        """The next health event of the source, None after ``timeout_s``; raises
        DraDriverError when the source fails."""
        return self._events.wait_health_event(timeout_s)

    @property
    def save_due(self) -> bool:
        """Whether the last save failed (the loop retries it)."""
        return self._save_due

    def start_beside(self, stop: threading.Event) -> None:
        """Start ``beside`` (the automatic reset) on a thread of its own, if given."""
        if self._beside is not None:
            target, args = self._beside, (self.taints, stop)
            threading.Thread(target=target, args=args, name="auto-reset", daemon=True).start()
