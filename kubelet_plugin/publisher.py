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
  between: it lists again and retries, a few times
  (:func:`agent_kit.kube.retry_on_conflict`);
- after each write it compares what the server stored with what it sent, and
  reports fields the server dropped (e.g. ``taints`` or ``consumesCounters`` on
  a cluster with that feature off) instead of republishing them forever.

``run()`` keeps it so: sync, then watch the node's slices and sync again when
one of them is deleted (the kubelet wipes them when it starts) or differs
from the desired content, and after every watch timeout. Failures are logged
and retried with backoff until stopped (:func:`agent_kit.kube.retry_until_stopped`).

The API server is reached through :class:`kubelet_plugin.slice_client.SliceClient`,
typed calls over the agents' one API client; every API failure is an
:class:`agent_kit.kube.ApiError`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_kit.kube import ConflictError, NotFoundError, retry_on_conflict, retry_until_stopped
from api.errors import DraDriverError, InvalidInputError
from api.resource_v1 import DeviceTaint, OwnerReference, ResourceSlice, dump
from dra_driver.discovery.model import NodeInventory
from dra_driver.slices import DEFAULT_DRIVER_NAME, DeviceOrder, build_slices
from kubelet_plugin.slice_client import SliceClient, SliceEvent

__all__ = ["PublishResult", "SlicePublisher"]

log = logging.getLogger(__name__)


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
        client: SliceClient,
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
        self._withheld = False
        self._generation = 0
        # name -> (content we sent, content the server stored) at the last write.
        self._written: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        # name -> desired content at the current generation, for watch events.
        self._expected: dict[str, dict[str, Any]] = {}

    @property
    def generation(self) -> int:
        """The pool generation of the last successful sync (0 before the first)."""
        return self._generation

    @property
    def withheld(self) -> bool:
        """Whether the pool is published with no device (see :meth:`withhold`)."""
        return self._withheld

    def withhold(self, withheld: bool) -> None:
        """Publish the pool with no device from the next sync on (True), or every device
        again (False): another allocator (a device plugin) serves this node's GPUs."""
        with self._lock:
            self._withheld = withheld

    def _build(self, generation: int) -> list[ResourceSlice]:
        assert self._desired is not None
        inventory = self._desired.inventory
        if inventory.node_name != self.node_name:
            raise InvalidInputError(
                f"inventory is of node {inventory.node_name!r}, "
                f"the publisher of node {self.node_name!r}"
            )
        if self._withheld:
            inventory = dataclasses.replace(inventory, gpus=())
        return build_slices(
            inventory,
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
        """Make the API server hold the desired slices. Raises ApiError, InvalidInputError.

        Idempotent: a second call with nothing changed lists and writes nothing. A
        conflict or a vanished slice (someone else wrote in between) is retried from a
        new listing, at most ``max_attempts`` times in all; then the ConflictError or
        NotFoundError says so.
        """
        with self._lock:
            if self._desired is None:
                raise InvalidInputError("nothing to publish yet: call set_inventory first")
            try:
                return retry_on_conflict(
                    self._sync_once,
                    attempts=self._max_attempts,
                    errors=(ConflictError, NotFoundError),
                    on_retry=lambda err: log.info(
                        "node %s: %s; listing again", self.node_name, err
                    ),
                )
            except (ConflictError, NotFoundError) as err:
                raise type(err)(
                    f"node {self.node_name}: slices kept changing under us "
                    f"({self._max_attempts} attempts): {err}",
                    status=err.status,
                ) from None

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

    def needs_repair(self, event: SliceEvent) -> bool:
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
        retry_s: float = 1.0,
        max_retry_s: float = 30.0,
    ) -> None:
        """Sync, watch, repair, until ``stop`` is set. Never raises for API errors.

        A watch ends on a repair-worthy event, on its timeout (a periodic full
        resync) or on an error: logged, and retried after a backoff from ``retry_s``
        doubling up to ``max_retry_s`` (with jitter), back to ``retry_s`` once a
        sync and watch went through.
        """
        retrying = retry_until_stopped(
            stop,
            initial_s=retry_s,
            max_s=max_retry_s,
            errors=DraDriverError,
            on_retry=self._log_failure,
        )
        while not stop.is_set():
            try:
                retrying(self._sync_and_watch, stop, watch_timeout_s)
            except DraDriverError:
                return  # only when stop was set while failing

    def _log_failure(self, err: BaseException, attempt: int) -> None:
        log.warning(
            "node %s: publishing slices failed: %s; retrying (attempt %d)",
            self.node_name,
            err,
            attempt,
        )

    def _sync_and_watch(self, stop: threading.Event, watch_timeout_s: float) -> None:
        """One sync, then one watch until it ends or shows something to repair."""
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
                return
