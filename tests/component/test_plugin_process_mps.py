"""``dra-driver kubelet-plugin`` as a process with ``--shared-gpus`` and the fake
``nvidia-cuda-mps-control`` in its driver root: two MPS shares of one GPU get one daemon,
a killed plugin's successor adopts it, the last unprepare stops it."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from driver_fixtures import DRIVER, NODE, claim, claim_uid, validate_cdi_file
from fake_apiserver import FakeApiServer
from kubelet_standin import KubeletStandin
from test_plugin_process import (
    PluginProcess,
    api,
    metric,
    root,
    scrape,
    start_plugin,
    stop_plugin,
    wait_running,
)

from dra_driver.discovery.mock import MockBackend
from kubelet_plugin.mps.daemon import process_start_time
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.mps_control import install_fake_mps_control, logged_commands, logged_starts

pytestmark = pytest.mark.component

__all__ = ["api", "root"]  # fixtures, used by name

GPU = MockBackend(NODE, "2xH100-80GB").inventory.gpus[0].uuid


def share(n: int, memory: str, compute: str) -> dict[str, Any]:
    document = claim(n, ["gpu-0"])
    (result,) = document["status"]["allocation"]["devices"]["results"]
    result["shareID"] = f"share-{n}"
    result["consumedCapacity"] = {"memory": memory, "compute": compute}
    return document


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


def started(root: Path, api: FakeApiServer) -> tuple[PluginProcess, str]:
    plugin = start_plugin(root, api.write_kubeconfig(root / "kubeconfig"), "--shared-gpus")
    running = wait_running(api, plugin)
    return plugin, running["metrics_address"]


def test_one_daemon_for_two_shares_adopted_after_a_crash_stopped_with_the_last(
    root: Path, api: FakeApiServer
) -> None:
    driver_root = root / "driver"
    install_fake_mps_control(driver_root)
    api.put_claim(share(1, "20Gi", "30"))
    api.put_claim(share(2, "40Gi", "50"))
    plugin, metrics_address = started(root, api)
    try:
        with KubeletStandin().register(plugin.registration_socket) as kubelet:
            answers = kubelet.prepare([ref(1), ref(2)])
            assert [answers[claim_uid(n)].error for n in (1, 2)] == ["", ""]
        (start,) = logged_starts(driver_root, GPU)
        daemon = int(start.split()[0].removeprefix("pid="))
        pipe = root / "plugins" / DRIVER / "mps" / GPU / "pipe"
        assert f" visible={GPU} pipe={pipe} " in start
        mounts = validate_cdi_file(root / "cdi" / f"{DRIVER}-{claim_uid(1)}.json")[
            "containerEdits"
        ]["mounts"]
        assert str(pipe) in [m["hostPath"] for m in mounts]
        # Mock GPUs: the clients share the daemon's shared memory directory as on real
        # GPUs, though the daemon (no MPS server to use it) runs with the host's /dev/shm.
        shm = {m["containerPath"]: m["hostPath"] for m in mounts}["/dev/shm"]
        assert shm == str(pipe.parent / "shm")
        assert os.stat(shm).st_mode & 0o7777 == 0o1777
        host_shm = os.stat("/dev/shm")
        assert start.endswith(f" shm={host_shm.st_dev}:{host_shm.st_ino}")
        assert metric(scrape(metrics_address), "dra_driver_mps_daemons") == 1

        # The plugin dies; its successor takes over the daemon the pods use.
        plugin.process.send_signal(signal.SIGKILL)
        plugin.close()
        plugin, metrics_address = started(root, api)
        assert process_start_time(daemon) is not None
        assert len(logged_starts(driver_root, GPU)) == 1
        assert metric(scrape(metrics_address), "dra_driver_mps_daemons") == 1

        with KubeletStandin().register(plugin.registration_socket) as kubelet:
            assert kubelet.unprepare([ref(2)]) == {claim_uid(2): ""}
            assert process_start_time(daemon) is not None
            assert kubelet.unprepare([ref(1)]) == {claim_uid(1): ""}
        assert logged_commands(driver_root, GPU)[-1] == "quit"
        assert process_start_time(daemon) is None
        assert metric(scrape(metrics_address), "dra_driver_mps_daemons") == 0
        assert stop_plugin(plugin) == 0
    finally:
        plugin.close()
        # Every daemon the fake logged, not only the one the assertions reached: a failure
        # before them must not leave a daemon running after the test.
        for line in logged_starts(driver_root, GPU):
            pid = int(line.split()[0].removeprefix("pid="))
            if process_start_time(pid) is not None:
                os.kill(pid, signal.SIGKILL)
