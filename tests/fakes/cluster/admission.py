"""What :class:`~tests.fakes.cluster.FakeCluster` does to a write before storing it.

The subset of the API server's defaulting and validation that the agents depend on:

- fields the server does not serve (:meth:`Admission.drop_fields`, a feature gate off) are
  not stored;
- device taints of ResourceSlices written without ``timeAdded`` get one;
- a ResourceClaim's ``spec`` is immutable; ``replace`` keeps the stored status and
  ``replace_status`` the stored spec and metadata (the status subresource);
  ``status.allocation``, once set, may only be removed, and ``status.reservedFor`` needs
  an allocation;
- a pod's scheduling gates can only be removed.

Each refusal is the server's 422 (:class:`~agent_kit.kube.InvalidError`), worded as the
server words it. No lock is taken here: the caller holds the server's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from agent_kit.kube import InvalidError, Resource
from tests.fakes.cluster.store import now

__all__ = ["Admission"]


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


def _gates(pod: Mapping[str, Any]) -> set[Any]:
    """The names of a pod's scheduling gates."""
    return {g.get("name") for g in (pod.get("spec") or {}).get("schedulingGates") or []}


class Admission:
    """The server's defaulting and validation rules, per resource."""

    def __init__(self) -> None:
        self._unknown: dict[str, list[list[str]]] = {}

    def drop_fields(self, resource: Resource, *paths: str) -> None:
        """From now on, writes of ``resource`` do not store the fields at ``paths``.

        A path is dotted; ``name[]`` means each element of the list ``name``:
        ``spec.devices[].taints``.
        """
        self._unknown.setdefault(resource, []).extend(p.split(".") for p in paths)

    def default(self, resource: Resource, obj: dict[str, Any]) -> None:
        """What the server does to every written object of ``resource`` before storing it."""
        for path in self._unknown.get(resource, ()):
            _prune(obj, path)
        if resource == "resourceslices":
            stamp = now()
            for device in (obj.get("spec") or {}).get("devices") or []:
                for taint in device.get("taints") or []:
                    taint.setdefault("timeAdded", stamp)

    def replace(
        self,
        resource: Resource,
        stored: dict[str, Any],
        updated: dict[str, Any],
        *,
        status: bool,
        what: str,
    ) -> dict[str, Any]:
        """The object a ``replace`` (or, with ``status``, a ``replace_status``) of
        ``stored`` by ``updated`` stores; raises InvalidError where the server refuses."""
        if resource != "resourceclaims":
            return updated
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

    @staticmethod
    def patch(
        resource: Resource, stored: Mapping[str, Any], updated: Mapping[str, Any], *, what: str
    ) -> None:
        """Raise InvalidError where the server refuses a merge patch from ``stored`` to
        ``updated``."""
        if resource == "pods" and _gates(updated) - _gates(stored):
            raise InvalidError(
                f"{what}: spec.schedulingGates: scheduling gates can only be removed"
            )
        if resource == "resourceclaims" and updated.get("spec") != stored.get("spec"):
            raise InvalidError(f"{what}: spec: field is immutable")
