"""Health taints that persist, tried on the plugin process as an operator would.

The plugin runs as in test_plugin_process (mock GPUs, fake API server on
loopback); an XID is injected through the mock backend's fault directory. The
API server's :attr:`FakeApiServer.history` holds every slice write, so "no
publish ever carries a tainted device without its taint" is checked on all of
them, not on the last state only.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from driver_fixtures import DRIVER
from fake_apiserver import FakeApiServer
from kubelet_standin import KubeletStandin
from test_plugin_process import (
    CLI,
    PluginProcess,
    api,
    devices_of,
    node_slices,
    root,
    start_plugin,
    stop_plugin,
    wait_running,
)

from kubelet_plugin.health.faults import write_fault
from kubelet_plugin.proto_gen.dra_health.v1 import api_pb2 as health_pb2

pytestmark = pytest.mark.component
__all__ = ["api", "root"]  # fixtures, used by name

XID_KEY = f"{DRIVER}/xid"
UNREADABLE_KEY = f"{DRIVER}/taint-state-unreadable"
RESTARTS = 20


@pytest.fixture
def kubeconfig(root: Path, api: FakeApiServer) -> Path:
    driver_lib = root / "driver" / "usr/lib/x86_64-linux-gnu"
    driver_lib.mkdir(parents=True)
    (driver_lib / "libcuda.so.550.54.15").write_bytes(b"\x7fELF")
    return api.write_kubeconfig(root / "kubeconfig")


@pytest.fixture
def started(root: Path, kubeconfig: Path) -> Iterator[list[PluginProcess]]:
    """Every plugin process a test starts, killed at the end whatever happened."""
    processes: list[PluginProcess] = []
    yield processes
    for process in processes:
        process.close()


def plugin_dir(root: Path) -> Path:
    return root / "plugins" / DRIVER


def start(root: Path, kubeconfig: Path, started: list[PluginProcess], *extra: str) -> PluginProcess:
    plugin = start_plugin(root, kubeconfig, *extra)
    started.append(plugin)
    return plugin


def taint_keys(device: dict[str, Any]) -> list[str]:
    return [t["key"] for t in device.get("taints") or []]


def slice_writes(api: FakeApiServer) -> list[dict[str, Any]]:
    """Every slice the plugin created or updated, in order."""
    return [w.object for w in list(api.history) if w.type != "DELETED"]


def published_keys(api: FakeApiServer, device: str) -> list[str] | None:
    return next(
        (taint_keys(d) for name, d in devices_of(node_slices(api)).items() if name == device),
        None,
    )


def taints_clear(root: Path, *target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            "taints",
            "clear",
            "--node-state-dir",
            str(plugin_dir(root)),
            *target,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def health_of(plugin: PluginProcess) -> dict[str, int]:
    with KubeletStandin().register(plugin.registration_socket) as kubelet:
        stream = kubelet.watch_health()
        response = stream.next()
        stream.cancel()
    return {d.device.device_name: d.health for d in response.devices}


def test_a_taint_survives_a_restart_storm_and_is_never_published_without_it(
    root: Path, api: FakeApiServer, kubeconfig: Path, started: list[PluginProcess]
) -> None:
    plugin = start(root, kubeconfig, started)
    wait_running(api, plugin)
    api.wait_for(lambda: len(node_slices(api)) == 2, "the node's slices")
    write_fault(plugin.faults, "xid", gpu="gpu-1", xid=79)
    api.wait_for(lambda: published_keys(api, "gpu-1") == [XID_KEY], "gpu-1 tainted")
    first_tainted = len(api.history)

    rounds = random.Random(13)  # a fixed mix, so that a failure replays
    for round_ in range(RESTARTS):
        if round_ % 3 == 0:
            # As the kubelet does at its start-up: the next plugin must write them all again.
            for name in list(node_slices(api)):
                api.delete_slice(name)
        if round_ % 4 == 0:
            wait_running(api, plugin)
            assert stop_plugin(plugin) == 0, plugin.logs()
        else:
            # Anywhere: importing, restoring the taints, publishing, or running.
            time.sleep(rounds.uniform(0.0, 1.5))
            plugin.process.send_signal(signal.SIGKILL)
            plugin.close()
        plugin = start(root, kubeconfig, started)

    wait_running(api, plugin)
    api.wait_for(lambda: len(node_slices(api)) == 2, "the node's slices at the end")
    after = slice_writes(api)[first_tainted:]
    assert len(after) >= 2, "the deleted slices were written again"
    for written in after:
        device = devices_of({"s": written}).get("gpu-1")
        if device is not None:
            assert taint_keys(device) == [XID_KEY], f"gpu-1 published without its taint: {device}"
    assert published_keys(api, "gpu-1") == [XID_KEY]
    assert health_of(plugin)["gpu-1"] == health_pb2.UNHEALTHY
    saved = json.loads((plugin_dir(root) / "taints.json").read_text())
    (taint,) = saved["gpus"]["gpu-1"]["taints"]
    assert (taint["key"], taint["value"], taint["cause"]["kind"], taint["cause"]["xid"]) == (
        XID_KEY,
        "79",
        "xid",
        79,
    )
    assert stop_plugin(plugin) == 0, plugin.logs()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unreadable_taint_file_taints_every_device_until_an_admin_clears_it(
    root: Path,
    api: FakeApiServer,
    kubeconfig: Path,
    started: list[PluginProcess],
    damage: str,
) -> None:
    state = plugin_dir(root)
    state.mkdir(parents=True, mode=0o700)
    if damage == "garbage":
        (state / "taints.json").write_bytes(b"\x00\xffnot json at all")
    else:
        whole = {"version": 1, "bootId": "b", "gpus": {"gpu-1": {"uuid": "u", "taints": []}}}
        text = json.dumps(whole)
        (state / "taints.json").write_text(text[: len(text) // 2])

    plugin = start(root, kubeconfig, started)
    wait_running(api, plugin)
    api.wait_for(lambda: len(node_slices(api)) == 2, "the node's slices")
    errors = [r["msg"] for r in plugin.records if r["level"] == "error"]
    assert len(errors) == 1 and errors[0].startswith("TaintStateCorruptError: taint file")
    assert len(list(state.glob("taints.json.corrupt-*"))) == 1  # kept for a person to read
    for written in slice_writes(api):
        for name, device in devices_of({"s": written}).items():
            assert taint_keys(device) == [UNREADABLE_KEY], f"{name} published untainted"
    assert set(health_of(plugin).values()) == {health_pb2.UNHEALTHY}

    # A restart keeps the safe default: the stand-in taint was saved in a new file.
    assert stop_plugin(plugin) == 0, plugin.logs()
    plugin = start(root, kubeconfig, started)
    wait_running(api, plugin)
    assert published_keys(api, "gpu-0") == [UNREADABLE_KEY]

    cleared = taints_clear(root, "--all")
    assert cleared.returncode == 0, cleared.stderr
    assert "cleared by the plugin and saved" in cleared.stdout
    api.wait_for(
        lambda: not any(taint_keys(d) for d in devices_of(node_slices(api)).values()),
        "every taint to be removed",
        on_timeout=plugin.logs,
    )
    assert stop_plugin(plugin) == 0, plugin.logs()


def test_an_admin_clear_is_kept_across_a_restart(
    root: Path, api: FakeApiServer, kubeconfig: Path, started: list[PluginProcess]
) -> None:
    plugin = start(root, kubeconfig, started)
    wait_running(api, plugin)
    write_fault(plugin.faults, "xid", gpu="gpu-0", xid=48)
    write_fault(plugin.faults, "xid", gpu="gpu-1", xid=79)
    api.wait_for(lambda: published_keys(api, "gpu-1") == [XID_KEY], "gpu-1 tainted")
    api.wait_for(lambda: published_keys(api, "gpu-0") == [XID_KEY], "gpu-0 tainted")

    unknown = taints_clear(root, "gpu-9")
    assert unknown.returncode == 1
    assert "not a device of this node" in unknown.stderr
    cleared = taints_clear(root, "gpu-1")
    assert cleared.returncode == 0, cleared.stderr
    api.wait_for(lambda: published_keys(api, "gpu-1") == [], "gpu-1 untainted")

    plugin.process.send_signal(signal.SIGKILL)
    plugin.close()
    for name in list(node_slices(api)):
        api.delete_slice(name)
    written_before = len(api.history)
    plugin = start(root, kubeconfig, started)
    wait_running(api, plugin)
    api.wait_for(lambda: len(node_slices(api)) == 2, "the node's slices again")
    for written in slice_writes(api)[written_before:]:
        devices = devices_of({"s": written})
        if "gpu-1" in devices:
            assert taint_keys(devices["gpu-1"]) == [], "the cleared taint came back"
        if "gpu-0" in devices:
            assert taint_keys(devices["gpu-0"]) == [XID_KEY], "a taint not cleared went"
    assert stop_plugin(plugin) == 0, plugin.logs()


def test_a_clear_requested_while_the_plugin_is_down_applies_before_its_first_publish(
    root: Path, api: FakeApiServer, kubeconfig: Path, started: list[PluginProcess]
) -> None:
    plugin = start(root, kubeconfig, started)
    wait_running(api, plugin)
    write_fault(plugin.faults, "xid", gpu="gpu-1", xid=79)
    api.wait_for(lambda: published_keys(api, "gpu-1") == [XID_KEY], "gpu-1 tainted")
    assert stop_plugin(plugin) == 0, plugin.logs()

    queued = taints_clear(root, "gpu-1", "--wait", "0")
    assert queued.returncode == 0, queued.stderr
    assert "queued" in queued.stdout
    written_before = len(api.history)
    plugin = start(root, kubeconfig, started)
    wait_running(api, plugin)
    api.wait_for(lambda: published_keys(api, "gpu-1") == [], "gpu-1 untainted")
    assert not list((plugin_dir(root) / "taint-clears").glob("*.json"))
    for written in slice_writes(api)[written_before:]:
        device = devices_of({"s": written}).get("gpu-1")
        assert device is None or taint_keys(device) == []
    assert stop_plugin(plugin) == 0, plugin.logs()


def test_in_a_rolling_update_the_instance_taking_over_keeps_the_clears_and_the_taints(
    root: Path, api: FakeApiServer, kubeconfig: Path, started: list[PluginProcess]
) -> None:
    old = start(root, kubeconfig, started, "--pod-uid", "0c8a1d5e-1111-4f3a-9d7e-6b2c4a8e0f01")
    wait_running(api, old)
    write_fault(old.faults, "xid", gpu="gpu-1", xid=79)
    api.wait_for(lambda: published_keys(api, "gpu-1") == [XID_KEY], "gpu-1 tainted")
    new = start(root, kubeconfig, started, "--pod-uid", "7f3b2e9a-2222-4c1d-8e6f-9a0b1c2d3e4f")
    wait_running(api, new)
    api.wait_for(
        lambda: new.record("another plugin instance on this node holds") is not None,
        "the new instance to wait for the publisher lock",
        on_timeout=new.logs,
    )

    # Applied by the publishing instance; the waiting one started with gpu-1 tainted.
    cleared = taints_clear(root, "gpu-1")
    assert cleared.returncode == 0, cleared.stderr
    api.wait_for(lambda: published_keys(api, "gpu-1") == [], "gpu-1 untainted")
    write_fault(old.faults, "xid", gpu="gpu-0", xid=48)  # either instance may read it
    api.wait_for(
        lambda: (
            json.loads((plugin_dir(root) / "taints.json").read_text())["gpus"]
            or new.record("XID 48") is not None
        ),
        "one instance to see XID 48",
    )

    assert stop_plugin(old) == 0, old.logs()
    api.wait_for(
        lambda: new.record("took over publishing the node's ResourceSlices") is not None,
        "the new instance to take over",
        on_timeout=new.logs,
    )
    api.wait_for(lambda: published_keys(api, "gpu-0") == [XID_KEY], "gpu-0 tainted")
    assert published_keys(api, "gpu-1") == []
    saved = json.loads((plugin_dir(root) / "taints.json").read_text())
    assert list(saved["gpus"]) == ["gpu-0"]
    assert stop_plugin(new) == 0, new.logs()
