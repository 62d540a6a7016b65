"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's ``leaderelection`` does it.

Several replicas may run; only the one holding the Lease writes. The record is
the Lease's spec: ``holderIdentity``, ``leaseDurationSeconds``,
``acquireTime``, ``renewTime``, ``leaseTransitions``. Every write is guarded
by the Lease's resourceVersion, so two replicas can never both win one round.

- Acquire: no Lease -> create it; a Lease whose holder is empty, is us, or
  has not changed for ``lease_duration_s`` *as measured on our own clock since
  we last saw it change* (never the timestamps in it: clocks differ) -> take
  it over, bumping ``leaseTransitions``.
- Renew: every ``retry_period_s`` the leader writes ``renewTime``.
- Fence: :meth:`LeaderElector.can_write` is true only while the last
  successful renewal *started* less than ``renew_deadline_s`` ago. Another
  replica waits at least ``lease_duration_s`` after seeing that renewal
  before it takes over, and ``renew_deadline_s < lease_duration_s``, so a
  leader stops writing before anyone else can start: never two leaders
  writing (the margin, lease duration minus renew deadline, covers the time
  a write is in flight).
- Release (graceful shutdown): the leader clears ``holderIdentity`` and sets
  ``leaseDurationSeconds: 1`` so a standby takes over at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agent_kit.kube import ApiError, ClusterClient, ConflictError, NotFoundError

__all__ = ["LeaderElector", "micro_time"]

log = logging.getLogger(__name__)


def micro_time(now: datetime) -> str:
    """A metav1.MicroTime: ``2026-11-27T11:00:00.123456Z``."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """See the module docstring. :meth:`run` campaigns until stopped; :meth:`step` is one round."""

    def __init__(
        self,
        client: ClusterClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        on_started: Callable[[], None] | None = None,
        on_stopped: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not retry_period_s < renew_deadline_s < lease_duration_s:
            raise ValueError("need retry period < renew deadline < lease duration")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.on_started = on_started
        self.on_stopped = on_stopped
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._leader = False
        self._renewed_at = float("-inf")
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = float("-inf")
        #: The holder the last round saw (for logs, metrics and tests).
        self.holder: str | None = None

    @property
    def is_leader(self) -> bool:
        with self._lock:
            return self._leader

    def can_write(self) -> bool:
        """Whether this replica may write now (see "Fence" in the module docstring)."""
        with self._lock:
            return self._leader and self._clock() < self._renewed_at + self.renew_deadline_s

    def step(self) -> bool:
        """One acquire-or-renew round; True when we hold the Lease afterwards.

        Updates leadership: a renewal that fails for ``renew_deadline_s`` ends it
        (``on_stopped``); a successful round while not leading starts it (``on_started``).
        """
        started = self._clock()
        try:
            won = self._try(started)
        except ApiError as err:
            log.warning("leader election round failed", extra={"error": str(err)})
            won = False
        became = lost = False
        with self._lock:
            if won:
                self._renewed_at = started
                became = not self._leader
                self._leader = True
            elif self._leader and self._clock() >= self._renewed_at + self.renew_deadline_s:
                self._leader = False
                lost = True
        if became:
            log.info("became the leader", extra={"lease": self.name, "identity": self.identity})
            if self.on_started is not None:
                self.on_started()
        if lost:
            log.warning("lost the leadership", extra={"lease": self.name})
            if self.on_stopped is not None:
                self.on_stopped()
        return won

    def _record(
        self, holder: str | None, *, acquire: str | None, transitions: int
    ) -> dict[str, Any]:
        now = micro_time(self._wall())
        spec: dict[str, Any] = {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(1, round(self.lease_duration_s)),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        spec["acquireTime"] = acquire or now
        return spec

    def _try(self, now: float) -> bool:
        try:
            lease = self.client.get("leases", self.name, namespace=self.namespace)
        except NotFoundError:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._record(self.identity, acquire=None, transitions=0),
            }
            try:
                self.client.create("leases", body)
            except ConflictError:
                return False
            self.holder = self.identity
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        self.holder = holder
        observed = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
        if observed != self._observed:
            self._observed = observed
            self._observed_at = now
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        if holder and holder != self.identity and now < self._observed_at + duration:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        ours = holder == self.identity
        updated = dict(lease)
        updated["spec"] = self._record(
            self.identity,
            acquire=spec.get("acquireTime") if ours else None,
            transitions=transitions if ours else transitions + 1,
        )
        try:
            stored = self.client.replace("leases", updated)
        except ConflictError:
            return False
        stored_spec = stored.get("spec") or {}
        self._observed = (
            stored_spec.get("holderIdentity"),
            stored_spec.get("renewTime"),
            stored_spec.get("leaseTransitions"),
        )
        self._observed_at = now
        self.holder = self.identity
        return True

    def run(self, stop: threading.Event) -> None:
        """Campaign and renew every ``retry_period_s`` until ``stop`` is set, then release."""
        while not stop.is_set():
            self.step()
            stop.wait(self.retry_period_s)
        self.release()

    def release(self) -> None:
        """Give the Lease up now if we hold it (graceful shutdown); errors are logged."""
        with self._lock:
            was_leader = self._leader
            self._leader = False
        if not was_leader:
            return
        try:
            lease = self.client.get("leases", self.name, namespace=self.namespace)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            updated = dict(lease)
            updated["spec"] = {
                **spec,
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": micro_time(self._wall()),
            }
            self.client.replace("leases", updated)
            log.info("released the leadership", extra={"lease": self.name})
        except ApiError as err:
            log.warning("could not release the lease", extra={"error": str(err)})
        if self.on_stopped is not None:
            self.on_stopped()
