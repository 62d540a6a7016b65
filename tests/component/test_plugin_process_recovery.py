"""Recovery the hardware confirms, tried on the plugin process with mock GPUs.

The mock backend's fault spool plays what NVML would report: an event with its
recovery action, the action changing, a GPU that does not validate, a reset, a driver
without the field, and a reboot (a ``boot_id`` file in the fault directory stands in
for ``/proc/sys/kernel/random/boot_id``). The recovery window is 1 s here, so a taint
still published after it is kept by the recovery action, not by the window.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from driver_fixtures import DRIVER
from fake_apiserver import FakeApiServer
from test_plugin_process import (
    PluginProcess,
    api,
    devices_of,
    metric,
    node_slices,
    root,
    scrape,
    stop_plugin,
    wait_running,
)
from test_plugin_process_taints import health_of, kubeconfig, plugin_dir, start, started

from kubelet_plugin.health.faults import BOOT_ID_FILE, write_fault
from kubelet_plugin.proto_gen.dra_health.v1 import api_pb2 as health_pb2

pytestmark = pytest.mark.component
__all__ = ["api", "kubeconfig", "root", "started"]  # fixtures, used by name

XID_KEY = f"{DRIVER}/xid"
ECC_KEY = f"{DRIVER}/ecc"
WINDOW = ("--health-recovery-seconds", "1")
#: Longer than the window: a taint still there after it is kept by something else.
PAST_THE_WINDOW_S = 2.5


def published(api: FakeApiServer, device: str) -> list[tuple[str, str | None, str]] | None:
    found = devices_of(node_slices(api)).get(device)
    if found is None:
        return None
    return [(t["key"], t.get("value"), t["effect"]) for t in found.get("taints") or []]


def wait_log(api: FakeApiServer, plugin: PluginProcess, start_of_message: str) -> None:
    api.wait_for(
        lambda: plugin.record(start_of_message) is not None,
        f"the log line {start_of_message!r}",
        on_timeout=plugin.logs,
    )


def saved(root: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((plugin_dir(root) / "taints.json").read_text())
    return document


def test_a_reset_action_keeps_the_taint_until_it_reads_none_and_the_gpu_validates(
    root: Path, api: FakeApiServer, kubeconfig: Path, started: list[PluginProcess]
) -> None:
    plugin = start(root, kubeconfig, started, *WINDOW)
    running = wait_running(api, plugin)
    write_fault(plugin.faults, "xid", gpu="gpu-1", xid=48, recoveryAction="GPU_RESET")
    tainted = [(XID_KEY, "48", "NoExecute")]  # XID 48 needs a reset: pods must leave
    api.wait_for(lambda: published(api, "gpu-1") == tainted, "gpu-1 tainted NoExecute")
    wait_log(api, plugin, "gpu-1: recovery action GPU_RESET: taints kept until it reads NONE")

    time.sleep(PAST_THE_WINDOW_S)
    assert published(api, "gpu-1") == tainted

    # The action reads NONE, but the GPU does not validate yet: still kept.
    write_fault(plugin.faults, "invalid", gpu="gpu-1", problem="row remapping pending")
    write_fault(plugin.faults, "recovery-action", gpu="gpu-1", action="NONE")
    wait_log(api, plugin, "gpu-1: recovery action NONE but the GPU does not validate (row")
    assert published(api, "gpu-1") == tainted

    write_fault(plugin.faults, "reset", gpu="gpu-1")
    api.wait_for(lambda: published(api, "gpu-1") == [], "gpu-1 untainted", on_timeout=plugin.logs)
    wait_log(api, plugin, "gpu-1: recovery action NONE and the GPU validates: taints")
    api.wait_for(
        lambda: {"GpuTainted", "GpuRecovered"} <= set(api.event_reasons()),
        "the Node Events",
        on_timeout=plugin.logs,
    )
    text = scrape(running["metrics_address"])
    count = 'dra_driver_health_recovery_seconds_count{field="supported",method="recovery-action"}'
    assert metric(text, count) == 1
    assert metric(text, f'dra_driver_health_taint_delay_seconds_count{{key="{XID_KEY}"}}') == 1
    assert stop_plugin(plugin) == 0, plugin.logs()


def test_a_reboot_action_keeps_the_taint_across_restarts_until_the_boot_id_changes(
    root: Path, api: FakeApiServer, kubeconfig: Path, started: list[PluginProcess]
) -> None:
    plugin = start(root, kubeconfig, started, *WINDOW)
    wait_running(api, plugin)
    write_fault(plugin.faults, "ecc-double-bit", gpu="gpu-1", recoveryAction="NODE_REBOOT")
    tainted = [(ECC_KEY, "double-bit", "NoExecute")]
    api.wait_for(lambda: published(api, "gpu-1") == tainted, "gpu-1 tainted")
    wait_log(api, plugin, "gpu-1: recovery action NODE_REBOOT: taints kept until the node")
    api.wait_for(lambda: saved(root)["gpus"]["gpu-1"].get("awaitingReboot") is True, "saved")
    assert stop_plugin(plugin) == 0, plugin.logs()

    # The same boot: the new mock reads NONE and validates, the window passes; the
    # saved wait for the reboot keeps the taint.
    plugin = start(root, kubeconfig, started, *WINDOW)
    wait_running(api, plugin)
    time.sleep(PAST_THE_WINDOW_S)
    assert published(api, "gpu-1") == tainted
    assert health_of(plugin)["gpu-1"] == health_pb2.UNHEALTHY
    assert stop_plugin(plugin) == 0, plugin.logs()

    (plugin.faults / BOOT_ID_FILE).write_text("5c1e0b7e-0000-4000-8000-00000000b007\n")
    plugin = start(root, kubeconfig, started, *WINDOW)
    wait_running(api, plugin)
    api.wait_for(lambda: published(api, "gpu-1") == [], "gpu-1 untainted after the reboot")
    assert plugin.record(f"gpu-1: taint {ECC_KEY} (ecc-double-bit) dropped: the node rebooted")
    assert saved(root)["gpus"] == {}
    assert stop_plugin(plugin) == 0, plugin.logs()


def test_without_the_field_the_quiet_window_decides_with_a_log_line_and_a_label(
    root: Path, api: FakeApiServer, kubeconfig: Path, started: list[PluginProcess]
) -> None:
    plugin = start(root, kubeconfig, started, *WINDOW)
    running = wait_running(api, plugin)
    write_fault(plugin.faults, "recovery-field", supported=False)  # an older driver
    write_fault(plugin.faults, "xid", gpu="gpu-1", xid=94)
    wait_log(api, plugin, "gpu-1: the driver reports no GPU recovery action (NVML field 230")
    wait_log(api, plugin, "gpu-1: no health event for 0:00:01; the driver reports no recovery")
    api.wait_for(lambda: published(api, "gpu-1") == [], "gpu-1 untainted", on_timeout=plugin.logs)
    writes = [published_in(w.object, "gpu-1") for w in list(api.history)]
    assert [(XID_KEY, "94", "NoSchedule")] in writes, "gpu-1 was published tainted first"
    text = scrape(running["metrics_address"])
    count = 'dra_driver_health_recovery_seconds_count{field="not-supported",method="quiet-window"}'
    assert metric(text, count) == 1
    assert stop_plugin(plugin) == 0, plugin.logs()


def published_in(slice_: dict[str, Any], device: str) -> list[tuple[str, str | None, str]] | None:
    found = devices_of({"s": slice_}).get(device)
    if found is None:
        return None
    return [(t["key"], t.get("value"), t["effect"]) for t in found.get("taints") or []]


def test_an_application_xid_gives_a_taint_with_effect_none_and_the_gpu_stays_healthy(
    root: Path, api: FakeApiServer, kubeconfig: Path, started: list[PluginProcess]
) -> None:
    plugin = start(root, kubeconfig, started)
    running = wait_running(api, plugin)
    write_fault(plugin.faults, "xid", gpu="gpu-1", xid=13)
    informational = [(XID_KEY, "13", "None")]
    api.wait_for(lambda: published(api, "gpu-1") == informational, "gpu-1 informed")
    assert health_of(plugin)["gpu-1"] == health_pb2.HEALTHY
    text = scrape(running["metrics_address"])
    assert metric(text, f'dra_driver_device_taints{{effect="None",key="{XID_KEY}"}}') == 1
    assert stop_plugin(plugin) == 0, plugin.logs()
