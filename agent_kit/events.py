"""Kubernetes Events: what an agent did, and why it could not.

The controller reports on pods and claims (placement explanations); the kubelet plugin on
its Node (a device plugin serving the same GPUs). :class:`EventRecorder` writes core/v1
Events (``kubectl describe`` and ``kubectl get events`` show them next to the
scheduler's own), as ``component``. It rate-limits per object and reason:

- a new (object, reason) pair, or one whose message changed (the explanation
  is different now), is written at once as a new Event;
- the same message again within ``interval_s`` is dropped;
- the same message after ``interval_s`` bumps the existing Event's ``count``
  and ``lastTimestamp`` (a merge patch) instead of adding another Event.

Events are best effort, as everywhere in Kubernetes: a failed write is logged
and dropped, never raised to the placement that asked for it. At most
``capacity`` (object, reason) pairs are remembered (least recently used
forgotten first).

With :meth:`EventRecorder.start`, writes happen on a thread of their own (at
most ``backlog`` Events wait; more are dropped and counted), so a placement
does not wait for its Event; without it, :meth:`EventRecorder.emit` writes at once.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

from agent_kit.kube import ApiError, ClusterClient

__all__ = ["EventRecorder", "ObjectRef"]

log = logging.getLogger(__name__)

#: Longer messages are cut (the API server's limit for events.k8s.io notes is 1 kB).
MESSAGE_MAX: Final = 1024

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The object an Event is about."""

    kind: str
    api_version: str
    namespace: str
    name: str
    uid: str = ""

    def to_json(self) -> dict[str, str]:
        ref = {
            "kind": self.kind,
            "apiVersion": self.api_version,
            "namespace": self.namespace,
            "name": self.name,
        }
        if self.uid:
            ref["uid"] = self.uid
        return ref


@dataclass
class _Sent:
    message: str
    event_name: str
    count: int
    last: float


def _timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """See the module docstring."""

    def __init__(
        self,
        client: ClusterClient,
        *,
        component: str,
        instance: str,
        interval_s: float = 60.0,
        capacity: int = 10_000,
        backlog: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.component = component
        self.instance = instance
        self.interval_s = interval_s
        self.capacity = capacity
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._sent: OrderedDict[tuple[str, str], _Sent] = OrderedDict()
        self._serial = 0
        #: Events written (created or repeated), dropped by the rate limit, and
        #: dropped because the backlog was full.
        self.written = 0
        self.suppressed = 0
        self.dropped = 0
        self._backlog: queue.Queue[tuple[ObjectRef, EventType, str, str] | None] = queue.Queue(
            backlog
        )
        self._sender: threading.Thread | None = None

    def start(self) -> None:
        """Write Events from a thread of their own from now on."""
        if self._sender is None:
            self._sender = threading.Thread(target=self._send, name="events", daemon=True)
            self._sender.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Write what is waiting (for at most ``timeout_s``), then stop the thread."""
        sender = self._sender
        if sender is None:
            return
        with contextlib.suppress(queue.Full):  # then the daemon thread dies with the process
            self._backlog.put(None, timeout=timeout_s)
        sender.join(timeout_s)
        self._sender = None

    def _send(self) -> None:
        while True:
            item = self._backlog.get()
            if item is None:
                return
            with self._lock:
                self._emit(*item)

    def emit(self, ref: ObjectRef, event_type: EventType, reason: str, message: str) -> bool:
        """Record an Event unless the rate limit drops it.

        True when one was written (or, with the sender thread, queued for writing).
        """
        if self._sender is not None:
            try:
                self._backlog.put_nowait((ref, event_type, reason, message))
            except queue.Full:
                self.dropped += 1
                return False
            return True
        with self._lock:
            return self._emit(ref, event_type, reason, message)

    def _emit(self, ref: ObjectRef, event_type: EventType, reason: str, message: str) -> bool:
        text = message if len(message) <= MESSAGE_MAX else message[: MESSAGE_MAX - 3] + "..."
        key = (ref.uid or f"{ref.kind}/{ref.namespace}/{ref.name}", reason)
        now = self._clock()
        sent = self._sent.get(key)
        if sent is not None:
            self._sent.move_to_end(key)
            if sent.message == text:
                if now - sent.last < self.interval_s:
                    self.suppressed += 1
                    return False
                if self._repeat(ref, sent):
                    sent.count += 1
                    sent.last = now
                    self.written += 1
                    return True
        name = self._create(ref, event_type, reason, text)
        if name is None:
            return False
        self._sent[key] = _Sent(text, name, 1, now)
        self._sent.move_to_end(key)
        while len(self._sent) > self.capacity:
            self._sent.popitem(last=False)
        self.written += 1
        return True

    def _create(
        self, ref: ObjectRef, event_type: EventType, reason: str, message: str
    ) -> str | None:
        now = self._wall()
        self._serial += 1
        # Unique per object like client-go's <object>.<hex nanoseconds>.
        name = f"{ref.name}.{int(now.timestamp() * 1e9):x}{self._serial:x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ref.namespace},
            "involvedObject": ref.to_json(),
            "reason": reason,
            "message": message,
            "type": event_type,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": _timestamp(now),
            "lastTimestamp": _timestamp(now),
            "count": 1,
        }
        try:
            self.client.create("events", body)
        except ApiError as err:
            log.warning(
                "could not record an event",
                extra={"object": f"{ref.kind} {ref.namespace}/{ref.name}", "error": str(err)},
            )
            return None
        return name

    def _repeat(self, ref: ObjectRef, sent: _Sent) -> bool:
        patch = {"count": sent.count + 1, "lastTimestamp": _timestamp(self._wall())}
        try:
            self.client.patch("events", sent.event_name, patch, namespace=ref.namespace)
        except ApiError as err:
            # Gone (events expire) or refused: write a fresh one instead.
            log.debug("could not update an event", extra={"error": str(err)})
            return False
        return True
