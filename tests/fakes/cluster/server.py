""":class:`FakeCluster`: the verbs of :class:`~agent_kit.kube.ClusterClient` over the
store, the admission rules, the change log and the test controls (see the package
docstring for the semantics it keeps)."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from agent_kit.kube import ConflictError, ObjectList, Resource, WatchEvent
from tests.fakes.cluster.admission import Admission
from tests.fakes.cluster.controls import Call, CallControls
from tests.fakes.cluster.store import (
    SERVER_FIELDS,
    Key,
    ObjectStore,
    field_matches,
    label_matches,
    merge_patch,
    now,
)
from tests.fakes.cluster.watches import ChangeLog

__all__ = ["FakeCluster"]


class FakeCluster:
    """In-memory :class:`~agent_kit.kube.ClusterClient` (see the package docstring).

    Thread-safe: reflectors watch from their threads while tests write. One condition
    guards everything; write hooks run outside it, so that they may write too.
    """

    def __init__(self, *, history: int = 100_000) -> None:
        self._cond = threading.Condition()
        self._store = ObjectStore()
        self._admission = Admission()
        self._changes = ChangeLog(self._cond, history=history)
        self._controls = CallControls()

    # -- test controls -----------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every call so far, in order (a live list: tests may ``clear()`` it)."""
        return self._controls.calls

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
            self._controls.fail(verb, resource, status, times=times, name=name, message=message)

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
            self._controls.before(verb, resource, callback, times=times, name=name)

    def drop_fields(self, resource: Resource, *paths: str) -> None:
        """From now on, writes of ``resource`` do not store the fields at ``paths``, as a
        server that does not serve them (a feature gate off) drops them silently.

        A path is dotted; ``name[]`` means each element of the list ``name``:
        ``spec.devices[].taints``.
        """
        with self._cond:
            self._admission.drop_fields(resource, *paths)

    def compact(self) -> None:
        """Forget the change history: watches from any earlier version get 410 Gone."""
        with self._cond:
            self._changes.compact(self._store.version)

    def close(self) -> None:
        """End every watch now (as a server shutting down)."""
        with self._cond:
            self._changes.close()

    def reopen(self) -> None:
        """Accept watches again after :meth:`close` (a restarted server)."""
        with self._cond:
            self._changes.reopen()

    @property
    def resource_version(self) -> str:
        with self._cond:
            return str(self._store.version)

    def put(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or overwrite ``obj`` unconditionally (another client's write)."""
        with self._cond:
            key = self._store.key(resource, obj)
            previous = self._store.get(key)
            stored = copy.deepcopy(dict(obj))
            meta = stored.setdefault("metadata", {})
            if previous is not None:
                meta.setdefault("uid", previous["metadata"].get("uid"))
                meta.setdefault("creationTimestamp", previous["metadata"].get("creationTimestamp"))
            return self._write(resource, key, stored, previous)

    def remove(self, resource: Resource, name: str, *, namespace: str | None = None) -> None:
        """Delete unconditionally, finalizers or not."""
        with self._cond:
            key = self._store.key_of(resource, namespace, name)
            previous = self._store.pop(key)
            if previous is not None:
                self._deleted(resource, previous, previous)

    def objects(self, resource: Resource, *, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every stored object of ``resource`` (copies), in key order."""
        with self._cond:
            return self._store.objects(resource, namespace=namespace)

    # -- internals ---------------------------------------------------------------------

    def _write(
        self,
        resource: Resource,
        key: Key,
        obj: dict[str, Any],
        previous: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Store ``obj`` at the next version (after the server's defaults); a copy of it."""
        self._store.stamp(key, obj)
        self._admission.default(resource, obj)
        self._store.save(key, obj)
        kind = "ADDED" if previous is None else "MODIFIED"
        self._changes.record(self._store.version, resource, kind, obj, previous)
        return copy.deepcopy(obj)

    def _deleted(self, resource: Resource, obj: dict[str, Any], previous: dict[str, Any]) -> None:
        """Record the deletion of ``obj`` (already gone from the store)."""
        dead = self._store.tombstone(obj)
        self._changes.record(self._store.version, resource, "DELETED", dead, previous)

    @staticmethod
    def _run_hooks(hooks: list[Callable[[], None]]) -> None:
        for hook in hooks:
            hook()

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
            self._controls.check("list", resource, namespace, "", write=False)
            items = [
                obj
                for obj in self._store.objects(resource, namespace=namespace)
                if field_matches(obj, field_selector) and label_matches(obj, label_selector)
            ]
            return ObjectList(items=items, resource_version=str(self._store.version))

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
            self._controls.check("watch", resource, None, "", write=False)
            cursor = self._changes.start(resource, resource_version)
        deadline = time.monotonic() + timeout_s

        def matches(obj: Mapping[str, Any] | None) -> bool:
            return (
                obj is not None
                and field_matches(obj, field_selector)
                and label_matches(obj, label_selector)
            )

        yield from self._changes.follow(resource, cursor, deadline, matches)

    def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        with self._cond:
            self._controls.check("get", resource, namespace, name, write=False)
            _, stored = self._store.existing(resource, namespace, name)
            return copy.deepcopy(stored)

    def create(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        with self._cond:
            key = self._store.key(resource, obj)
            hooks = self._controls.check("create", resource, key[1], key[2], write=True)
        self._run_hooks(hooks)
        with self._cond:
            if key in self._store:
                raise ConflictError(f"{resource} {key[2]} already exists")
            stored = copy.deepcopy(dict(obj))
            meta = stored.setdefault("metadata", {})
            for server_field in SERVER_FIELDS:
                meta.pop(server_field, None)
            return self._write(resource, key, stored, None)

    def replace(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self._replace(resource, obj, status=False)

    def replace_status(self, resource: Resource, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self._replace(resource, obj, status=True)

    def _replace(
        self, resource: Resource, obj: Mapping[str, Any], *, status: bool
    ) -> dict[str, Any]:
        verb = "replace_status" if status else "replace"
        with self._cond:
            key = self._store.key(resource, obj)
            hooks = self._controls.check(verb, resource, key[1], key[2], write=True)
        self._run_hooks(hooks)
        with self._cond:
            key, stored = self._store.existing(resource, key[1], key[2])
            what = f"update {resource} {key[2]}"
            self._store.guard(stored, obj, what)
            updated = copy.deepcopy(dict(obj))
            meta = updated.setdefault("metadata", {})
            for server_field in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if server_field in stored["metadata"]:
                    meta[server_field] = stored["metadata"][server_field]
            updated = self._admission.replace(resource, stored, updated, status=status, what=what)
            meta = updated["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                # The last finalizer is gone: the deletion completes.
                self._store.pop(key)
                self._deleted(resource, updated, stored)
                return copy.deepcopy(updated)
            return self._write(resource, key, updated, stored)

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        return self._patch(resource, name, patch, namespace, status=False)

    def patch_status(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        return self._patch(resource, name, patch, namespace, status=True)

    def _patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None,
        *,
        status: bool,
    ) -> dict[str, Any]:
        verb = "patch_status" if status else "patch"
        with self._cond:
            hooks = self._controls.check(verb, resource, namespace, name, write=True)
        self._run_hooks(hooks)
        with self._cond:
            key, stored = self._store.existing(resource, namespace, name)
            what = f"patch {resource}{'/status' if status else ''} {name}"
            self._store.guard(stored, patch, what)
            updated = merge_patch(stored, patch)
            meta = updated.setdefault("metadata", {})
            for server_field in ("uid", "creationTimestamp", "deletionTimestamp"):
                if server_field in stored["metadata"]:
                    meta[server_field] = stored["metadata"][server_field]
            if status:
                # The status subresource takes the status only, as replace_status does.
                updated = self._admission.replace(resource, stored, updated, status=True, what=what)
            else:
                self._admission.patch(resource, stored, updated, what=what)
            return self._write(resource, key, updated, stored)

    def delete(self, resource: Resource, name: str, *, namespace: str | None = None) -> None:
        with self._cond:
            hooks = self._controls.check("delete", resource, namespace, name, write=True)
        self._run_hooks(hooks)
        with self._cond:
            key = self._store.key_of(resource, namespace, name)
            stored = self._store.get(key)
            if stored is None:
                return
            if stored["metadata"].get("finalizers"):
                if not stored["metadata"].get("deletionTimestamp"):
                    updated = copy.deepcopy(stored)
                    updated["metadata"]["deletionTimestamp"] = now()
                    self._write(resource, key, updated, stored)
                return
            self._store.pop(key)
            self._deleted(resource, stored, stored)
