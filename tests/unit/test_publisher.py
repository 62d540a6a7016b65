"""SlicePublisher against the in-memory API server; KubernetesSliceClient against a stand-in API."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client import V1ResourceSlice
from kubernetes.client.exceptions import ApiException

from api.errors import InvalidInputError
from api.resource_v1 import DeviceTaint, ResourceSlice, dump
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import NodeInventory
from dra_driver.slices import build_slices
from kubelet_plugin.publisher import (
    FakeSliceClient,
    KubernetesSliceClient,
    SliceApiError,
    SlicePublisher,
    WatchEvent,
)

NODE = "node-a"
XID = DeviceTaint(key="gpu.dra-driver.io/xid", value="79", effect="NoSchedule")


def _inventory(profile: str = "2xA100-40GB,1xL4", node: str = NODE) -> NodeInventory:
    return MockBackend(node, profile).discover()


def _publisher(client: FakeSliceClient, **kwargs: Any) -> SlicePublisher:
    return SlicePublisher(client, node_name=NODE, **kwargs)


def _pool(client: FakeSliceClient) -> list[ResourceSlice]:
    return [s for s in (client.get(n) for n in client.names) if s is not None]


def _assert_complete_pool(client: FakeSliceClient, generation: int) -> None:
    pool = [s for s in _pool(client) if s.spec.node_name == NODE]
    assert pool
    assert {s.spec.pool.generation for s in pool} == {generation}
    assert {s.spec.pool.resource_slice_count for s in pool} == {len(pool)}


def test_first_publish_creates_the_pool_at_generation_1() -> None:
    client = FakeSliceClient()
    result = _publisher(client).publish(_inventory())
    assert result.generation == 1
    assert result.created == ("node-a-gpu.dra-driver.io-00000", "node-a-gpu.dra-driver.io-00001")
    assert (result.updated, result.deleted, result.dropped_fields) == ((), (), ())
    _assert_complete_pool(client, 1)
    stored = [dump(s)["spec"] for s in _pool(client)]
    assert stored == [dump(s)["spec"] for s in build_slices(_inventory())]


def test_nothing_changed_means_nothing_written() -> None:
    client = FakeSliceClient()
    publisher = _publisher(client)
    publisher.publish(_inventory(), {"gpu-2": [XID]})
    client.calls.clear()
    result = publisher.sync()
    assert not result.changed
    assert result.generation == 1
    # The server's timeAdded on the taint is not a difference.
    assert client.calls == ["list_slices"]


def test_a_change_bumps_the_generation_of_every_slice() -> None:
    client = FakeSliceClient()
    publisher = _publisher(client)
    publisher.publish(_inventory())
    result = publisher.publish(_inventory(), {"gpu-2": [XID]})
    assert result.generation == 2
    assert len(result.updated) == 2 and not result.created
    _assert_complete_pool(client, 2)
    tainted = [d.name for s in _pool(client) for d in s.spec.devices or [] if d.taints]
    assert tainted == ["gpu-2"]


def test_obsolete_slices_are_deleted_before_anything_else() -> None:
    client = FakeSliceClient()
    publisher = _publisher(client)
    publisher.publish(_inventory("16xH100-80GB"))
    assert len(client.names) == 9
    client.calls.clear()
    result = publisher.publish(_inventory("1xL4"))
    assert result.generation == 2
    assert len(result.deleted) == 8
    assert client.calls[1:9] == ["delete_slice"] * 8
    assert client.calls[9:] == ["update_slice"]
    _assert_complete_pool(client, 2)


def test_a_slice_deleted_by_the_kubelet_comes_back() -> None:
    client = FakeSliceClient()
    publisher = _publisher(client)
    publisher.publish(_inventory())
    client.delete_slice("node-a-gpu.dra-driver.io-00001")
    result = publisher.sync()
    assert result.created == ("node-a-gpu.dra-driver.io-00001",)
    assert result.generation == 2
    _assert_complete_pool(client, 2)


def test_an_edited_slice_is_restored_and_a_stranger_removed() -> None:
    client = FakeSliceClient()
    publisher = _publisher(client)
    publisher.publish(_inventory())
    edited = client.get("node-a-gpu.dra-driver.io-00001")
    assert edited is not None and edited.spec.devices
    edited.spec.devices = edited.spec.devices[:1]
    client.update_slice(edited)
    stranger = build_slices(_inventory(), generation=1)[1]
    stranger.metadata.name = "node-a-gpu.dra-driver.io-legacy"
    client.create_slice(stranger)
    result = publisher.sync()
    assert result.deleted == ("node-a-gpu.dra-driver.io-legacy",)
    _assert_complete_pool(client, 2)
    assert [dump(s)["spec"]["devices"] if s.spec.devices else None for s in _pool(client)] == [
        dump(s)["spec"]["devices"] if s.spec.devices else None
        for s in build_slices(_inventory(), generation=2)
    ]


def test_other_nodes_and_drivers_are_left_alone() -> None:
    client = FakeSliceClient()
    _publisher(client).publish(_inventory())
    other_node = SlicePublisher(client, node_name="node-b")
    other_node.publish(_inventory(node="node-b"))
    other_driver = SlicePublisher(client, node_name=NODE, driver_name="gpu.example.com")
    other_driver.publish(_inventory())
    assert len(client.names) == 6
    result = _publisher(client).publish(_inventory("1xL4"))
    assert len(result.deleted) == 1
    assert len(client.names) == 5


def test_restarted_publisher_keeps_an_identical_pool_and_continues_generations() -> None:
    client = FakeSliceClient()
    first = _publisher(client)
    for _ in range(3):
        first.publish(_inventory(), {"gpu-2": [XID]})
        first.publish(_inventory())
    assert first.generation == 6
    restarted = _publisher(client)
    unchanged = restarted.publish(_inventory())
    assert (unchanged.changed, unchanged.generation) == (False, 6)
    assert restarted.publish(_inventory(), {"gpu-0": [XID]}).generation == 7


def test_a_conflict_is_retried_after_listing_again() -> None:
    client = FakeSliceClient()
    publisher = _publisher(client)
    publisher.publish(_inventory())
    client.fail_next("update_slice", 409)
    result = publisher.publish(_inventory(), {"gpu-2": [XID]})
    assert client.calls.count("list_slices") == 3  # first publish, failed try, retry
    _assert_complete_pool(client, result.generation)


def test_endless_conflicts_give_up_with_a_clear_error() -> None:
    client = FakeSliceClient()
    publisher = _publisher(client, max_attempts=3)
    publisher.publish(_inventory())
    client.fail_next("update_slice", 409, times=3)
    with pytest.raises(SliceApiError, match="kept changing under us \\(3 attempts\\)") as info:
        publisher.publish(_inventory(), {"gpu-2": [XID]})
    assert info.value.status == 409 and info.value.retryable


def test_other_api_errors_are_not_retried() -> None:
    client = FakeSliceClient()
    client.fail_next("create_slice", 403)
    with pytest.raises(SliceApiError) as info:
        _publisher(client).publish(_inventory())
    assert info.value.status == 403
    assert client.calls == ["list_slices", "create_slice"]


def test_fields_the_server_drops_are_reported_once_and_not_republished() -> None:
    client = FakeSliceClient(drop_device_fields=["taints"])
    publisher = _publisher(client)
    result = publisher.publish(_inventory(), {"gpu-2": [XID]})
    assert result.dropped_fields == ("node-a-gpu.dra-driver.io-00001: spec.devices[52].taints",)
    client.calls.clear()
    again = publisher.sync()
    assert not again.changed
    assert client.calls == ["list_slices"]


def test_owner_reference_makes_the_node_the_controller() -> None:
    client = FakeSliceClient()
    _publisher(client, node_uid="0b6c-uid").publish(_inventory())
    for slice_ in _pool(client):
        (owner,) = slice_.metadata.owner_references or []
        assert (owner.kind, owner.name, owner.uid, owner.controller) == (
            "Node",
            NODE,
            "0b6c-uid",
            True,
        )


def test_publishing_another_nodes_inventory_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="inventory is of node 'node-b'"):
        _publisher(FakeSliceClient()).publish(_inventory(node="node-b"))


def test_which_watch_events_need_a_repair() -> None:
    client = FakeSliceClient()
    publisher = _publisher(client)
    publisher.publish(_inventory())
    ours = client.get("node-a-gpu.dra-driver.io-00001")
    assert ours is not None
    assert not publisher.needs_repair(WatchEvent("MODIFIED", ours))
    assert not publisher.needs_repair(WatchEvent("BOOKMARK", None))
    assert publisher.needs_repair(WatchEvent("DELETED", ours))
    changed = ours.model_copy(deep=True)
    changed.spec.pool.generation = 99
    assert publisher.needs_repair(WatchEvent("MODIFIED", changed))
    stranger = ours.model_copy(deep=True)
    stranger.metadata.name = "node-a-gpu.dra-driver.io-99999"
    assert publisher.needs_repair(WatchEvent("ADDED", stranger))
    assert not publisher.needs_repair(WatchEvent("DELETED", stranger))


def test_fake_watch_replays_changes_and_refuses_compacted_versions() -> None:
    client = FakeSliceClient()
    publisher = _publisher(client)
    start = publisher.publish(_inventory()).resource_version
    client.delete_slice("node-a-gpu.dra-driver.io-00000")
    events = list(
        client.watch_slices(
            node_name=NODE, driver_name="gpu.dra-driver.io", resource_version="0", timeout_s=0
        )
    )
    assert [e.type for e in events] == ["ADDED", "ADDED", "DELETED"]
    client.compact()
    with pytest.raises(SliceApiError) as info:
        next(
            client.watch_slices(
                node_name=NODE,
                driver_name="gpu.dra-driver.io",
                resource_version=start,
                timeout_s=0,
            )
        )
    assert info.value.status == 410


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    # A bound for a broken run, not a timing assertion: this normally holds at once.
    done = threading.Event()
    for _ in range(2000):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError(f"gave up waiting for: {what}")


def test_run_repairs_deletions_until_stopped() -> None:
    client = FakeSliceClient()
    publisher = _publisher(client)
    publisher.set_inventory(_inventory())
    stop = threading.Event()
    thread = threading.Thread(
        target=publisher.run, args=(stop,), kwargs={"watch_timeout_s": 0.05, "retry_s": 0.01}
    )
    thread.start()
    try:
        _wait_until(lambda: len(client.names) == 2, "first publish")
        client.delete_slice("node-a-gpu.dra-driver.io-00000")
        _wait_until(lambda: len(client.names) == 2 and publisher.generation >= 2, "repair")
        # An API error is logged and retried, never raised out of run().
        client.fail_next("list_slices", 500)
        client.delete_slice("node-a-gpu.dra-driver.io-00001")
        _wait_until(lambda: len(client.names) == 2 and publisher.generation >= 3, "retry")
    finally:
        stop.set()
        thread.join()
    assert not thread.is_alive()
    _assert_complete_pool(client, publisher.generation)


# --- KubernetesSliceClient ------------------------------------------------------------------


class _Response:
    def __init__(self, payload: Any = None, chunks: list[bytes] | None = None) -> None:
        self.data = json.dumps(payload).encode() if payload is not None else b""
        self._chunks = chunks or []
        self.closed = False

    def stream(self, amt: Any = None, decode_content: bool = True) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


class _StandInApi:
    """Records ResourceV1Api calls and answers from canned JSON, as with _preload_content=False."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, Any] = {}

    def _answer(self, method: str, kwargs: dict[str, Any]) -> Any:
        self.calls.append((method, kwargs))
        answer = self.answers[method]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def list_resource_slice(self, **kwargs: Any) -> Any:
        return self._answer("watch" if kwargs.get("watch") else "list", kwargs)

    def create_resource_slice(self, **kwargs: Any) -> Any:
        return self._answer("create", kwargs)

    def replace_resource_slice(self, **kwargs: Any) -> Any:
        return self._answer("replace", kwargs)

    def delete_resource_slice(self, **kwargs: Any) -> Any:
        return self._answer("delete", kwargs)


