"""The node's ResourceSlices on the API server, typed: :class:`SliceClient`.

A thin adapter over the agents' one API client (:class:`agent_kit.kube.ClusterClient`):
the publisher hands it :class:`~api.resource_v1.ResourceSlice` models and gets models
back, decoded from the raw JSON the server sent with this project's models (not the
official client's), so that what the server stored can be compared field by field
with what was sent.

Every method raises the :mod:`agent_kit.kube` error tree; an answer that does not decode
into a ResourceSlice is an :class:`~agent_kit.kube.ApiError` (itself). Retries are the
caller's business (:mod:`agent_kit.kube.retry`).

In a real cluster the port is :class:`agent_kit.kube.KubernetesClient`; tests use
:class:`tests.fakes.cluster.FakeCluster`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agent_kit.kube import ApiError, ClusterClient, WatchEventType
from api.resource_v1 import ResourceSlice, dump

__all__ = ["SliceClient", "SliceEvent", "SliceList", "node_selector"]


@dataclass(frozen=True, slots=True)
class SliceList:
    """The node's slices and the resourceVersion to watch from."""

    items: list[ResourceSlice]
    resource_version: str


@dataclass(frozen=True, slots=True)
class SliceEvent:
    """One change of a watched slice."""

    type: WatchEventType
    slice: ResourceSlice | None
    """None for BOOKMARK events."""
    resource_version: str | None = None


def node_selector(node_name: str, driver_name: str) -> str:
    """The field selector of one node's slices of one driver."""
    return f"spec.nodeName={node_name},spec.driver={driver_name}"


def _decode(what: str, data: Any) -> ResourceSlice:
    try:
        return ResourceSlice.model_validate(data)
    except ValueError as err:
        raise ApiError(
            f"{what}: the API server returned a slice that does not decode: {err}"
        ) from None


class SliceClient:
    """ResourceSlice calls of the node's publisher over a :class:`ClusterClient`.

    Contracts (the port's): ``create_slice`` raises ConflictError when the name is
    taken; ``update_slice`` is guarded by ``metadata.resourceVersion`` (ConflictError
    when stale, NotFoundError when the slice is gone); ``delete_slice`` of a slice that
    is already gone is not an error; ``watch_slices`` raises GoneError for a version the
    server no longer keeps.
    """

    def __init__(self, client: ClusterClient) -> None:
        self.client = client

    def list_slices(self, *, node_name: str, driver_name: str) -> SliceList:
        """Slices with ``spec.nodeName == node_name`` and ``spec.driver == driver_name``."""
        listing = self.client.list(
            "resourceslices", field_selector=node_selector(node_name, driver_name)
        )
        items = [_decode("list resourceslices", item) for item in listing.items]
        return SliceList(items=items, resource_version=listing.resource_version)

    def create_slice(self, slice_: ResourceSlice) -> ResourceSlice:
        """Create; the stored object is returned."""
        what = f"create resourceslice {slice_.metadata.name}"
        return _decode(what, self.client.create("resourceslices", dump(slice_)))

    def update_slice(self, slice_: ResourceSlice) -> ResourceSlice:
        """Replace, guarded by ``metadata.resourceVersion``; the stored object is returned."""
        what = f"update resourceslice {slice_.metadata.name}"
        return _decode(what, self.client.replace("resourceslices", dump(slice_)))

    def delete_slice(self, name: str) -> None:
        """Delete; a slice that is already gone is not an error."""
        self.client.delete("resourceslices", name)

    def watch_slices(
        self, *, node_name: str, driver_name: str, resource_version: str, timeout_s: float
    ) -> Iterator[SliceEvent]:
        """Changes after ``resource_version`` until ``timeout_s`` passes."""
        for event in self.client.watch(
            "resourceslices",
            resource_version=resource_version,
            timeout_s=timeout_s,
            field_selector=node_selector(node_name, driver_name),
        ):
            if event.type == "BOOKMARK":
                yield SliceEvent("BOOKMARK", None, event.resource_version)
            else:
                decoded = _decode("watch resourceslices", event.object)
                yield SliceEvent(event.type, decoded, event.resource_version)
