"""SliceClient over KubernetesClient (the official client underneath) against the stand-in
API server on loopback: the requests and answers of a real cluster, errors as the tree's
classes, and a watch that another thread cuts at shutdown."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fake_apiserver import FakeApiServer
from kubernetes import client

from agent_kit.kube import ConflictError, KubernetesClient, NotFoundError, UnavailableError
from dra_driver.discovery.mock import MockBackend
from dra_driver.slices import build_slices
from kubelet_plugin.slice_client import SliceClient, SliceEvent

pytestmark = pytest.mark.component

NODE = "node-a"
DRIVER = "gpu.dra-driver.io"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


@pytest.fixture
def kube(api: FakeApiServer) -> KubernetesClient:
    configuration = client.Configuration()
    configuration.host = api.url
    return KubernetesClient(client.ApiClient(configuration), timeout_s=10)


def test_slices_travel_as_the_server_stores_them(
    api: FakeApiServer, kube: KubernetesClient
) -> None:
    slices = SliceClient(kube)
    (planned,) = build_slices(MockBackend(NODE, "1xL4").discover())
    empty = slices.list_slices(node_name=NODE, driver_name=DRIVER)
    assert empty.items == []

    created = slices.create_slice(planned)
    assert created.metadata.uid and created.metadata.resource_version
    assert created.spec == planned.spec
    with pytest.raises(ConflictError, match="already exists"):
        slices.create_slice(planned)
    updated = slices.update_slice(created)
    assert int(updated.metadata.resource_version or 0) > int(created.metadata.resource_version or 0)
    with pytest.raises(ConflictError, match="the object has been modified"):
        slices.update_slice(created)  # its resourceVersion is stale now

    listing = slices.list_slices(node_name=NODE, driver_name=DRIVER)
    assert [s.metadata.name for s in listing.items] == [planned.metadata.name]
    assert slices.list_slices(node_name="node-b", driver_name=DRIVER).items == []
    # The node's slices are selected by the server, not filtered here.
    assert any("fieldSelector=spec.nodeName" in path for _, path in api.requests)

    slices.delete_slice(planned.metadata.name or "")
    slices.delete_slice(planned.metadata.name or "")  # already gone: not an error
    events = list(
        slices.watch_slices(
            node_name=NODE, driver_name=DRIVER, resource_version=empty.resource_version, timeout_s=1
        )
    )
    assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert all(
        e.slice is not None and e.slice.metadata.name == planned.metadata.name for e in events
    )
    with pytest.raises(NotFoundError):
        kube.get("nodes", NODE)


def test_a_watch_in_progress_is_cut_by_interrupt_watches(
    api: FakeApiServer, kube: KubernetesClient
) -> None:
    slices = SliceClient(kube)
    start = slices.list_slices(node_name=NODE, driver_name=DRIVER).resource_version
    seen: list[SliceEvent] = []
    ended: list[BaseException | None] = []

    def watch() -> None:
        try:
            # Long enough that only an interruption ends it while the test runs.
            for event in slices.watch_slices(
                node_name=NODE, driver_name=DRIVER, resource_version=start, timeout_s=600
            ):
                seen.append(event)
            ended.append(None)
        except UnavailableError as err:
            ended.append(err)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    api.wait_for(lambda: any("watch=true" in path for _, path in api.requests), "the watch")
    slices.create_slice(build_slices(MockBackend(NODE, "1xL4").discover())[0])
    api.wait_for(lambda: len(seen) == 1, "the watch to see the new slice")

    kube.interrupt_watches()
    thread.join(30)
    assert not thread.is_alive(), "the watch was not cut"
    assert len(ended) == 1
    # Watches opened afterwards are refused at once; other calls still go through.
    with pytest.raises(UnavailableError, match="interrupted"):
        next(
            slices.watch_slices(
                node_name=NODE, driver_name=DRIVER, resource_version=start, timeout_s=600
            )
        )
    assert len(slices.list_slices(node_name=NODE, driver_name=DRIVER).items) == 1
