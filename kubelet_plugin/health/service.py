"""Device health streamed to the kubelet: the ``DRAResourceHealth`` gRPC service, v1 and v1alpha1.

The kubelet opens ``NodeWatchResources`` after registration (and again every
few seconds while it fails) and shows what it receives in the pods'
``status.containerStatuses[].allocatedResourcesStatus``. Every message is the
complete list of the driver's devices on this node; a device missing from
the latest list, or not refreshed within its health timeout
(``health_check_timeout_seconds``, kubelet default 30 s), becomes ``Unknown``.

Both API versions are served, with the same messages: ``v1`` (kubelet 1.37 and
later prefer it) and ``v1alpha1`` (kubelets 1.36 and older; 1.37 to 1.39 keep it
as a fallback). A stream re-sends the latest snapshot, with a fresh
``last_updated``, whenever nothing changed for a third of the shortest health
timeout it announced, so the kubelet never reads a device as Unknown while the
plugin runs. A ``message`` is cut to at most 1,024 bytes of UTF-8 on a
character boundary, ending in ``...``: the kubelet cuts longer ones at byte
1,021, which may split a character.

Where health comes from is a :class:`HealthSource`: the servicer subscribes
once per stream and forwards each snapshot. :class:`HealthBroadcaster` is the
in-process implementation that a monitor (NVML events, the mock backend's
fault injection) feeds with :meth:`HealthBroadcaster.publish`.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

import grpc

from kubelet_plugin.proto_gen.dra_health.v1 import api_pb2 as health_pb2
from kubelet_plugin.proto_gen.dra_health.v1 import api_pb2_grpc as health_grpc
from kubelet_plugin.proto_gen.dra_health.v1alpha1 import api_pb2 as health_v1alpha1_pb2
from kubelet_plugin.proto_gen.dra_health.v1alpha1 import api_pb2_grpc as health_v1alpha1_grpc

_log = logging.getLogger(__name__)

MAX_MESSAGE_LENGTH: Final = 1024
"""Bytes of a ``DeviceHealth.message``; the kubelet cuts longer ones to 1021 + "..."."""
KUBELET_HEALTH_TIMEOUT_S: Final = 30
"""The kubelet's health timeout of a device announcing none (timeout 0)."""
RESENDS_PER_TIMEOUT: Final = 3
"""A stream re-sends this many times per health timeout when nothing changes."""


class Health(enum.Enum):
    """A device's health as the kubelet reports it in pod status."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    UNKNOWN = "Unknown"


_WIRE_HEALTH = {
    Health.HEALTHY: health_pb2.HEALTHY,
    Health.UNHEALTHY: health_pb2.UNHEALTHY,
    Health.UNKNOWN: health_pb2.UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """The health of one published device at one moment."""

    pool: str
    device: str
    health: Health
    last_updated: datetime
    """When the health was last established; must be timezone-aware."""
    message: str = ""
    """Detail for people (e.g. the XID that made the device unhealthy)."""
    timeout_seconds: int = 0
    """How long the kubelet trusts this entry without a refresh; 0 = its default."""

    def __post_init__(self) -> None:
        if self.last_updated.tzinfo is None:
            raise ValueError(
                f"device {self.pool}/{self.device}: last_updated must be timezone-aware "
                f"(got naive {self.last_updated.isoformat()}); use datetime.now(timezone.utc)"
            )
        if self.timeout_seconds < 0:
            raise ValueError(
                f"device {self.pool}/{self.device}: timeout_seconds must not be negative "
                f"(got {self.timeout_seconds}); use 0 for the kubelet's default"
            )


class HealthSubscription(Protocol):
    """One consumer's view of a :class:`HealthSource`.

    Iterating yields complete snapshots (every device of the driver on this
    node): the current one first, as soon as there is one, then one on every
    change. :meth:`next_snapshot` does the same with a bound on the wait.

    :meth:`close` may be called from any thread, also while another thread
    waits for the next snapshot; the iteration then ends promptly. Closing
    twice is harmless.
    """

    def __iter__(self) -> Iterator[Sequence[DeviceHealth]]: ...

    def next_snapshot(self, timeout_s: float | None) -> Sequence[DeviceHealth] | None:
        """The next snapshot; None when ``timeout_s`` passed first (None: no bound).

        Raises StopIteration once the subscription is closed.
        """
        ...

    def close(self) -> None: ...


class HealthSource(Protocol):
    """Where device health comes from (NVML events, the mock backend, a test)."""

    def subscribe(self) -> HealthSubscription:
        """A new, independent subscription; thread-safe."""
        ...


class HealthBroadcaster:
    """A :class:`HealthSource` that hands every published snapshot to all subscribers.

    A slow subscriber skips intermediate snapshots and gets the latest: each
    snapshot is complete, so nothing is lost but history, and memory stays
    bounded. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: tuple[DeviceHealth, ...] | None = None
        self._subscriptions: set[_BroadcastSubscription] = set()

    def publish(self, devices: Sequence[DeviceHealth]) -> None:
        """Make ``devices`` (the complete list) the current snapshot."""
        snapshot = tuple(devices)
        with self._lock:
            self._latest = snapshot
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.offer(snapshot)

    def subscribe(self) -> HealthSubscription:
        with self._lock:
            subscription = _BroadcastSubscription(self._latest, self._forget)
            self._subscriptions.add(subscription)
        return subscription

    @property
    def subscriber_count(self) -> int:
        """Subscriptions not closed yet."""
        with self._lock:
            return len(self._subscriptions)

    def _forget(self, subscription: _BroadcastSubscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)


