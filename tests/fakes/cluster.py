"""An in-memory API server: :class:`FakeCluster`, the test double of the cluster port.

:class:`FakeCluster` implements :class:`~agent_kit.kube.ClusterClient`.

It keeps the REST semantics the controller depends on, so unit tests exercise
the same code paths a real API server drives:

- one resourceVersion counter for every object (a string on the wire, as the
  real server's), bumped on every write; lists carry the current version;
- ``replace`` / ``replace_status`` / ``patch`` guarded by
  ``metadata.resourceVersion`` (409 Conflict when stale, 404 when gone);
  ``create`` answers 409 AlreadyExists for a taken name;
- a status subresource for ResourceClaims: ``replace`` keeps the stored
  status, ``replace_status`` keeps the stored spec and metadata; a claim's
  ``spec`` is immutable and ``status.allocation``, once set, may only be
  removed (422 Invalid otherwise), as the real validation says;
- pods' scheduling gates can only be removed (422 when a patch adds one);
- device taints of ResourceSlices written without ``timeAdded`` get one, as the
  real server stamps them;
- deletion of an object with finalizers only sets ``deletionTimestamp``;
- watches replay the changes after a version from a bounded history; a
  version older than the history answers 410 Gone (:meth:`compact` drops the
  history to provoke that); a field or label selector turns an object that
  stops matching into a DELETED event, as the real watch cache does.

Test controls: :meth:`fail` injects HTTP errors into the next matching calls,
:meth:`before` runs a callback before a write (e.g. a competing writer, to
provoke a conflict), :meth:`drop_fields` makes it a server that does not know
some fields (a feature gate off: they are not stored), :attr:`calls` records
every call in order, :meth:`put` and :meth:`remove` change objects as another
client would.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from agent_kit.kube import (
    RESOURCES,
    ConflictError,
    GoneError,
    InvalidError,
    NotFoundError,
    ObjectList,
    Resource,
    UnavailableError,
    WatchEvent,
    WatchEventType,
    api_error,
)

__all__ = ["Call", "FakeCluster", "merge_patch"]

#: Metadata only the server sets.
_SERVER_FIELDS: Final = ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp")
_Key = tuple[str, str | None, str]


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded call: verb (list, watch, get, create, replace, replace_status,
    patch, delete), resource, namespace and name (empty for list and watch)."""

    verb: str
    resource: str
    namespace: str | None
    name: str


@dataclass
class _Fault:
    verb: str
    resource: str
    status: int
    times: int
    name: str | None
    message: str = ""


@dataclass(frozen=True, slots=True)
class _Change:
    rv: int
    resource: str
    type: str
    obj: dict[str, Any]
    previous: dict[str, Any] | None


