"""Publishing the node's ResourceSlices and keeping them published.

:class:`SlicePublisher` owns the node's pool (pool name = node name) for one
driver. It plans the slices with :func:`dra_driver.slices.build_slices`, and
``sync()`` makes the API server hold exactly those:

- it lists the slices of this node and driver, and does nothing when every
  one of them already has the desired content at one common generation;
- otherwise it picks a generation above every generation seen, deletes
  obsolete slices first, then updates (with the listed resourceVersion) or
  creates the others, all at the new generation with the right
  ``resourceSliceCount``;
- a conflict (409) or a vanished object (404) means someone else wrote in
  between: it lists again and retries, a few times;
- after each write it compares what the server stored with what it sent, and
  reports fields the server dropped (e.g. ``taints`` or ``consumesCounters`` on
  a cluster with that feature off) instead of republishing them forever.

``run()`` keeps it so: sync, then watch the node's slices and sync again when
one of them is deleted (the kubelet wipes them when it starts) or differs
from the desired content, and after every watch timeout.

The API server is reached through the small :class:`ResourceSliceClient`
port: :class:`KubernetesSliceClient` for a real cluster, :class:`FakeSliceClient`
(in memory, with resource versions, watch events, dropped fields and injected
failures) for tests.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from urllib3.exceptions import HTTPError

from api.errors import DraDriverError, InvalidInputError
from api.resource_v1 import (
    DeviceTaint,
    OwnerReference,
    ResourceSlice,
    dump,
)
from dra_driver.discovery.model import NodeInventory
from dra_driver.slices import DEFAULT_DRIVER_NAME, DeviceOrder, build_slices

__all__ = [
    "FakeSliceClient",
    "KubernetesSliceClient",
    "PublishResult",
    "ResourceSliceClient",
    "SliceApiError",
    "SliceList",
    "SlicePublisher",
    "WatchEvent",
]

log = logging.getLogger(__name__)

HTTP_NOT_FOUND: Final = 404
HTTP_CONFLICT: Final = 409
HTTP_GONE: Final = 410

WatchEventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]


class SliceApiError(DraDriverError):
    """A ResourceSlice call to the API server failed.

    ``status`` is the HTTP status (409 conflict, 404 not found, 410 a watch
    too old to resume, 0 no answer at all). The publisher retries conflicts
    and vanished objects itself; everything else reaches ``run()``, which logs
    it and tries again later, so ``retryable`` is true.
    """

    retryable = True

    def __init__(self, message: str, *, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SliceList:
    """The node's slices and the resourceVersion to watch from."""

    items: list[ResourceSlice]
    resource_version: str


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: WatchEventType
    slice: ResourceSlice | None
    """None for BOOKMARK events."""
    resource_version: str | None = None


class ResourceSliceClient(Protocol):
    """The ResourceSlice calls the publisher needs. Every method raises SliceApiError."""

    def list_slices(self, *, node_name: str, driver_name: str) -> SliceList:
        """Slices with ``spec.nodeName == node_name`` and ``spec.driver == driver_name``."""
        ...

    def create_slice(self, slice_: ResourceSlice) -> ResourceSlice:
        """Create; the stored object is returned. 409 when the name is taken."""
        ...

    def update_slice(self, slice_: ResourceSlice) -> ResourceSlice:
        """Replace, guarded by ``metadata.resourceVersion``: 409 when it is stale, 404 when gone."""
        ...

    def delete_slice(self, name: str) -> None:
        """Delete; a slice that is already gone is not an error."""
        ...

    def watch_slices(
        self, *, node_name: str, driver_name: str, resource_version: str, timeout_s: float
    ) -> Iterator[WatchEvent]:
        """Changes after ``resource_version`` until ``timeout_s`` passes; 410 when too old."""
        ...


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What one ``sync()`` did."""

    generation: int
    resource_version: str
    """Of the listing the sync started from: a watch from here sees the sync's own writes."""
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    dropped_fields: tuple[str, ...] = ()
    """``<slice>: <field path>`` of everything the server did not store."""

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


# --- Content comparison ----------------------------------------------------------------


