"""DRAIN_P2P and the opt-in automatic reset, tried on the plugin process with mock GPUs.

The mock plays the ``pairs-4xA100`` machine (NVLink pairs 0+1, 2+3); the fault spool sets
NVML's recovery action. Without ``--auto-reset`` the draining GPU and its fenced peer stay
tainted; with it, the idle GPU is reset (the mock's reset) and both taints go.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from driver_fixtures import DRIVER
from fake_apiserver import FakeApiServer
from test_plugin_process import PluginProcess, api, metric, root, scrape, stop_plugin, wait_running
from test_plugin_process_recovery import published, published_in, wait_log
from test_plugin_process_taints import kubeconfig, start, started

from kubelet_plugin.health.faults import write_fault

pytestmark = pytest.mark.component
__all__ = ["api", "kubeconfig", "root", "started"]  # fixtures, used by name

MACHINE = ("--mock-profile", "pairs-4xA100", "--health-recovery-seconds", "1")
FENCE = f"{DRIVER}/nvlink-peer-drain.gpu-0"


def test_drain_p2p_fences_the_peer_and_without_auto_reset_both_stay_tainted(
    root: Path, api: FakeApiServer, kubeconfig: Path, started: list[PluginProcess]
) -> None:
    plugin = start(root, kubeconfig, started, *MACHINE)
    wait_running(api, plugin)
    write_fault(plugin.faults, "xid", gpu="gpu-0", xid=94, recoveryAction="DRAIN_P2P")
    api.wait_for(
        lambda: [k for k, _, _ in published(api, "gpu-1") or []] == [FENCE],
        "gpu-1 fenced",
        on_timeout=plugin.logs,
    )
    assert published(api, "gpu-0") == [(f"{DRIVER}/xid", "94", "NoExecute")]
    assert published(api, "gpu-2") == published(api, "gpu-3") == []
    time.sleep(2.5)  # past the window: the action keeps both
    assert [k for k, _, _ in published(api, "gpu-1") or []] == [FENCE]
    assert plugin.record("gpu-0: automatic reset") is None

    write_fault(plugin.faults, "reset", gpu="gpu-0")
    api.wait_for(
        lambda: published(api, "gpu-0") == published(api, "gpu-1") == [],
        "both untainted after the reset",
        on_timeout=plugin.logs,
    )
    assert stop_plugin(plugin) == 0, plugin.logs()


def test_auto_reset_resets_the_idle_drained_gpu_and_the_fence_goes_with_its_taint(
    root: Path, api: FakeApiServer, kubeconfig: Path, started: list[PluginProcess]
) -> None:
    plugin = start(root, kubeconfig, started, *MACHINE, "--auto-reset")
    running = wait_running(api, plugin)
    write_fault(plugin.faults, "xid", gpu="gpu-0", xid=94, recoveryAction="DRAIN_P2P")
    wait_log(api, plugin, "gpu-0: automatic reset reset: reset for recovery action DRAIN_P2P")
    api.wait_for(
        lambda: published(api, "gpu-0") == published(api, "gpu-1") == [],
        "both untainted after the automatic reset",
        on_timeout=plugin.logs,
    )
    fences = [published_in(w.object, "gpu-1") for w in list(api.history) if w.type != "DELETED"]
    assert any(f and f[0][0] == FENCE for f in fences)  # published before the reset
    text = scrape(running["metrics_address"])
    assert metric(text, 'dra_driver_health_auto_resets_total{outcome="reset"}') == 1
    assert stop_plugin(plugin) == 0, plugin.logs()
