"""``dra-driver kubelet-plugin`` as a process of its own, against a fake API server on loopback.

The plugin runs with mock GPUs (``2xH100-80GB``) and every directory under a
short temporary root; the test plays the kubelet (registration, prepare,
unprepare, the health stream), the API server (claims, the node's slices) and
the GPU (an XID injected through the mock backend's fault directory), then
stops the plugin with SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from driver_fixtures import DRIVER, NODE, claim, claim_uid, validate_cdi_file
from fake_apiserver import FakeApiServer
from kubelet_standin import KubeletStandin

from dra_driver.discovery.mock import MockBackend
from kubelet_plugin.health.faults import write_fault
from kubelet_plugin.node_driver import ClaimRef
from kubelet_plugin.proto_gen.dra_health.v1 import api_pb2 as health_pb2

pytestmark = pytest.mark.component

PROFILE = "2xH100-80GB"
NODE_UID = "7d3c1a7e-5b0e-4b47-9a4e-2f6a0c1e9b11"
#: Runs the CLI as the console script does, without depending on the script being installed.
CLI = "import sys; from dra_cli.main import main; sys.exit(main())"


@dataclass
class PluginProcess:
    """The running plugin, its directories and the log records it wrote so far."""

    root: Path
    process: subprocess.Popen[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @property
    def registration_socket(self) -> Path:
        return self.root / "registry" / f"{DRIVER}-reg.sock"

    @property
    def faults(self) -> Path:
        return self.root / "host" / "run" / "dra-driver" / "faults"

    def read_logs(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            try:
                self.records.append(json.loads(line))
            except ValueError:
                # Not ours (e.g. a library printing): keep it for the failure message.
                continue

    def record(self, message_start: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r["msg"].startswith(message_start)), None)

    def logs(self) -> str:
        return "".join(self.lines[-60:])

    def close(self) -> None:
        """Kill the process if it still runs; collect the rest of its log; close the pipe."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()


def plugin_command(root: Path, kubeconfig: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        CLI,
        "kubelet-plugin",
        "--gpu-backend",
        "mock",
        "--mock-profile",
        PROFILE,
        "--node-name",
        NODE,
        "--kubeconfig",
        str(kubeconfig),
        "--registry-dir",
        str(root / "registry"),
        "--plugins-dir",
        str(root / "plugins"),
        "--cdi-root",
        str(root / "cdi"),
        "--dev-root",
        str(root / "host"),
        "--driver-root",
        str(root / "driver"),
        "--device-plugins-dir",
        str(root / "device-plugins"),
        "--metrics-address",
        "127.0.0.1:0",
        "--liveness-address",
        "127.0.0.1:0",
        "--log-format",
        "json",
        *extra,
    ]