class _BroadcastSubscription:
    def __init__(
        self,
        initial: tuple[DeviceHealth, ...] | None,
        forget: Callable[[_BroadcastSubscription], None],
    ) -> None:
        self._changed = threading.Condition()
        self._pending = initial
        self._closed = False
        self._forget = forget

    def offer(self, snapshot: tuple[DeviceHealth, ...]) -> None:
        with self._changed:
            self._pending = snapshot
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._forget(self)

    def __iter__(self) -> Iterator[Sequence[DeviceHealth]]:
        return self

    def __next__(self) -> Sequence[DeviceHealth]:
        snapshot = self.next_snapshot(None)
        assert snapshot is not None  # no bound: only a snapshot or the end
        return snapshot

    def next_snapshot(self, timeout_s: float | None) -> Sequence[DeviceHealth] | None:
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._pending is not None, timeout_s)
            if self._closed:
                raise StopIteration
            snapshot, self._pending = self._pending, None
            return snapshot


def truncate_message(message: str) -> str:
    """``message`` in at most :data:`MAX_MESSAGE_LENGTH` bytes of UTF-8, cut on a character
    boundary and ending in ``...`` when cut."""
    data = message.encode()
    if len(data) <= MAX_MESSAGE_LENGTH:
        return message
    # The cut may end inside a character: its partial bytes are dropped.
    return data[: MAX_MESSAGE_LENGTH - 3].decode(errors="ignore") + "..."


def to_wire(devices: Sequence[DeviceHealth]) -> health_pb2.NodeWatchResourcesResponse:
    """The v1 ``NodeWatchResourcesResponse`` for one snapshot."""
    response = health_pb2.NodeWatchResourcesResponse()
    for device in devices:
        response.devices.add(
            device=health_pb2.DeviceIdentifier(pool_name=device.pool, device_name=device.device),
            health=_WIRE_HEALTH[device.health],
            last_updated_time=int(device.last_updated.timestamp()),
            health_check_timeout_seconds=device.timeout_seconds,
            message=truncate_message(device.message),
        )
    return response


def to_wire_v1alpha1(
    devices: Sequence[DeviceHealth],
) -> health_v1alpha1_pb2.NodeWatchResourcesResponse:
    """The v1alpha1 form: the same message in the older package, byte for byte."""
    response = health_v1alpha1_pb2.NodeWatchResourcesResponse()
    response.ParseFromString(to_wire(devices).SerializeToString())
    return response


