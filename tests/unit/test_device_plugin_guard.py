"""The device-plugin guard's judgement: which resources and sockets show a device plugin
serving GPUs, what it tells on a change, and what an unreadable Node changes (nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_kit.events import EventRecorder
from kubelet_plugin.device_plugin_guard import DevicePluginGuard, socket_pattern
from tests.fakes.cluster import FakeCluster

NODE = "gpu-node-1"


def _cluster(status: dict[str, Any] | None = None) -> FakeCluster:
    cluster = FakeCluster()
    node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}}
    if status is not None:
        node["status"] = status
    cluster.create("nodes", node)
    return cluster


def _guard(cluster: FakeCluster, changes: list[str | None], **kw: Any) -> DevicePluginGuard:
    return DevicePluginGuard(
        cluster,
        node_name=NODE,
        on_change=changes.append,
        events=EventRecorder(cluster, component="test", instance=NODE),
        **kw,
    )


@pytest.mark.parametrize(
    ("resource", "socket"),
    [
        ("nvidia.com/gpu", "nvidia-gpu.sock"),
        ("nvidia.com/mig-*", "nvidia-mig-*.sock"),
        ("amd.com/gpu", "amd-gpu.sock"),
    ],
)
def test_a_resource_registers_with_the_socket_name_of_the_device_plugin_api(
    resource: str, socket: str
) -> None:
    assert socket_pattern(resource) == socket


@pytest.mark.parametrize(
    ("allocatable", "found"),
    [
        ({"nvidia.com/gpu": "8"}, "nvidia.com/gpu=8"),
        ({"nvidia.com/mig-1g.10gb": "7", "cpu": "64"}, "nvidia.com/mig-1g.10gb=7"),
        ({"nvidia.com/gpu.shared": "40"}, "nvidia.com/gpu.shared=40"),
        ({"nvidia.com/gpu": "0"}, None),
        ({"example.com/fpga": "2", "cpu": "8"}, None),
        ({}, None),
    ],
)
def test_what_in_the_nodes_allocatable_shows_a_device_plugin(
    tmp_path: Path, allocatable: dict[str, str], found: str | None
) -> None:
    changes: list[str | None] = []
    guard = _guard(_cluster({"allocatable": allocatable}), changes, sockets_dir=tmp_path)
    result = guard.check()
    if found is None:
        assert result is None
    else:
        assert result is not None and found in result


def test_capacity_left_by_a_stopped_device_plugin_is_not_a_reason(tmp_path: Path) -> None:
    status = {"capacity": {"nvidia.com/gpu": "8"}, "allocatable": {"nvidia.com/gpu": "0"}}
    assert _guard(_cluster(status), [], sockets_dir=tmp_path).check() is None


def test_a_change_is_told_once_with_an_event_on_the_node(tmp_path: Path) -> None:
    cluster = _cluster({"allocatable": {"nvidia.com/gpu": "2"}})
    changes: list[str | None] = []
    guard = _guard(cluster, changes, sockets_dir=tmp_path)

    guard.update()
    guard.update()
    node = cluster.get("nodes", NODE)
    node["status"] = {"allocatable": {}}
    cluster.replace("nodes", node)
    guard.update()
    guard.update()

    assert len(changes) == 2 and changes[0] is not None and changes[1] is None
    events = cluster.objects("events")
    assert [(e["reason"], e["type"]) for e in events] == [
        ("DevicePluginDetected", "Warning"),
        ("DevicePluginGone", "Normal"),
    ]
    assert all(e["involvedObject"]["kind"] == "Node" for e in events)
    assert all(e["involvedObject"]["name"] == NODE for e in events)
    assert all(e["metadata"]["namespace"] == "default" for e in events)


def test_a_socket_of_a_watched_device_plugin_is_enough(tmp_path: Path) -> None:
    (tmp_path / "kubelet.sock").touch()
    changes: list[str | None] = []
    guard = _guard(_cluster(), changes, sockets_dir=tmp_path)
    assert guard.check() is None
    (tmp_path / "nvidia-mig-3g.40gb.sock").touch()
    found = guard.check()
    assert found is not None and "nvidia-mig-3g.40gb.sock" in found


def test_a_missing_sockets_directory_only_loses_that_signal(tmp_path: Path) -> None:
    changes: list[str | None] = []
    cluster = _cluster({"allocatable": {"nvidia.com/gpu": "1"}})
    guard = _guard(cluster, changes, sockets_dir=tmp_path / "not-mounted")
    assert guard.check() is not None


def test_an_unreadable_node_keeps_the_last_judgement(tmp_path: Path) -> None:
    cluster = _cluster({"allocatable": {"nvidia.com/gpu": "1"}})
    changes: list[str | None] = []
    guard = _guard(cluster, changes, sockets_dir=tmp_path)
    guard.update()
    cluster.fail("get", "nodes", 503)
    guard.update()
    assert len(changes) == 1 and guard.detected is not None


def test_other_resource_patterns_can_be_watched(tmp_path: Path) -> None:
    changes: list[str | None] = []
    cluster = _cluster({"allocatable": {"amd.com/gpu": "4"}})
    assert _guard(cluster, changes, sockets_dir=tmp_path).check() is None
    guard = _guard(cluster, changes, sockets_dir=tmp_path, resources=("amd.com/*",))
    found = guard.check()
    assert found is not None and "amd.com/gpu=4" in found