def start_plugin(
    root: Path, kubeconfig: Path, *extra: str, unset: Sequence[str] = ()
) -> PluginProcess:
    """Start the plugin; ``extra`` flags come last and win over the defaults above.

    ``unset``: further environment variables the process must not inherit.
    """
    # No inherited twins (NODE_NAME, KUBECONFIG, DRA_DRIVER_*) may change what the flags say.
    dropped = ("NODE_NAME", "KUBECONFIG", *unset)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("DRA_DRIVER_") and k not in dropped
    }
    process = subprocess.Popen(
        plugin_command(root, kubeconfig, *extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    plugin = PluginProcess(root, process)
    plugin._reader = threading.Thread(target=plugin.read_logs, daemon=True)
    plugin._reader.start()
    return plugin


def wait_running(api: FakeApiServer, plugin: PluginProcess) -> dict[str, Any]:
    def running() -> bool:
        if plugin.process.poll() is not None:
            raise AssertionError(f"the plugin exited early:\n{plugin.logs()}")
        return plugin.record("kubelet plugin gpu.dra-driver.io running") is not None

    api.wait_for(running, "the plugin to start")
    record = plugin.record("kubelet plugin gpu.dra-driver.io running")
    assert record is not None
    return record


def stop_plugin(plugin: PluginProcess) -> int:
    plugin.process.send_signal(signal.SIGTERM)
    code = plugin.process.wait(timeout=60)
    plugin.close()
    return code


@pytest.fixture
def root() -> Iterator[Path]:
    # Short: unix socket paths are limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="dra-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.put_node(NODE, NODE_UID)
        yield server


@pytest.fixture
def plugin(root: Path, api: FakeApiServer) -> Iterator[PluginProcess]:
    driver_lib = root / "driver" / "usr/lib/x86_64-linux-gnu"
    driver_lib.mkdir(parents=True)
    (driver_lib / "libcuda.so.550.54.15").write_bytes(b"\x7fELF")
    started = start_plugin(
        root, api.write_kubeconfig(root / "kubeconfig"), "--health-recovery-seconds", "2"
    )
    try:
        yield started
    finally:
        started.close()


def node_slices(api: FakeApiServer) -> dict[str, dict[str, Any]]:
    return {
        name: obj
        for name, obj in api.slices().items()
        if obj["spec"].get("nodeName") == NODE and obj["spec"]["driver"] == DRIVER
    }


def devices_of(slices: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for s in slices.values() for d in s["spec"].get("devices") or []}


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def test_the_plugin_process_serves_the_kubelet_and_the_api_server(
    root: Path, api: FakeApiServer, plugin: PluginProcess
) -> None:
    running = wait_running(api, plugin)
    mock = MockBackend(NODE, PROFILE)

    # The kubelet finds the registration socket and registers the plugin.
    with KubeletStandin().register(plugin.registration_socket) as kubelet:
        assert kubelet.name == DRIVER
        assert kubelet.endpoint == str(root / "plugins" / DRIVER / "dra.sock")
        assert kubelet.supported_versions == (
            "v1.DRAPlugin",
            "v1beta1.DRAPlugin",
            "v1.DRAResourceHealth",
            "v1alpha1.DRAResourceHealth",
        )

        # The node's pool reaches the API server: counters first, then the devices.
        api.wait_for(lambda: len(node_slices(api)) == 2, "the node's two ResourceSlices")
        slices = node_slices(api)
        assert sorted(slices) == [f"{NODE}-{DRIVER}-00000", f"{NODE}-{DRIVER}-00001"]
        for obj in slices.values():
            assert obj["metadata"]["ownerReferences"] == [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "name": NODE,
                    "uid": NODE_UID,
                    "controller": True,
                }
            ]
            assert obj["spec"]["pool"]["name"] == NODE
            assert obj["spec"]["pool"]["resourceSliceCount"] == 2
        counters = slices[f"{NODE}-{DRIVER}-00000"]["spec"]["sharedCounters"]
        assert [c["name"] for c in counters] == ["gpu-0-counter-set", "gpu-1-counter-set"]
        devices = devices_of(slices)
        for gpu in mock.inventory.gpus:
            attributes = devices[gpu.device_name]["attributes"]
            assert attributes["uuid"] == {"string": gpu.uuid}
            assert attributes["productName"] == {"string": "NVIDIA H100 80GB HBM3"}
            assert "taints" not in devices[gpu.device_name]
        assert any(name.startswith("gpu-1-mig-") for name in devices)
        metrics_address = running["metrics_address"]
        assert metric(scrape(metrics_address), "dra_driver_published_devices") == len(devices)

        # The first health snapshot lists every published device, all healthy.
        stream = kubelet.watch_health()
        first = stream.next()
        assert {d.device.device_name for d in first.devices} == set(devices)
        assert {d.health for d in first.devices} == {health_pb2.HEALTHY}
        stream.cancel()

        # A claim allocated gpu-0 is prepared: CDI spec on disk, its ID answered.
        api.put_claim(claim(0, ["gpu-0"]))
        ref = ClaimRef(namespace="default", name="claim-0", uid=claim_uid(0))
        outcome = kubelet.prepare([ref])[claim_uid(0)]
        assert outcome.error == ""
        assert [(d.pool_name, d.device_name) for d in outcome.devices] == [(NODE, "gpu-0")]
        # The GPU, and the request's device metadata file (KEP-5304) on its first device.
        assert outcome.devices[0].cdi_device_ids == (
            f"{DRIVER}/gpu={claim_uid(0)}-gpu-0",
            f"{DRIVER}/gpu={claim_uid(0)}-metadata-gpu",
        )
        spec_file = root / "cdi" / f"{DRIVER}-{claim_uid(0)}.json"
        document = validate_cdi_file(spec_file)
        node = document["devices"][0]["containerEdits"]["deviceNodes"][0]
        assert node == {"path": "/dev/nvidia0", "hostPath": str(root / "host/dev/nvidia0")}
        assert Path(node["hostPath"]).exists()  # the mock's fake device node
        (mount,) = document["devices"][1]["containerEdits"]["mounts"]
        metadata_dir = root / "plugins" / DRIVER / "dra-device-metadata" / claim_uid(0)
        assert mount["hostPath"] == str(metadata_dir / "gpu" / f"{DRIVER}-metadata.json")
        assert Path(mount["hostPath"]).is_file()

        text = scrape(metrics_address)
        assert metric(text, 'dra_driver_requests_total{operation="prepare",result="success"}') == 1
        assert metric(text, 'dra_driver_claims_total{operation="prepare",result="success"}') == 1
        assert metric(text, "dra_driver_prepared_devices") == 1
        assert metric(text, 'dra_driver_request_duration_seconds_count{operation="prepare"}') == 1
        # Per-claim usage is read at each scrape (no process runs on the mock GPUs here).
        assert "# TYPE dra_driver_gpu_memory_used_bytes gauge" in text

        assert kubelet.unprepare([ref]) == {claim_uid(0): ""}
        assert not spec_file.exists()
        assert not metadata_dir.exists()
        assert metric(scrape(metrics_address), "dra_driver_prepared_devices") == 0

        # The kubelet wipes the node's slices at its start-up: the plugin republishes.
        wiped = f"{NODE}-{DRIVER}-00001"
        before = slices[wiped]["metadata"]["uid"]
        api.delete_slice(wiped)
        api.wait_for(
            lambda: wiped in api.slices() and api.slices()[wiped]["metadata"]["uid"] != before,
            "the deleted slice to be published again",
        )
        assert set(devices_of(node_slices(api))) == set(devices)

        # An application XID only informs (effect None); XID 79 (GPU fell off the bus)
        # taints gpu-1 NoExecute and every MIG device on it, through the republished slices.
        write_fault(plugin.faults, "xid", gpu="gpu-0", xid=13)
        write_fault(plugin.faults, "xid", gpu=mock.inventory.gpus[1].uuid, xid=79)

        def tainted_write() -> dict[str, Any] | None:
            for write in list(api.history):
                found = devices_of({"s": write.object}).get("gpu-1")
                if write.type != "DELETED" and found and found.get("taints"):
                    return write.object
            return None

        api.wait_for(lambda: tainted_write() is not None, "a slice with gpu-1 tainted")
        written = devices_of({"s": tainted_write() or {}})
        (taint,) = written["gpu-1"]["taints"]
        assert (taint["key"], taint["value"], taint["effect"]) == (
            f"{DRIVER}/xid",
            "79",
            "NoExecute",
        )
        assert taint["timeAdded"].endswith("Z")
        mig_on_gpu1 = [n for n in written if n.startswith("gpu-1-mig-")]
        assert mig_on_gpu1
        assert all(written[n]["taints"] == [taint] for n in mig_on_gpu1)
        assert all(
            t["effect"] == "None"
            for n, d in written.items()
            if n.startswith("gpu-0")
            for t in d.get("taints") or []
        )

        # Healthy for the recovery window (2 s here): the taints go again.
        api.wait_for(
            lambda: not any(d.get("taints") for d in devices_of(node_slices(api)).values()),
            "the taints to be removed after the recovery window",
        )
        text = scrape(metrics_address)
        assert metric(text, 'dra_driver_health_events_total{action="tainted",kind="xid"}') == 2
        recovered = (
            'dra_driver_health_recovery_seconds_count{field="supported",method="recovery-action"}'
        )
        assert metric(text, recovered) == 1

    # SIGTERM: orderly stop, status 0, no socket left behind.
    assert stop_plugin(plugin) == 0, plugin.logs()
    assert not [p for p in root.rglob("*") if p.is_socket()]
    assert plugin.record("kubelet plugin stopped") is not None
    assert not [r for r in plugin.records if r["level"] == "error"], plugin.logs()
    with pytest.raises(OSError):
        scrape(metrics_address)


def test_a_start_up_failure_is_one_clear_line_and_status_1(root: Path, api: FakeApiServer) -> None:
    plugin = start_plugin(root, root / "missing-kubeconfig")
    try:
        assert plugin.process.wait(timeout=60) == 1
    finally:
        plugin.close()
    errors = [r for r in plugin.records if r["level"] == "error"]
    assert len(errors) == 1, plugin.logs()
    assert errors[0]["msg"].startswith("kubelet plugin failed to start: cannot configure the API")
    assert str(root / "missing-kubeconfig") in errors[0]["msg"]
    assert not [p for p in root.rglob("*") if p.is_socket()]


def test_invalid_flags_are_refused_before_anything_runs(root: Path) -> None:
    result = subprocess.run(
        [
            *plugin_command(root, root / "kubeconfig"),
            "--health-policy",
            "xid=Sometimes",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--health-policy: unknown taint effect 'Sometimes'" in result.stderr
    assert not list(root.iterdir())  # nothing created


def test_the_plugin_outlives_an_api_server_that_drops_connections(
    root: Path, api: FakeApiServer, plugin: PluginProcess
) -> None:
    wait_running(api, plugin)
    api.wait_for(lambda: len(node_slices(api)) == 2, "the node's slices")
    failures = len([r for r in plugin.records if r["level"] == "warning"])

    # The watch is cut mid-stream and every new connection is closed unanswered.
    api.unreachable = True
    api.drop_watches()
    api.wait_for(
        lambda: any(
            r["msg"].startswith("node node-a: publishing slices failed")
            for r in plugin.records[failures:]
        ),
        "the publisher to report the failure",
        on_timeout=plugin.logs,
    )
    api.unreachable = False

    # Still publishing: a slice deleted now comes back.
    wiped = f"{NODE}-{DRIVER}-00000"
    api.delete_slice(wiped)
    api.wait_for(lambda: wiped in api.slices(), "the slice to be published again")
    assert plugin.process.poll() is None, plugin.logs()
    assert stop_plugin(plugin) == 0, plugin.logs()
    assert not [r for r in plugin.records if r["level"] == "error"], plugin.logs()
