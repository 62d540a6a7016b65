"""SlicePublisher, and the typed SliceClient under it, against the in-memory API server.

The publisher talks to :class:`tests.fakes.cluster.FakeCluster` through the same
:class:`~kubelet_plugin.slice_client.SliceClient` it uses in a cluster; the fake's call
log counts round trips, its fault injection plays a busy or refusing server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from agent_kit.kube import ApiError, ConflictError, ForbiddenError, GoneError
from api.errors import InvalidInputError
from api.resource_v1 import DeviceTaint, ResourceSlice, dump
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import NodeInventory
from dra_driver.slices import build_slices
from kubelet_plugin.publisher import SlicePublisher
from kubelet_plugin.slice_client import SliceClient, SliceEvent
from tests.fakes.cluster import FakeCluster

NODE = "node-a"
DRIVER = "gpu.dra-driver.io"
XID = DeviceTaint(key="gpu.dra-driver.io/xid", value="79", effect="NoSchedule")


class Server:
    """The fake API server and the publisher's typed client over it."""

    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.client = SliceClient(self.cluster)

    @property
    def names(self) -> list[str]:
        return [o["metadata"]["name"] for o in self.cluster.objects("resourceslices")]

    def get(self, name: str) -> ResourceSlice:
        """The stored slice (read past the call log)."""
        (stored,) = [
            o for o in self.cluster.objects("resourceslices") if o["metadata"]["name"] == name
        ]
        return ResourceSlice.model_validate(stored)

    def calls(self) -> list[str]:
        """The verbs of the ResourceSlice calls so far, in order."""
        return [c.verb for c in self.cluster.calls if c.resource == "resourceslices"]


def _inventory(profile: str = "2xA100-40GB,1xL4", node: str = NODE) -> NodeInventory:
    return MockBackend(node, profile).discover()


def _publisher(server: Server, **kwargs: Any) -> SlicePublisher:
    return SlicePublisher(server.client, node_name=NODE, **kwargs)


def _pool(server: Server) -> list[ResourceSlice]:
    return [server.get(name) for name in server.names]


def _assert_complete_pool(server: Server, generation: int) -> None:
    pool = [s for s in _pool(server) if s.spec.node_name == NODE]
    assert pool
    assert {s.spec.pool.generation for s in pool} == {generation}
    assert {s.spec.pool.resource_slice_count for s in pool} == {len(pool)}


def test_first_publish_creates_the_pool_at_generation_1() -> None:
    server = Server()
    result = _publisher(server).publish(_inventory())
    assert result.generation == 1
    assert result.created == ("node-a-gpu.dra-driver.io-00000", "node-a-gpu.dra-driver.io-00001")
    assert (result.updated, result.deleted, result.dropped_fields) == ((), (), ())
    _assert_complete_pool(server, 1)
    stored = [dump(s)["spec"] for s in _pool(server)]
    assert stored == [dump(s)["spec"] for s in build_slices(_inventory())]


def test_nothing_changed_means_nothing_written() -> None:
    server = Server()
    publisher = _publisher(server)
    publisher.publish(_inventory(), {"gpu-2": [XID]})
    server.cluster.calls.clear()
    result = publisher.sync()
    assert not result.changed
    assert result.generation == 1
    # The server's timeAdded on the taint is not a difference.
    (taint,) = [t for s in _pool(server) for d in s.spec.devices or [] for t in d.taints or []]
    assert taint.time_added is not None
    assert server.calls() == ["list"]


def test_a_change_bumps_the_generation_of_every_slice() -> None:
    server = Server()
    publisher = _publisher(server)
    publisher.publish(_inventory())
    result = publisher.publish(_inventory(), {"gpu-2": [XID]})
    assert result.generation == 2
    assert len(result.updated) == 2 and not result.created
    _assert_complete_pool(server, 2)
    tainted = [d.name for s in _pool(server) for d in s.spec.devices or [] if d.taints]
    assert tainted == ["gpu-2"]


def test_obsolete_slices_are_deleted_before_anything_else() -> None:
    server = Server()
    publisher = _publisher(server)
    publisher.publish(_inventory("16xH100-80GB"))
    assert len(server.names) == 9
    server.cluster.calls.clear()
    result = publisher.publish(_inventory("1xL4"))
    assert result.generation == 2
    assert len(result.deleted) == 8
    assert server.calls()[1:9] == ["delete"] * 8
    assert server.calls()[9:] == ["replace"]
    _assert_complete_pool(server, 2)