def _stored(slice_: ResourceSlice, rv: str) -> dict[str, Any]:
    data = dump(slice_)
    data["metadata"]["resourceVersion"] = rv
    return data


def test_kubernetes_client_speaks_raw_json_and_maps_errors() -> None:
    api = _StandInApi()
    client = KubernetesSliceClient(api=api)
    slice_ = build_slices(_inventory("1xL4"))[0]
    api.answers["list"] = _Response({"metadata": {"resourceVersion": "42"}, "items": []})
    listing = client.list_slices(node_name=NODE, driver_name="gpu.dra-driver.io")
    assert (listing.items, listing.resource_version) == ([], "42")
    assert (
        api.calls[-1][1]["field_selector"] == "spec.nodeName=node-a,spec.driver=gpu.dra-driver.io"
    )
    assert api.calls[-1][1]["_preload_content"] is False

    api.answers["create"] = _Response(_stored(slice_, "43"))
    created = client.create_slice(slice_)
    assert created.metadata.resource_version == "43"
    body = api.calls[-1][1]["body"]
    assert isinstance(body, V1ResourceSlice)
    assert body.to_dict()["spec"]["driver"] == "gpu.dra-driver.io"

    api.answers["replace"] = ApiException(status=409, reason="Conflict")
    with pytest.raises(SliceApiError) as info:
        client.update_slice(created)
    assert info.value.status == 409

    api.answers["delete"] = ApiException(status=404, reason="Not Found")
    client.delete_slice("gone")  # not an error
    api.answers["delete"] = ApiException(status=403, reason="Forbidden")
    with pytest.raises(SliceApiError, match="403 Forbidden"):
        client.delete_slice("forbidden")

    api.answers["list"] = _Response({"metadata": {"resourceVersion": "1"}, "items": [{"x": 1}]})
    with pytest.raises(SliceApiError, match="does not decode"):
        client.list_slices(node_name=NODE, driver_name="gpu.dra-driver.io")