def resend_interval(devices: Sequence[DeviceHealth]) -> float:
    """Seconds a stream may stay quiet: a :data:`RESENDS_PER_TIMEOUT`-th of the shortest
    health timeout announced (the kubelet's default for a device announcing none)."""
    timeouts = [d.timeout_seconds or KUBELET_HEALTH_TIMEOUT_S for d in devices]
    return min(timeouts, default=KUBELET_HEALTH_TIMEOUT_S) / RESENDS_PER_TIMEOUT


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ResourceHealthServicer:
    """``DRAResourceHealth`` v1 and v1alpha1: one :class:`HealthSource` subscription per stream.

    A stream sends each snapshot the source yields, and the latest again with
    a fresh ``last_updated`` (from ``clock``) after :func:`resend_interval`
    without one. It ends when the kubelet cancels it, when the source's
    subscription ends, or on :meth:`close_streams` (the plugin is stopping);
    each way the subscription is closed and the gRPC worker thread released.
    """

    def __init__(self, source: HealthSource, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self._source = source
        self._clock = clock
        self._lock = threading.Lock()
        self._open: set[HealthSubscription] = set()

    def add_to_server(self, server: grpc.Server) -> None:
        """Serve both API versions on ``server``."""
        health_grpc.add_DRAResourceHealthServicer_to_server(_V1Servicer(self), server)
        health_v1alpha1_grpc.add_DRAResourceHealthServicer_to_server(
            _V1alpha1Servicer(self), server
        )

    def snapshots(
        self, context: grpc.ServicerContext, version: str
    ) -> Iterator[Sequence[DeviceHealth]]:
        """The snapshots one stream sends, re-sends included, until it ends."""
        subscription = self._source.subscribe()
        with self._lock:
            self._open.add(subscription)
        # Runs when the RPC ends for any reason, also while this thread is
        # blocked waiting for the next snapshot; False: it has ended already.
        if not context.add_callback(subscription.close):
            subscription.close()
        _log.info("kubelet opened a device health stream (%s)", version)
        latest: Sequence[DeviceHealth] | None = None
        try:
            while True:
                wait = None if latest is None else resend_interval(latest)
                try:
                    snapshot = subscription.next_snapshot(wait)
                except StopIteration:
                    return
                if snapshot is None and latest is not None:
                    now = self._clock()
                    snapshot = [dataclasses.replace(d, last_updated=now) for d in latest]
                if snapshot is not None:
                    latest = snapshot
                    yield snapshot
        finally:
            subscription.close()
            with self._lock:
                self._open.discard(subscription)
            _log.info("device health stream closed (%s)", version)

    def close_streams(self) -> None:
        """End every open stream (the plugin is stopping)."""
        with self._lock:
            subscriptions = list(self._open)
        for subscription in subscriptions:
            subscription.close()


class _V1Servicer(health_grpc.DRAResourceHealthServicer):
    def __init__(self, streams: ResourceHealthServicer) -> None:
        self._streams = streams

    def NodeWatchResources(  # noqa: N802 - the gRPC method name
        self, request: health_pb2.NodeWatchResourcesRequest, context: grpc.ServicerContext
    ) -> Iterator[health_pb2.NodeWatchResourcesResponse]:
        for snapshot in self._streams.snapshots(context, "v1"):
            yield to_wire(snapshot)


class _V1alpha1Servicer(health_v1alpha1_grpc.DRAResourceHealthServicer):
    def __init__(self, streams: ResourceHealthServicer) -> None:
        self._streams = streams

    def NodeWatchResources(  # noqa: N802 - the gRPC method name
        self,
        request: health_v1alpha1_pb2.NodeWatchResourcesRequest,
        context: grpc.ServicerContext,
    ) -> Iterator[health_v1alpha1_pb2.NodeWatchResourcesResponse]:
        for snapshot in self._streams.snapshots(context, "v1alpha1"):
            yield to_wire_v1alpha1(snapshot)