def _strip_time_added(value: Any) -> Any:
    """The server fills in taints' ``timeAdded``; it is not part of what we publish."""
    if isinstance(value, dict):
        return {k: _strip_time_added(v) for k, v in value.items() if k != "timeAdded"}
    if isinstance(value, list):
        return [_strip_time_added(v) for v in value]
    return value


def _content(slice_: ResourceSlice) -> dict[str, Any]:
    """What the publisher owns of a slice, generation aside: spec and owner references.

    The generation is compared on its own: it changes on every publish while
    the content it stamps may not.
    """
    data = dump(slice_)
    spec = dict(data.get("spec") or {})
    spec["pool"] = {k: v for k, v in (spec.get("pool") or {}).items() if k != "generation"}
    content: dict[str, Any] = _strip_time_added(
        {"spec": spec, "ownerReferences": data.get("metadata", {}).get("ownerReferences")}
    )
    return content


def _missing_paths(sent: Any, stored: Any, path: str = "") -> list[str]:
    """Paths present in ``sent`` but absent from ``stored`` (fields a server dropped)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path or "."]
        out: list[str] = []
        for key, value in sent.items():
            child = f"{path}.{key}" if path else key
            if key not in stored:
                out.append(child)
            else:
                out.extend(_missing_paths(value, stored[key], child))
        return out
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [path]
        out = []
        for i, (a, b) in enumerate(zip(sent, stored, strict=True)):
            out.extend(_missing_paths(a, b, f"{path}[{i}]"))
        return out
    return [] if sent == stored else [path]


# --- The publisher ---------------------------------------------------------------------


@dataclass
class _Desired:
    inventory: NodeInventory
    taints: Mapping[str, Sequence[DeviceTaint]] = field(default_factory=dict)


class SlicePublisher:
    """Publishes one node's pool and repairs it. Thread-safe: syncs are serialised."""

    def __init__(
        self,
        client: ResourceSliceClient,
        *,
        node_name: str,
        driver_name: str = DEFAULT_DRIVER_NAME,
        device_order: DeviceOrder = "index",
        partitionable: bool = True,
        shared_gpus: bool = False,
        node_uid: str | None = None,
        max_attempts: int = 5,
    ) -> None:
        """``node_uid``, when known, makes the Node the slices' controller owner, so
        deleting the Node garbage-collects them."""
        self._client = client
        self.node_name = node_name
        self.driver_name = driver_name
        self._device_order: DeviceOrder = device_order
        self._partitionable = partitionable
        self._shared_gpus = shared_gpus
        self._owner = (
            OwnerReference(
                api_version="v1", kind="Node", name=node_name, uid=node_uid, controller=True
            )
            if node_uid
            else None
        )
        self._max_attempts = max(1, max_attempts)
        self._lock = threading.RLock()
        self._desired: _Desired | None = None
        self._generation = 0
        # name -> (content we sent, content the server stored) at the last write.
        self._written: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        # name -> desired content at the current generation, for watch events.
        self._expected: dict[str, dict[str, Any]] = {}

    @property
    def generation(self) -> int:
        """The pool generation of the last successful sync (0 before the first)."""
        return self._generation

    def _build(self, generation: int) -> list[ResourceSlice]:
        assert self._desired is not None
        if self._desired.inventory.node_name != self.node_name:
            raise InvalidInputError(
                f"inventory is of node {self._desired.inventory.node_name!r}, "
                f"the publisher of node {self.node_name!r}"
            )
        return build_slices(
            self._desired.inventory,
            driver_name=self.driver_name,
            device_order=self._device_order,
            generation=generation,
            taints=self._desired.taints,
            partitionable=self._partitionable,
            shared_gpus=self._shared_gpus,
            owner=self._owner,
        )

    def set_inventory(
        self,
        inventory: NodeInventory,
        taints: Mapping[str, Sequence[DeviceTaint]] | None = None,
    ) -> None:
        """Replace the desired state; the next ``sync()`` publishes it."""
        with self._lock:
            self._desired = _Desired(inventory, dict(taints or {}))

    def publish(
        self,
        inventory: NodeInventory,
        taints: Mapping[str, Sequence[DeviceTaint]] | None = None,
    ) -> PublishResult:
        """``set_inventory`` and ``sync`` in one step."""
        with self._lock:
            self.set_inventory(inventory, taints)
            return self.sync()

    def _matches(self, name: str, stored: dict[str, Any], desired: dict[str, Any]) -> bool:
        """Whether a stored slice's content is what we want there (contents from _content)."""
        if stored == desired:
            return True
        # The server drops fields it does not serve; what it kept of our last
        # identical write is as good as it gets.
        sent, kept = self._written.get(name, (None, None))
        return sent == desired and kept == stored

    def sync(self) -> PublishResult:
        """Make the API server hold the desired slices. Raises SliceApiError, InvalidInputError.

        Idempotent: a second call with nothing changed lists and writes nothing.
        """
        with self._lock:
            if self._desired is None:
                raise InvalidInputError("nothing to publish yet: call set_inventory first")
            for attempt in range(1, self._max_attempts + 1):
                try:
                    return self._sync_once()
                except SliceApiError as err:
                    if err.status not in (HTTP_CONFLICT, HTTP_NOT_FOUND):
                        raise
                    if attempt == self._max_attempts:
                        raise SliceApiError(
                            f"node {self.node_name}: slices kept changing under us "
                            f"({attempt} attempts): {err}",
                            status=err.status,
                        ) from None
                    log.info("node %s: %s; listing again", self.node_name, err)
            raise AssertionError("unreachable")

    def _sync_once(self) -> PublishResult:
        listing = self._client.list_slices(node_name=self.node_name, driver_name=self.driver_name)
        existing = {s.metadata.name or "": s for s in listing.items}
        generations = {s.spec.pool.generation for s in listing.items}
        desired = self._build(max(generations, default=1))
        wanted = {s.metadata.name or "": _content(s) for s in desired}
        if (
            len(generations) == 1
            and set(existing) == set(wanted)
            and all(
                self._matches(name, _content(existing[name]), content)
                for name, content in wanted.items()
            )
        ):
            (current,) = generations
            self._generation = current
            self._expected = wanted
            return PublishResult(generation=current, resource_version=listing.resource_version)

        generation = max([self._generation, *generations]) + 1
        for slice_ in desired:
            slice_.spec.pool.generation = generation
        self._expected = wanted
        deleted: list[str] = []
        for name in sorted(set(existing) - set(wanted)):
            # Obsolete slices go first, so a consumer never sees two of ours
            # with the same device at the new generation.
            self._client.delete_slice(name)
            self._written.pop(name, None)
            deleted.append(name)
        created: list[str] = []
        updated: list[str] = []
        dropped: list[str] = []
        for slice_ in desired:
            name = slice_.metadata.name or ""
            if name in existing:
                slice_.metadata.resource_version = existing[name].metadata.resource_version
                stored = self._client.update_slice(slice_)
                updated.append(name)
            else:
                stored = self._client.create_slice(slice_)
                created.append(name)
            sent, kept = wanted[name], _content(stored)
            self._written[name] = (sent, kept)
            dropped.extend(f"{name}: {path}" for path in _missing_paths(sent, kept))
        if dropped:
            log.warning(
                "node %s: the API server did not store %s (a feature gate off?); "
                "devices relying on them are published without",
                self.node_name,
                ", ".join(dropped),
            )
        self._generation = generation
        log.info(
            "node %s: published pool generation %d (%d created, %d updated, %d deleted)",
            self.node_name,
            generation,
            len(created),
            len(updated),
            len(deleted),
        )
        return PublishResult(
            generation=generation,
            resource_version=listing.resource_version,
            created=tuple(created),
            updated=tuple(updated),
            deleted=tuple(deleted),
            dropped_fields=tuple(dropped),
        )

    def needs_repair(self, event: WatchEvent) -> bool:
        """Whether a watch event shows the pool differs from what the last sync published."""
        if event.type == "BOOKMARK" or event.slice is None:
            return False
        with self._lock:
            name = event.slice.metadata.name or ""
            expected = self._expected.get(name)
            if event.type == "DELETED":
                return expected is not None
            if expected is None:
                return True  # a slice of ours that should not exist
            if event.slice.spec.pool.generation != self._generation:
                return True
            return not self._matches(name, _content(event.slice), expected)

    def run(
        self,
        stop: threading.Event,
        *,
        watch_timeout_s: float = 300.0,
        retry_s: float = 5.0,
    ) -> None:
        """Sync, watch, repair, until ``stop`` is set. Never raises for API errors.

        A watch ends on a repair-worthy event, on its timeout (a periodic full
        resync) or on an error (logged; retried after ``retry_s``).
        """
        while not stop.is_set():
            try:
                result = self.sync()
                for event in self._client.watch_slices(
                    node_name=self.node_name,
                    driver_name=self.driver_name,
                    resource_version=result.resource_version,
                    timeout_s=watch_timeout_s,
                ):
                    if stop.is_set():
                        return
                    if self.needs_repair(event):
                        name = event.slice.metadata.name if event.slice else "?"
                        log.info(
                            "node %s: slice %s was %s; republishing",
                            self.node_name,
                            name,
                            event.type.lower(),
                        )
                        break
            except DraDriverError as err:
                log.warning("node %s: publishing slices failed: %s", self.node_name, err)
                stop.wait(retry_s)