def test_kubernetes_client_watch_parses_events_split_across_chunks() -> None:
    api = _StandInApi()
    client = KubernetesSliceClient(api=api)
    slice_ = _stored(build_slices(_inventory("1xL4"))[0], "50")
    lines = [
        {"type": "ADDED", "object": slice_},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "51"}}},
        {"type": "DELETED", "object": slice_},
        {"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}},
    ]
    raw = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    response = _Response(chunks=[raw[:100], raw[100:1000], raw[1000:]])
    api.answers["watch"] = response
    events: list[WatchEvent] = []
    with pytest.raises(SliceApiError) as info:
        for event in client.watch_slices(
            node_name=NODE, driver_name="gpu.dra-driver.io", resource_version="49", timeout_s=30
        ):
            events.append(event)
    assert [(e.type, e.resource_version) for e in events] == [
        ("ADDED", "50"),
        ("BOOKMARK", "51"),
        ("DELETED", "50"),
    ]
    assert (
        events[0].slice is not None and events[0].slice.metadata.name == slice_["metadata"]["name"]
    )
    assert info.value.status == 410
    assert response.closed
    kwargs = api.calls[-1][1]
    assert (kwargs["resource_version"], kwargs["timeout_seconds"], kwargs["watch"]) == (
        "49",
        30,
        True,
    )
