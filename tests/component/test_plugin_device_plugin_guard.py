"""A device plugin on the node: the plugin process steps aside and comes back.

The plugin runs as in test_plugin_process.py (mock GPUs ``2xH100-80GB``, a fake API
server), looking for a device plugin every 0.2 s. The test plays the kubelet's side of a
device plugin: the Node's ``status.allocatable`` gets ``nvidia.com/gpu``, and a device
plugin's socket appears in the kubelet's device-plugin directory.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_apiserver import FakeApiServer
from test_plugin_process import (
    NODE,
    PluginProcess,
    api,
    devices_of,
    metric,
    node_slices,
    root,
    scrape,
    start_plugin,
    stop_plugin,
    wait_running,
)

__all__ = ["api", "root"]  # fixtures, used by name

pytestmark = pytest.mark.component

DEVICE_PLUGIN = {"allocatable": {"nvidia.com/gpu": "2"}, "capacity": {"nvidia.com/gpu": "2"}}
DETECTED = "dra_driver_device_plugin_detected"


def _start(root: Path, api: FakeApiServer, *extra: str) -> PluginProcess:
    driver_lib = root / "driver" / "usr/lib/x86_64-linux-gnu"
    driver_lib.mkdir(parents=True, exist_ok=True)
    (driver_lib / "libcuda.so.550.54.15").write_bytes(b"\x7fELF")
    kubeconfig = api.write_kubeconfig(root / "kubeconfig")
    plugin = start_plugin(root, kubeconfig, "--device-plugin-check-seconds", "0.2", *extra)
    return plugin


def _published(api: FakeApiServer) -> list[str]:
    """The devices of the node's pool (whole GPUs, and MIG placements of the H100s)."""
    return sorted(devices_of(node_slices(api)))


def _detected(plugin: PluginProcess, record: dict[str, object]) -> float | None:
    return metric(scrape(str(record["metrics_address"])), DETECTED)


@pytest.fixture
def sockets_dir(root: Path) -> Iterator[Path]:
    directory = root / "device-plugins"
    directory.mkdir()
    yield directory


def test_a_device_plugin_on_the_node_withdraws_every_device_until_it_goes(
    root: Path, api: FakeApiServer, sockets_dir: Path
) -> None:
    api.set_node_status(NODE, DEVICE_PLUGIN)
    plugin = _start(root, api)
    try:
        record = wait_running(api, plugin)
        # From the first publish on: the pool is there, with no device in it.
        api.wait_for(lambda: bool(node_slices(api)), "the node's pool", on_timeout=plugin.logs)
        assert _published(api) == []
        assert _detected(plugin, record) == 1.0
        warning = plugin.record("node " + NODE + ": a device plugin serves GPUs")
        assert warning is not None and warning["level"] == "warning", plugin.logs()
        assert "nvidia.com/gpu=2" in str(warning["msg"])
        assert "--device-plugin-coexistence publish" in str(warning["msg"])
        (event,) = [e for e in api.events if e["reason"] == "DevicePluginDetected"]
        assert event["involvedObject"]["kind"] == "Node"
        assert event["involvedObject"]["name"] == NODE
        assert event["type"] == "Warning"

        # The device plugin is removed: the devices come back.
        api.set_node_status(NODE, {"allocatable": {"nvidia.com/gpu": "0"}})
        api.wait_for(
            lambda: {"gpu-0", "gpu-1"} <= set(_published(api)),
            "the devices to be published again",
            on_timeout=plugin.logs,
        )
        assert _detected(plugin, record) == 0.0
        assert api.event_reasons() == ["DevicePluginDetected", "DevicePluginGone"]

        # A device plugin registers its socket before the Node's status says so.
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(sockets_dir / "nvidia-gpu.sock"))
            api.wait_for(
                lambda: _published(api) == [], "the devices withdrawn", on_timeout=plugin.logs
            )
        assert api.event_reasons()[-1] == "DevicePluginDetected"
        assert "nvidia-gpu.sock" in api.events[-1]["message"]
    finally:
        code = stop_plugin(plugin)
    assert code == 0, plugin.logs()


def test_sockets_of_other_device_plugins_are_not_a_reason(
    root: Path, api: FakeApiServer, sockets_dir: Path
) -> None:
    (sockets_dir / "kubelet.sock").write_bytes(b"")
    (sockets_dir / "example-fpga.sock").write_bytes(b"")
    api.set_node_status(NODE, {"allocatable": {"example.com/fpga": "4", "cpu": "8"}})
    plugin = _start(root, api)
    try:
        record = wait_running(api, plugin)
        api.wait_for(
            lambda: {"gpu-0", "gpu-1"} <= set(_published(api)),
            "the devices",
            on_timeout=plugin.logs,
        )
        assert _detected(plugin, record) == 0.0
        assert api.events == []
    finally:
        assert stop_plugin(plugin) == 0, plugin.logs()


def test_publish_mode_keeps_the_devices_and_says_so(root: Path, api: FakeApiServer) -> None:
    api.set_node_status(NODE, {"allocatable": {"nvidia.com/mig-1g.10gb": "7"}})
    plugin = _start(root, api, "--device-plugin-coexistence", "publish")
    try:
        record = wait_running(api, plugin)
        api.wait_for(
            lambda: {"gpu-0", "gpu-1"} <= set(_published(api)),
            "the devices",
            on_timeout=plugin.logs,
        )
        assert _detected(plugin, record) == 1.0
        warning = plugin.record("node " + NODE + ": a device plugin serves GPUs")
        assert warning is not None, plugin.logs()
        assert "publishes its devices anyway" in str(warning["msg"])
        assert api.event_reasons() == ["DevicePluginDetected"]
    finally:
        assert stop_plugin(plugin) == 0, plugin.logs()