@dataclass
class _Hook:
    verb: str
    resource: str
    callback: Callable[[], None]
    times: int
    name: str | None = None
    fired: int = field(default=0)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: ``null`` deletes, objects merge, the rest replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _lookup(obj: Mapping[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _field_matches(obj: Mapping[str, Any], selector: str | None) -> bool:
    for raw in (selector or "").split(","):
        clause = raw.strip()
        if not clause:
            continue
        if "!=" in clause:
            path, value = clause.split("!=", 1)
            if (_lookup(obj, path.strip()) or "") == value.strip():
                return False
        else:
            path, value = clause.replace("==", "=").split("=", 1)
            if (_lookup(obj, path.strip()) or "") != value.strip():
                return False
    return True


def _label_matches(obj: Mapping[str, Any], selector: str | None) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for raw in (selector or "").split(","):
        clause = raw.strip()
        if not clause:
            continue
        if "!=" in clause:
            key, value = clause.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in clause:
            key, value = clause.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif clause.startswith("!"):
            if clause[1:] in labels:
                return False
        elif clause not in labels:
            return False
    return True


def _prune(value: Any, path: Sequence[str]) -> None:
    """Remove the field at ``path`` (``name[]`` steps into each element of a list)."""
    if not path or not isinstance(value, dict):
        return
    step, rest = path[0], path[1:]
    if step.endswith("[]"):
        items = value.get(step[:-2])
        for item in items if isinstance(items, list) else []:
            _prune(item, rest)
    elif not rest:
        value.pop(step, None)
    else:
        _prune(value.get(step), rest)


def _gates(pod: Mapping[str, Any]) -> set[str]:
    return {str(g.get("name")) for g in (pod.get("spec") or {}).get("schedulingGates") or []}


class FakeCluster:
    """In-memory :class:`~agent_kit.kube.ClusterClient` (see the module docstring).

    Thread-safe: reflectors watch from their threads while tests write.
    """

    def __init__(self, *, history: int = 100_000) -> None:
        self._cond = threading.Condition()
        self._rv = 0
        self._uid = 0
        self._objects: dict[_Key, dict[str, Any]] = {}
        self._log: list[_Change] = []
        self._history = history
        #: Changes at or below this version are no longer replayed (410 Gone).
        self._compacted = 0
        self._faults: list[_Fault] = []
        self._hooks: list[_Hook] = []
        self._unknown: dict[str, list[list[str]]] = {}
        self._closed = False
        self.calls: list[Call] = []

    # -- test controls -----------------------------------------------------------------

    def fail(
        self,
        verb: str,
        resource: str,
        status: int,
        *,
        times: int = 1,
        name: str | None = None,
        message: str = "",
    ) -> None:
        """The next ``times`` calls of ``verb`` on ``resource`` (and ``name``) raise
        ApiError(status).

        ``verb`` ``*`` matches every verb. Status 0 is "no answer". ``message``: the
        server's words, appended to the error.
        """
        with self._cond:
            self._faults.append(_Fault(verb, resource, status, times, name, message))

    def before(
        self,
        verb: str,
        resource: str,
        callback: Callable[[], None],
        *,
        times: int = 1,
        name: str | None = None,
    ) -> None:
        """Run ``callback`` before the next ``times`` writes ``verb`` on ``resource``.

        The callback may write to the cluster itself (as a competing client).
        """
        with self._cond:
            self._hooks.append(_Hook(verb, resource, callback, times, name))

    def drop_fields(self, resource: Resource, *paths: str) -> None:
        """From now on, writes of ``resource`` do not store the fields at ``paths``, as a
        server that does not serve them (a feature gate off) drops them silently.

        A path is dotted; ``name[]`` means each element of the list ``name``:
        ``spec.devices[].taints``.
        """
        with self._cond:
            self._unknown.setdefault(resource, []).extend(p.split(".") for p in paths)

    def compact(self) -> None:
        """Forget the change history: watches from any earlier version get 410 Gone."""
        with self._cond:
            self._log.clear()
            self._compacted = self._rv
            self._cond.notify_all()

    def close(self) -> None:
        """End every watch now (as a server shutting down)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Accept watches again after :meth:`close` (a restarted server)."""
        with self._cond:
            self._closed = False

    @property
    def resource_version(self) -> str:
        with self._cond:
            return str(self._rv)

    def put(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or overwrite ``obj`` unconditionally (another client's write)."""
        with self._cond:
            key = self._key(resource, obj)
            previous = self._objects.get(key)
            stored = copy.deepcopy(dict(obj))
            meta = stored.setdefault("metadata", {})
            if previous is not None:
                meta.setdefault("uid", previous["metadata"].get("uid"))
                meta.setdefault("creationTimestamp", previous["metadata"].get("creationTimestamp"))
            return self._store(resource, key, stored, previous)

    def remove(self, resource: Resource, name: str, *, namespace: str | None = None) -> None:
        """Delete unconditionally, finalizers or not."""
        with self._cond:
            key = (resource, namespace if RESOURCES[resource].namespaced else None, name)
            previous = self._objects.pop(key, None)
            if previous is not None:
                self._record(resource, "DELETED", previous, previous)

    def objects(self, resource: Resource, *, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every stored object of ``resource`` (copies), in key order."""
        with self._cond:
            return [
                copy.deepcopy(obj)
                for (res, ns, _), obj in sorted(
                    self._objects.items(), key=lambda item: (item[0][1] or "", item[0][2])
                )
                if res == resource and (namespace is None or ns == namespace)
            ]

    # -- internals ---------------------------------------------------------------------

    def _key(self, resource: Resource, obj: Mapping[str, Any]) -> _Key:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") if RESOURCES[resource].namespaced else None
        if RESOURCES[resource].namespaced and not namespace:
            raise InvalidError(f"{resource}: a namespace is required")
        name = meta.get("name")
        if not name:
            raise InvalidError(f"{resource}: metadata.name is required")
        return (resource, namespace, str(name))

    def _check(
        self, verb: str, resource: Resource, namespace: str | None, name: str, *, write: bool
    ) -> list[Callable[[], None]]:
        """Record the call, raise an injected fault, return the hooks to run."""
        self.calls.append(Call(verb, resource, namespace, name))
        for fault in self._faults:
            if (
                fault.times > 0
                and fault.verb in (verb, "*")
                and fault.resource == resource
                and (fault.name is None or fault.name == name)
            ):
                fault.times -= 1
                message = f"{verb} {resource} {name}: injected {fault.status} {fault.message}"
                raise api_error(message.rstrip(), status=fault.status)
        hooks: list[Callable[[], None]] = []
        if write:
            for hook in self._hooks:
                if (
                    hook.fired < hook.times
                    and hook.verb in (verb, "*")
                    and hook.resource == resource
                    and (hook.name is None or hook.name == name)
                ):
                    hook.fired += 1
                    hooks.append(hook.callback)
        return hooks

    def _run_hooks(self, hooks: list[Callable[[], None]]) -> None:
        for hook in hooks:
            hook()

    def _store(
        self,
        resource: Resource,
        key: _Key,
        obj: dict[str, Any],
        previous: dict[str, Any] | None,
    ) -> dict[str, Any]:
        self._rv += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self._rv)
        if not meta.get("uid"):
            self._uid += 1
            meta["uid"] = str(uuid.UUID(int=self._uid))
        if not meta.get("creationTimestamp"):
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta.setdefault("generation", 1)
        if key[1] is not None:
            meta["namespace"] = key[1]
        self._defaults(resource, obj)
        self._objects[key] = obj
        self._record(resource, "ADDED" if previous is None else "MODIFIED", obj, previous)
        return copy.deepcopy(obj)

    def _defaults(self, resource: Resource, obj: dict[str, Any]) -> None:
        """What the server does to every written object of ``resource`` before storing it."""
        for path in self._unknown.get(resource, ()):
            _prune(obj, path)
        if resource == "resourceslices":
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            for device in (obj.get("spec") or {}).get("devices") or []:
                for taint in device.get("taints") or []:
                    taint.setdefault("timeAdded", now)

    def _record(
        self, resource: str, kind: str, obj: dict[str, Any], previous: dict[str, Any] | None
    ) -> None:
        if kind == "DELETED":
            self._rv += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._rv)
        self._log.append(_Change(self._rv, resource, kind, copy.deepcopy(obj), previous))
        if len(self._log) > self._history:
            dropped = self._log[: len(self._log) - self._history]
            del self._log[: len(dropped)]
            self._compacted = dropped[-1].rv
        self._cond.notify_all()

    def _existing(
        self, resource: Resource, namespace: str | None, name: str
    ) -> tuple[_Key, dict[str, Any]]:
        key = (resource, namespace if RESOURCES[resource].namespaced else None, name)
        stored = self._objects.get(key)
        if stored is None:
            where = f"{namespace}/{name}" if namespace else name
            raise NotFoundError(f"{resource} {where} not found")
        return key, stored

    @staticmethod
    def _guard(stored: Mapping[str, Any], obj: Mapping[str, Any], what: str) -> None:
        wanted = (obj.get("metadata") or {}).get("resourceVersion")
        current = stored["metadata"]["resourceVersion"]
        if wanted and str(wanted) != current:
            raise ConflictError(
                f"{what}: the object has been modified; please apply your changes to the "
                "latest version and try again"
            )

    # -- ClusterClient -----------------------------------------------------------------

    def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> ObjectList:
        with self._cond:
            self._check("list", resource, namespace, "", write=False)
            items = [
                obj
                for obj in self.objects(resource, namespace=namespace)
                if _field_matches(obj, field_selector) and _label_matches(obj, label_selector)
            ]
            return ObjectList(items=items, resource_version=str(self._rv))

    def watch(
        self,
        resource: Resource,
        *,
        resource_version: str,
        timeout_s: float,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> Iterator[WatchEvent]:
        with self._cond:
            self._check("watch", resource, None, "", write=False)
            cursor = int(resource_version or 0)
            if cursor < self._compacted:
                raise GoneError(
                    f"watch {resource}: too old resource version: {cursor} ({self._compacted})"
                )
            if self._closed:
                raise UnavailableError(f"watch {resource}: connection refused")
        deadline = time.monotonic() + timeout_s

        def matches(obj: Mapping[str, Any] | None) -> bool:
            return (
                obj is not None
                and _field_matches(obj, field_selector)
                and _label_matches(obj, label_selector)
            )

        while True:
            with self._cond:
                pending = [c for c in self._log if c.rv > cursor and c.resource == resource]
                if not pending:
                    if cursor < self._compacted:
                        raise GoneError(f"watch {resource}: too old resource version")
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        return
                    self._cond.wait(remaining)
                    continue
            for change in pending:
                cursor = change.rv
                now, before = matches(change.obj), matches(change.previous)
                if change.type == "DELETED":
                    if before or now:
                        yield WatchEvent("DELETED", copy.deepcopy(change.obj), str(change.rv))
                elif now:
                    kind: WatchEventType = "MODIFIED" if before else "ADDED"
                    yield WatchEvent(kind, copy.deepcopy(change.obj), str(change.rv))
                elif before:
                    yield WatchEvent("DELETED", copy.deepcopy(change.obj), str(change.rv))

    def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        with self._cond:
            self._check("get", resource, namespace, name, write=False)
            _, stored = self._existing(resource, namespace, name)
            return copy.deepcopy(stored)

    def create(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        with self._cond:
            key = self._key(resource, obj)
            hooks = self._check("create", resource, key[1], key[2], write=True)
        self._run_hooks(hooks)
        with self._cond:
            if key in self._objects:
                raise ConflictError(f"{resource} {key[2]} already exists")
            stored = copy.deepcopy(dict(obj))
            meta = stored.setdefault("metadata", {})
            for server_field in (
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
            ):
                meta.pop(server_field, None)
            return self._store(resource, key, stored, None)

    def replace(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self._replace(resource, obj, status=False)

    def replace_status(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self._replace(resource, obj, status=True)

    def _replace(
        self, resource: Resource, obj: Mapping[str, Any], *, status: bool
    ) -> dict[str, Any]:
        verb = "replace_status" if status else "replace"
        with self._cond:
            key = self._key(resource, obj)
            hooks = self._check(verb, resource, key[1], key[2], write=True)
        self._run_hooks(hooks)
        with self._cond:
            key, stored = self._existing(resource, key[1], key[2])
            what = f"update {resource} {key[2]}"
            self._guard(stored, obj, what)
            updated = copy.deepcopy(dict(obj))
            meta = updated.setdefault("metadata", {})
            for server_field in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if server_field in stored["metadata"]:
                    meta[server_field] = stored["metadata"][server_field]
            if resource == "resourceclaims":
                updated = self._claim_update(stored, updated, status=status, what=what)
                meta = updated["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                # The last finalizer is gone: the deletion completes.
                del self._objects[key]
                self._record(resource, "DELETED", updated, stored)
                return copy.deepcopy(updated)
            return self._store(resource, key, updated, stored)

    @staticmethod
    def _claim_update(
        stored: dict[str, Any], updated: dict[str, Any], *, status: bool, what: str
    ) -> dict[str, Any]:
        if not status:
            if updated.get("spec") != stored.get("spec"):
                raise InvalidError(f"{what}: spec: field is immutable")
            if "status" in stored:
                updated["status"] = copy.deepcopy(stored["status"])
            else:
                updated.pop("status", None)
            return updated
        result = copy.deepcopy(stored)
        result["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        new_status = updated.get("status") or {}
        old_allocation = (stored.get("status") or {}).get("allocation")
        new_allocation = new_status.get("allocation")
        if (
            old_allocation is not None
            and new_allocation is not None
            and old_allocation != new_allocation
        ):
            raise InvalidError(f"{what}: status.allocation: field is immutable once set")
        if new_status.get("reservedFor") and new_allocation is None:
            raise InvalidError(f"{what}: status.reservedFor: may not be set without an allocation")
        result["status"] = copy.deepcopy(new_status)
        if not result["status"]:
            del result["status"]
        return result

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        with self._cond:
            hooks = self._check("patch", resource, namespace, name, write=True)
        self._run_hooks(hooks)
        with self._cond:
            key, stored = self._existing(resource, namespace, name)
            what = f"patch {resource} {name}"
            self._guard(stored, patch, what)
            updated = merge_patch(stored, patch)
            meta = updated.setdefault("metadata", {})
            for server_field in ("uid", "creationTimestamp", "deletionTimestamp"):
                if server_field in stored["metadata"]:
                    meta[server_field] = stored["metadata"][server_field]
            if resource == "pods":
                old_gates = {
                    g.get("name") for g in (stored.get("spec") or {}).get("schedulingGates") or []
                }
                new_gates = {
                    g.get("name") for g in (updated.get("spec") or {}).get("schedulingGates") or []
                }
                if new_gates - old_gates:
                    raise InvalidError(
                        f"{what}: spec.schedulingGates: scheduling gates can only be removed"
                    )
            if resource == "resourceclaims" and updated.get("spec") != stored.get("spec"):
                raise InvalidError(f"{what}: spec: field is immutable")
            return self._store(resource, key, updated, stored)

    def delete(self, resource: Resource, name: str, *, namespace: str | None = None) -> None:
        with self._cond:
            hooks = self._check("delete", resource, namespace, name, write=True)
        self._run_hooks(hooks)
        with self._cond:
            key = (resource, namespace if RESOURCES[resource].namespaced else None, name)
            stored = self._objects.get(key)
            if stored is None:
                return
            if stored["metadata"].get("finalizers"):
                if not stored["metadata"].get("deletionTimestamp"):
                    updated = copy.deepcopy(stored)
                    updated["metadata"]["deletionTimestamp"] = datetime.now(UTC).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    )
                    self._store(resource, key, updated, stored)
                return
            del self._objects[key]
            self._record(resource, "DELETED", stored, stored)