def test_a_slice_deleted_by_the_kubelet_comes_back() -> None:
    server = Server()
    publisher = _publisher(server)
    publisher.publish(_inventory())
    server.cluster.delete("resourceslices", "node-a-gpu.dra-driver.io-00001")
    result = publisher.sync()
    assert result.created == ("node-a-gpu.dra-driver.io-00001",)
    assert result.generation == 2
    _assert_complete_pool(server, 2)


def test_an_edited_slice_is_restored_and_a_stranger_removed() -> None:
    server = Server()
    publisher = _publisher(server)
    publisher.publish(_inventory())
    edited = server.get("node-a-gpu.dra-driver.io-00001")
    assert edited.spec.devices
    edited.spec.devices = edited.spec.devices[:1]
    server.client.update_slice(edited)
    stranger = build_slices(_inventory(), generation=1)[1]
    stranger.metadata.name = "node-a-gpu.dra-driver.io-legacy"
    server.client.create_slice(stranger)
    result = publisher.sync()
    assert result.deleted == ("node-a-gpu.dra-driver.io-legacy",)
    _assert_complete_pool(server, 2)
    assert [dump(s)["spec"]["devices"] if s.spec.devices else None for s in _pool(server)] == [
        dump(s)["spec"]["devices"] if s.spec.devices else None
        for s in build_slices(_inventory(), generation=2)
    ]


def test_other_nodes_and_drivers_are_left_alone() -> None:
    server = Server()
    _publisher(server).publish(_inventory())
    other_node = SlicePublisher(server.client, node_name="node-b")
    other_node.publish(_inventory(node="node-b"))
    other_driver = SlicePublisher(server.client, node_name=NODE, driver_name="gpu.example.com")
    other_driver.publish(_inventory())
    assert len(server.names) == 6
    result = _publisher(server).publish(_inventory("1xL4"))
    assert len(result.deleted) == 1
    assert len(server.names) == 5


def test_restarted_publisher_keeps_an_identical_pool_and_continues_generations() -> None:
    server = Server()
    first = _publisher(server)
    for _ in range(3):
        first.publish(_inventory(), {"gpu-2": [XID]})
        first.publish(_inventory())
    assert first.generation == 6
    restarted = _publisher(server)
    unchanged = restarted.publish(_inventory())
    assert (unchanged.changed, unchanged.generation) == (False, 6)
    assert restarted.publish(_inventory(), {"gpu-0": [XID]}).generation == 7


def test_a_conflict_is_retried_after_listing_again() -> None:
    server = Server()
    publisher = _publisher(server)
    publisher.publish(_inventory())
    server.cluster.fail("replace", "resourceslices", 409)
    result = publisher.publish(_inventory(), {"gpu-2": [XID]})
    assert server.calls().count("list") == 3  # first publish, failed try, retry
    _assert_complete_pool(server, result.generation)


def test_endless_conflicts_give_up_with_a_clear_error() -> None:
    server = Server()
    publisher = _publisher(server, max_attempts=3)
    publisher.publish(_inventory())
    server.cluster.fail("replace", "resourceslices", 409, times=3)
    with pytest.raises(ConflictError, match="kept changing under us \\(3 attempts\\)"):
        publisher.publish(_inventory(), {"gpu-2": [XID]})
    assert server.calls().count("replace") == 3


def test_other_api_errors_are_not_retried() -> None:
    server = Server()
    server.cluster.fail("create", "resourceslices", 403)
    with pytest.raises(ForbiddenError):
        _publisher(server).publish(_inventory())
    assert server.calls() == ["list", "create"]


def test_fields_the_server_drops_are_reported_once_and_not_republished() -> None:
    server = Server()
    # A server with the DRADeviceTaints feature gate off does not store taints.
    server.cluster.drop_fields("resourceslices", "spec.devices[].taints")
    publisher = _publisher(server)
    result = publisher.publish(_inventory(), {"gpu-2": [XID]})
    assert result.dropped_fields == ("node-a-gpu.dra-driver.io-00001: spec.devices[52].taints",)
    server.cluster.calls.clear()
    again = publisher.sync()
    assert not again.changed
    assert server.calls() == ["list"]


