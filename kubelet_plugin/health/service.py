"""Device health streamed to the kubelet: the ``v1alpha1.DRAResourceHealth`` gRPC service.

The kubelet opens ``NodeWatchResources`` after registration (and again every
few seconds while it fails) and shows what it receives in the pods'
``status.containerStatuses[].allocatedResourcesStatus``. Every message is the
complete list of the driver's devices on this node; a device missing from
the latest list, or not refreshed within its health timeout (kubelet
default 30 s), becomes ``Unknown``.

Where health comes from is a :class:`HealthSource`: the servicer subscribes
once per stream and forwards each snapshot. :class:`HealthBroadcaster` is the
in-process implementation that a monitor (NVML events, the mock backend's
fault injection) feeds with :meth:`HealthBroadcaster.publish`.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import grpc

from kubelet_plugin.proto_gen.dra_health.v1alpha1 import api_pb2 as health_pb2
from kubelet_plugin.proto_gen.dra_health.v1alpha1 import api_pb2_grpc as health_grpc

_log = logging.getLogger(__name__)

MAX_MESSAGE_LENGTH = 1024
"""The kubelet truncates longer ``DeviceHealth.message`` values (to 1021 + "...")."""


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
    change. A source whose devices do not change should still yield a fresh
    snapshot (with a new ``last_updated``) well within the devices' health
    timeout, or the kubelet marks them Unknown.

    :meth:`close` may be called from any thread, also while another thread
    waits in ``next()``; the iteration then ends promptly. Closing twice is
    harmless.
    """

    def __iter__(self) -> Iterator[Sequence[DeviceHealth]]: ...

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
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._pending is not None)
            if self._closed or self._pending is None:
                raise StopIteration
            snapshot, self._pending = self._pending, None
            return snapshot


def to_wire(devices: Sequence[DeviceHealth]) -> health_pb2.NodeWatchResourcesResponse:
    """The ``NodeWatchResourcesResponse`` for one snapshot."""
    response = health_pb2.NodeWatchResourcesResponse()
    for device in devices:
        message = device.message
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
        response.devices.add(
            device=health_pb2.DeviceIdentifier(pool_name=device.pool, device_name=device.device),
            health=_WIRE_HEALTH[device.health],
            last_updated_time=int(device.last_updated.timestamp()),
            health_check_timeout_seconds=device.timeout_seconds,
            message=message,
        )
    return response


class ResourceHealthServicer(health_grpc.DRAResourceHealthServicer):
    """``v1alpha1.DRAResourceHealth``: one :class:`HealthSource` subscription per stream.

    A stream ends when the kubelet cancels it, when the source's subscription
    ends, or on :meth:`close_streams` (the plugin is stopping); each way the
    subscription is closed and the gRPC worker thread released.
    """

    def __init__(self, source: HealthSource) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._open: set[HealthSubscription] = set()

    def NodeWatchResources(  # noqa: N802 - the gRPC method name
        self, request: health_pb2.NodeWatchResourcesRequest, context: grpc.ServicerContext
    ) -> Iterator[health_pb2.NodeWatchResourcesResponse]:
        subscription = self._source.subscribe()
        with self._lock:
            self._open.add(subscription)
        # Runs when the RPC ends for any reason, also while this thread is
        # blocked waiting for the next snapshot; False: it has ended already.
        if not context.add_callback(subscription.close):
            subscription.close()
        _log.info("kubelet opened a device health stream")
        try:
            for snapshot in subscription:
                yield to_wire(snapshot)
        finally:
            subscription.close()
            with self._lock:
                self._open.discard(subscription)
            _log.info("device health stream closed")

    def close_streams(self) -> None:
        """End every open stream (the plugin is stopping)."""
        with self._lock:
            subscriptions = list(self._open)
        for subscription in subscriptions:
            subscription.close()