# --- The fake ----------------------------------------------------------------------------


def _wire(slice_: ResourceSlice) -> dict[str, Any]:
    # Through JSON, like a real server: the caller's object is never shared.
    return json.loads(json.dumps(dump(slice_)))  # type: ignore[no-any-return]


class FakeSliceClient:
    """An in-memory API server for ResourceSlices, for tests and offline runs.

    Behaves like the real one where the publisher can tell: resource versions
    (one counter for all writes), uids, 409 on create of a taken name and on a
    stale update, 404 on update of a missing slice, watch events in write
    order, 410 for a watch older than ``compact()``, ``timeAdded`` stamped on
    taints. ``drop_device_fields``
    mimics a server with a feature gate off: those device fields are not
    stored. ``fail_next`` makes the next calls of one method fail.
    """

    def __init__(self, *, drop_device_fields: Sequence[str] = ()) -> None:
        self._objects: dict[str, dict[str, Any]] = {}
        self._events: list[tuple[int, WatchEventType, dict[str, Any]]] = []
        self._rv = itertools.count(1)
        self._last_rv = 0
        self._compacted = 0
        self._failures: dict[str, list[int]] = {}
        self._drop = frozenset(drop_device_fields)
        self._cond = threading.Condition()
        #: What the fake server writes into a taint's empty ``timeAdded``.
        self.now = "2026-01-01T00:00:00Z"
        #: Method names in call order, for tests that count round trips.
        self.calls: list[str] = []

    # --- test controls --------------------------------------------------------------

    def fail_next(self, method: str, status: int, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` (e.g. ``"update_slice"``) fail."""
        with self._cond:
            self._failures.setdefault(method, []).extend([status] * times)

    def compact(self) -> None:
        """Forget events so far: a watch from an older resourceVersion gets 410."""
        with self._cond:
            self._compacted = self._last_rv

    def get(self, name: str) -> ResourceSlice | None:
        with self._cond:
            data = self._objects.get(name)
            return ResourceSlice.model_validate(data) if data is not None else None

    @property
    def names(self) -> list[str]:
        with self._cond:
            return sorted(self._objects)

    # --- internals ------------------------------------------------------------------

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        pending = self._failures.get(method)
        if pending:
            status = pending.pop(0)
            raise SliceApiError(f"{method}: injected failure (HTTP {status})", status=status)

    def _record(self, kind: WatchEventType, data: dict[str, Any]) -> None:
        rv = next(self._rv)
        self._last_rv = rv
        if kind != "DELETED":
            data["metadata"]["resourceVersion"] = str(rv)
        self._events.append((rv, kind, json.loads(json.dumps(data))))
        self._cond.notify_all()

    def _store(self, slice_: ResourceSlice, uid: str) -> dict[str, Any]:
        data = _wire(slice_)
        data["metadata"]["uid"] = uid
        for device in data.get("spec", {}).get("devices") or []:
            for name in self._drop:
                device.pop(name, None)
            for taint in device.get("taints") or []:
                # The API server stamps taints it receives without a time.
                taint.setdefault("timeAdded", self.now)
        return data

    # --- ResourceSliceClient --------------------------------------------------------

    def list_slices(self, *, node_name: str, driver_name: str) -> SliceList:
        with self._cond:
            self._enter("list_slices")
            items = [
                ResourceSlice.model_validate(data)
                for name, data in sorted(self._objects.items())
                if data["spec"].get("nodeName") == node_name
                and data["spec"].get("driver") == driver_name
            ]
            return SliceList(items=items, resource_version=str(self._last_rv))

    def create_slice(self, slice_: ResourceSlice) -> ResourceSlice:
        with self._cond:
            self._enter("create_slice")
            name = slice_.metadata.name or ""
            if name in self._objects:
                raise SliceApiError(f'resourceslices "{name}" already exists', status=HTTP_CONFLICT)
            data = self._store(slice_, str(uuid.uuid4()))
            self._objects[name] = data
            self._record("ADDED", data)
            return ResourceSlice.model_validate(data)

    def update_slice(self, slice_: ResourceSlice) -> ResourceSlice:
        with self._cond:
            self._enter("update_slice")
            name = slice_.metadata.name or ""
            current = self._objects.get(name)
            if current is None:
                raise SliceApiError(f'resourceslices "{name}" not found', status=HTTP_NOT_FOUND)
            if slice_.metadata.resource_version != current["metadata"]["resourceVersion"]:
                raise SliceApiError(
                    f'Operation cannot be fulfilled on resourceslices "{name}": '
                    "the object has been modified",
                    status=HTTP_CONFLICT,
                )
            data = self._store(slice_, current["metadata"]["uid"])
            self._objects[name] = data
            self._record("MODIFIED", data)
            return ResourceSlice.model_validate(data)

    def delete_slice(self, name: str) -> None:
        with self._cond:
            self._enter("delete_slice")
            data = self._objects.pop(name, None)
            if data is not None:
                self._record("DELETED", data)

    def watch_slices(
        self, *, node_name: str, driver_name: str, resource_version: str, timeout_s: float
    ) -> Iterator[WatchEvent]:
        with self._cond:
            self._enter("watch_slices")
            position = int(resource_version or 0)
            if position < self._compacted:
                raise SliceApiError(
                    f"too old resource version: {position} ({self._compacted})", status=HTTP_GONE
                )
        deadline_waits = 0
        while True:
            with self._cond:
                pending = [e for e in self._events if e[0] > position]
                if not pending:
                    # One wait for the timeout: a fake need not be exact about time.
                    if deadline_waits or timeout_s <= 0:
                        return
                    deadline_waits += 1
                    self._cond.wait(timeout_s)
                    continue
            for rv, kind, data in pending:
                position = rv
                spec = data.get("spec", {})
                if spec.get("nodeName") != node_name or spec.get("driver") != driver_name:
                    continue
                yield WatchEvent(kind, ResourceSlice.model_validate(data), str(rv))


# --- The real client -----------------------------------------------------------------------


def _lines(response: Any) -> Iterator[str]:
    """The lines of a streamed HTTP body (one JSON watch event each)."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode("utf-8")
    if buffer:
        yield buffer.decode("utf-8")


def _decode(what: str, data: Any) -> ResourceSlice:
    try:
        return ResourceSlice.model_validate(data)
    except ValueError as err:
        raise SliceApiError(
            f"{what}: the API server returned a slice that does not decode: {err}"
        ) from None


class KubernetesSliceClient:
    """ResourceSlices through the official client's ``ResourceV1Api``.

    Objects travel as raw JSON decoded by this project's models (not the
    client's), so what the server stored is compared field by field.
    """

    def __init__(self, api_client: Any = None, *, timeout_s: float = 30.0, api: Any = None) -> None:
        """``api_client``: a configured ``kubernetes.client.ApiClient``; ``api`` overrides
        the ``ResourceV1Api`` built from it (tests pass a stand-in)."""
        if api is None:
            from kubernetes import client

            api = client.ResourceV1Api(api_client)
        self._api = api
        self._timeout_s = timeout_s

    @staticmethod
    def _selector(node_name: str, driver_name: str) -> str:
        return f"spec.nodeName={node_name},spec.driver={driver_name}"

    def _raw(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            response = call(
                *args, _preload_content=False, _request_timeout=self._timeout_s, **kwargs
            )
            return json.loads(response.data)
        except ApiException as err:
            raise SliceApiError(
                f"{what}: {err.status} {err.reason}", status=err.status or 0
            ) from None
        except (OSError, ValueError, HTTPError) as err:
            # No answer (urllib3's HTTPError, e.g. MaxRetryError on a refused or
            # dropped connection, is not an OSError) or a body that is not JSON.
            raise SliceApiError(f"{what}: {err}") from None

    @staticmethod
    def _body(slice_: ResourceSlice) -> Any:
        from kubernetes import client

        return client.V1ResourceSlice.from_dict(dump(slice_))

    def list_slices(self, *, node_name: str, driver_name: str) -> SliceList:
        data = self._raw(
            "list resourceslices",
            self._api.list_resource_slice,
            field_selector=self._selector(node_name, driver_name),
        )
        items = [_decode("list resourceslices", item) for item in data.get("items") or []]
        return SliceList(items=items, resource_version=str(data["metadata"]["resourceVersion"]))

    def create_slice(self, slice_: ResourceSlice) -> ResourceSlice:
        data = self._raw(
            f"create resourceslice {slice_.metadata.name}",
            self._api.create_resource_slice,
            body=self._body(slice_),
        )
        return _decode(f"create resourceslice {slice_.metadata.name}", data)

    def update_slice(self, slice_: ResourceSlice) -> ResourceSlice:
        data = self._raw(
            f"update resourceslice {slice_.metadata.name}",
            self._api.replace_resource_slice,
            name=slice_.metadata.name,
            body=self._body(slice_),
        )
        return _decode(f"update resourceslice {slice_.metadata.name}", data)

    def delete_slice(self, name: str) -> None:
        try:
            self._raw(f"delete resourceslice {name}", self._api.delete_resource_slice, name=name)
        except SliceApiError as err:
            if err.status != HTTP_NOT_FOUND:
                raise

    def watch_slices(
        self, *, node_name: str, driver_name: str, resource_version: str, timeout_s: float
    ) -> Iterator[WatchEvent]:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self._api.list_resource_slice(
                field_selector=self._selector(node_name, driver_name),
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                watch=True,
                timeout_seconds=max(1, int(timeout_s)),
                _preload_content=False,
                # The server ends the watch at timeout_seconds; this only guards a dead link.
                _request_timeout=timeout_s + self._timeout_s,
            )
        except ApiException as err:
            raise SliceApiError(
                f"watch resourceslices: {err.status} {err.reason}", status=err.status or 0
            ) from None
        except (OSError, HTTPError) as err:
            raise SliceApiError(f"watch resourceslices: {err}") from None
        try:
            for line in _lines(response):
                if not line:
                    continue
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    raise SliceApiError(
                        f"watch resourceslices: {obj.get('code')} {obj.get('message')}",
                        status=int(obj.get("code") or 0),
                    )
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind == "BOOKMARK":
                    yield WatchEvent("BOOKMARK", None, rv)
                elif kind in ("ADDED", "MODIFIED", "DELETED"):
                    yield WatchEvent(kind, _decode("watch resourceslices", obj), rv)
        except (OSError, ValueError, HTTPError) as err:
            # A stream cut short (API server restart, dropped connection) is a
            # ProtocolError: end this watch, the publisher lists and watches again.
            raise SliceApiError(f"watch resourceslices: {err}") from None
        finally:
            response.close()
            response.release_conn()