def test_owner_reference_makes_the_node_the_controller() -> None:
    server = Server()
    _publisher(server, node_uid="0b6c-uid").publish(_inventory())
    for slice_ in _pool(server):
        (owner,) = slice_.metadata.owner_references or []
        assert (owner.kind, owner.name, owner.uid, owner.controller) == (
            "Node",
            NODE,
            "0b6c-uid",
            True,
        )


def test_publishing_another_nodes_inventory_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="inventory is of node 'node-b'"):
        _publisher(Server()).publish(_inventory(node="node-b"))


def test_which_watch_events_need_a_repair() -> None:
    server = Server()
    publisher = _publisher(server)
    publisher.publish(_inventory())
    ours = server.get("node-a-gpu.dra-driver.io-00001")
    assert not publisher.needs_repair(SliceEvent("MODIFIED", ours))
    assert not publisher.needs_repair(SliceEvent("BOOKMARK", None))
    assert publisher.needs_repair(SliceEvent("DELETED", ours))
    changed = ours.model_copy(deep=True)
    changed.spec.pool.generation = 99
    assert publisher.needs_repair(SliceEvent("MODIFIED", changed))
    stranger = ours.model_copy(deep=True)
    stranger.metadata.name = "node-a-gpu.dra-driver.io-99999"
    assert publisher.needs_repair(SliceEvent("ADDED", stranger))
    assert not publisher.needs_repair(SliceEvent("DELETED", stranger))


def test_the_slice_watch_sees_this_nodes_changes_and_refuses_compacted_versions() -> None:
    server = Server()
    publisher = _publisher(server)
    start = publisher.publish(_inventory()).resource_version
    SlicePublisher(server.client, node_name="node-b").publish(_inventory(node="node-b"))
    server.cluster.delete("resourceslices", "node-a-gpu.dra-driver.io-00000")
    events = list(
        server.client.watch_slices(
            node_name=NODE, driver_name=DRIVER, resource_version="0", timeout_s=0
        )
    )
    assert [(e.type, e.slice.metadata.name if e.slice else None) for e in events] == [
        ("ADDED", "node-a-gpu.dra-driver.io-00000"),
        ("ADDED", "node-a-gpu.dra-driver.io-00001"),
        ("DELETED", "node-a-gpu.dra-driver.io-00000"),
    ]
    server.cluster.compact()
    with pytest.raises(GoneError):
        next(
            server.client.watch_slices(
                node_name=NODE, driver_name=DRIVER, resource_version=start, timeout_s=0
            )
        )


def test_a_slice_that_does_not_decode_is_an_api_error() -> None:
    server = Server()
    server.cluster.put(
        "resourceslices",
        {"metadata": {"name": "broken"}, "spec": {"nodeName": NODE, "driver": DRIVER, "pool": 7}},
    )
    with pytest.raises(ApiError, match="list resourceslices: the API server returned a slice"):
        server.client.list_slices(node_name=NODE, driver_name=DRIVER)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    # A bound for a broken run, not a timing assertion: this normally holds at once.
    done = threading.Event()
    for _ in range(2000):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError(f"gave up waiting for: {what}")


def test_run_repairs_deletions_until_stopped() -> None:
    server = Server()
    publisher = _publisher(server)
    publisher.set_inventory(_inventory())
    stop = threading.Event()
    thread = threading.Thread(
        target=publisher.run,
        args=(stop,),
        kwargs={"watch_timeout_s": 0.05, "retry_s": 0.01, "max_retry_s": 0.05},
    )
    thread.start()
    try:
        _wait_until(lambda: len(server.names) == 2, "first publish")
        server.cluster.delete("resourceslices", "node-a-gpu.dra-driver.io-00000")
        _wait_until(lambda: len(server.names) == 2 and publisher.generation >= 2, "repair")
        # An API error is logged and retried, never raised out of run().
        server.cluster.fail("list", "resourceslices", 500)
        server.cluster.delete("resourceslices", "node-a-gpu.dra-driver.io-00001")
        _wait_until(lambda: len(server.names) == 2 and publisher.generation >= 3, "retry")
    finally:
        stop.set()
        thread.join()
    assert not thread.is_alive()
    _assert_complete_pool(server, publisher.generation)
