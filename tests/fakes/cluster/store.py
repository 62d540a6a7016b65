"""The objects of :class:`~tests.fakes.cluster.FakeCluster`: keys, versions, selectors, patches.

:class:`ObjectStore` holds every object by key (resource, namespace, name) and the one
resourceVersion counter of the whole server; it stamps what only the server sets (uid,
resourceVersion, creationTimestamp, generation) and answers 404 and 409 the way the API
server does. It takes no lock: :class:`~tests.fakes.cluster.FakeCluster` calls it under its
own.

:func:`field_matches` and :func:`label_matches` are the subset of the server's selector
syntax the agents use (``=``, ``==``, ``!=``; a label key alone or negated with ``!``);
:func:`merge_patch` is RFC 7386.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from agent_kit.kube import RESOURCES, ConflictError, InvalidError, NotFoundError, Resource

__all__ = [
    "SERVER_FIELDS",
    "Key",
    "ObjectStore",
    "field_matches",
    "label_matches",
    "merge_patch",
    "now",
]

#: Metadata only the server sets.
SERVER_FIELDS: Final = ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp")
#: (resource, namespace or None for cluster-scoped resources, name)
Key = tuple[str, str | None, str]


def now() -> str:
    """A timestamp as the server writes it (seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def field_matches(obj: Mapping[str, Any], selector: str | None) -> bool:
    """Whether ``obj`` matches a field selector (``None`` or empty matches everything)."""
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


def label_matches(obj: Mapping[str, Any], selector: str | None) -> bool:
    """Whether ``obj`` matches a label selector (``None`` or empty matches everything)."""
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


class ObjectStore:
    """Every stored object by :data:`Key`, and the server's resourceVersion counter.

    Methods that return an object return the stored dict itself unless they say
    "copy": the caller holds the server's lock and copies before handing it out.
    """

    def __init__(self) -> None:
        #: The last resourceVersion handed out (every write and every deletion bumps it).
        self.version = 0
        self._uid = 0
        self._objects: dict[Key, dict[str, Any]] = {}

    def key(self, resource: Resource, obj: Mapping[str, Any]) -> Key:
        """The key of ``obj``; 422 Invalid without a name (or a namespace where one is due)."""
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") if RESOURCES[resource].namespaced else None
        if RESOURCES[resource].namespaced and not namespace:
            raise InvalidError(f"{resource}: a namespace is required")
        name = meta.get("name")
        if not name:
            raise InvalidError(f"{resource}: metadata.name is required")
        return (resource, namespace, str(name))

    @staticmethod
    def key_of(resource: Resource, namespace: str | None, name: str) -> Key:
        """The key of a named object; a namespace given for a cluster-scoped resource is
        ignored, as the server ignores it."""
        return (resource, namespace if RESOURCES[resource].namespaced else None, name)

    def __contains__(self, key: Key) -> bool:
        return key in self._objects

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._objects.get(key)

    def existing(
        self, resource: Resource, namespace: str | None, name: str
    ) -> tuple[Key, dict[str, Any]]:
        """The key and stored object; 404 NotFound when there is none."""
        key = self.key_of(resource, namespace, name)
        stored = self._objects.get(key)
        if stored is None:
            where = f"{namespace}/{name}" if namespace else name
            raise NotFoundError(f"{resource} {where} not found")
        return key, stored

    @staticmethod
    def guard(stored: Mapping[str, Any], obj: Mapping[str, Any], what: str) -> None:
        """409 Conflict when ``obj`` names a resourceVersion that is not the stored one
        (a write without one is unconditional)."""
        wanted = (obj.get("metadata") or {}).get("resourceVersion")
        current = stored["metadata"]["resourceVersion"]
        if wanted and str(wanted) != current:
            raise ConflictError(
                f"{what}: the object has been modified; please apply your changes to the "
                "latest version and try again"
            )

    def stamp(self, key: Key, obj: dict[str, Any]) -> None:
        """Give ``obj`` the next resourceVersion, and a uid, creationTimestamp and
        generation where it has none; its namespace is the key's."""
        self.version += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.version)
        if not meta.get("uid"):
            self._uid += 1
            meta["uid"] = str(uuid.UUID(int=self._uid))
        if not meta.get("creationTimestamp"):
            meta["creationTimestamp"] = now()
        meta.setdefault("generation", 1)
        if key[1] is not None:
            meta["namespace"] = key[1]

    def save(self, key: Key, obj: dict[str, Any]) -> None:
        self._objects[key] = obj

    def pop(self, key: Key) -> dict[str, Any] | None:
        """Forget the object at ``key``; the object, or ``None`` if there was none."""
        return self._objects.pop(key, None)

    def tombstone(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of a deleted ``obj`` at the next resourceVersion, as its DELETED event
        carries it."""
        self.version += 1
        dead = copy.deepcopy(dict(obj))
        dead["metadata"]["resourceVersion"] = str(self.version)
        return dead

    def objects(self, resource: Resource, *, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every stored object of ``resource`` (copies), in (namespace, name) order."""
        return [
            copy.deepcopy(obj)
            for (res, ns, _), obj in sorted(
                self._objects.items(), key=lambda item: (item[0][1] or "", item[0][2])
            )
            if res == resource and (namespace is None or ns == namespace)
        ]
