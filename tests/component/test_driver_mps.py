"""MPS control daemons with real processes and files: the fake ``nvidia-cuda-mps-control``
(tests/fakes/mps_control.py) in a driver root, GpuDriver preparing shares of one GPU.

A "plugin restart" here is a new GpuDriver and MpsDaemons on the same state
directory and checkpoint, as a restarted plugin process builds them; the
daemons are detached processes either way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from dra_driver.cdi.mps import mps_container_dirs
from kubelet_plugin.cdi_writer import scan_host_files
from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.mps import MpsDaemons
from kubelet_plugin.mps.daemon import process_start_time
from kubelet_plugin.node_driver import ClaimRef
from kubelet_plugin.node_lock import NodeFileLock
from kubelet_plugin.sharing_tools import sharing_enforcers
from tests.component.driver_fixtures import (
    claim,
    claim_uid,
    gpu_config_entry,
    inventory,
    make_driver,
    make_host,
    spec_path,
    validate_cdi_file,
)
from tests.fakes.claim_source import FakeClaimSource
from tests.fakes.mps_control import (
    add_fake_server,
    install_fake_mps_control,
    logged_commands,
    logged_starts,
)
from tests.fakes.nvidia_smi import install_fake_nvidia_smi, logged_timeslices

GPU = inventory(2).gpus[0].uuid
GIB = 2**30
#: Generous bound for a supervision pass to notice a dead daemon; never asserted on.
WAIT_S = 20.0


def share(n: int, memory: str, compute: str, device: str = "gpu-0") -> dict[str, Any]:
    """Claim ``claim-<n>`` holding one share of ``device`` (consumable capacity)."""
    document = claim(n, [device])
    (result,) = document["status"]["allocation"]["devices"]["results"]
    result["shareID"] = f"share-{n}"
    result["consumedCapacity"] = {"memory": memory, "compute": compute}
    return document


def ref(n: int) -> ClaimRef:
    return ClaimRef("default", f"claim-{n}", claim_uid(n))


def daemon_pids(root: Path, uuid: str = GPU) -> list[int]:
    return [
        int(line.split()[0].removeprefix("pid=")) for line in logged_starts(root / "driver", uuid)
    ]


def alive(pid: int) -> bool:
    return process_start_time(pid) is not None


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A node under ``tmp_path`` with the fake MPS binary; its daemons are killed after."""
    make_host(tmp_path, 2)
    install_fake_mps_control(tmp_path / "driver")
    install_fake_nvidia_smi(tmp_path / "driver")
    yield tmp_path
    for uuid in (g.uuid for g in inventory(2).gpus):
        for pid in daemon_pids(tmp_path, uuid):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def mps_driver(
    root: Path,
    claims: FakeClaimSource,
    *,
    registry: CollectorRegistry | None = None,
    check_interval_s: float = 60.0,
    required: bool = True,
    node_lock: NodeFileLock | None = None,
    restarted: list[tuple[str, str]] | None = None,
) -> tuple[GpuDriver, MpsDaemons]:
    """A started driver whose MPS daemons live under ``root/state/mps``."""
    host, enforcers = sharing_enforcers(
        scan_host_files(root / "host", root / "driver", None),
        driver_root=root / "driver",
        mps_root=root / "state" / "mps",
        real_gpus=required,
        registry=registry,
        check_interval_s=check_interval_s,
        on_restart=None if restarted is None else lambda *event: restarted.append(event),
    )
    daemons = enforcers[0]
    assert isinstance(daemons, MpsDaemons)
    driver = make_driver(root, claims, gpus=2, enforcers=enforcers, host=host, node_lock=node_lock)
    driver.start()
    return driver, daemons


def test_two_shares_of_one_gpu_use_one_daemon_until_the_last_is_unprepared(root: Path) -> None:
    claims = FakeClaimSource([share(1, "20Gi", "30"), share(2, "40Gi", "50")])
    driver, daemons = mps_driver(root, claims)
    try:
        answers = driver.prepare([ref(1), ref(2)])
        assert [a.error for a in answers.values()] == [None, None]

        (pid,) = daemon_pids(root)
        assert alive(pid)
        pipe = root / "state" / "mps" / GPU / "pipe"
        shm = os.stat(pipe.parent / "shm")
        assert logged_starts(root / "driver", GPU) == [
            f"pid={pid} visible={GPU} pipe={pipe} shm={shm.st_dev}:{shm.st_ino}"
        ]
        assert shm.st_mode & 0o7777 == 0o1777
        # The ceiling over both shares, whichever was prepared first.
        commands = logged_commands(root / "driver", GPU)
        assert commands[-3:] == [
            "set_default_active_thread_percentage 50",
            f"set_default_device_pinned_mem_limit 0 {40 * 1024}M",
            "get_server_list",
        ]

        container = mps_container_dirs(GPU)
        for n in (1, 2):
            document = validate_cdi_file(spec_path(root, n))
            edits = document["containerEdits"]
            assert f"CUDA_MPS_PIPE_DIRECTORY={container.pipe}" in edits["env"]
            assert f"CUDA_MPS_LOG_DIRECTORY={container.log}" in edits["env"]
            mounts = {m["containerPath"]: m for m in edits["mounts"]}
            assert mounts[container.pipe]["hostPath"] == str(pipe)
            assert "rw" in mounts[container.pipe]["options"]
            assert mounts[container.log]["hostPath"] == str(pipe.parent / "log")
            assert "ro" in mounts[container.log]["options"]
            # The daemon's /dev/shm is the clients' too: MPS shares memory there.
            assert mounts["/dev/shm"]["hostPath"] == str(pipe.parent / "shm")

        # The larger share leaves: the daemon stays, its ceiling comes down to the other's.
        assert driver.unprepare([ref(2)]) == {claim_uid(2): None}
        assert alive(pid) and daemons.running() == {GPU: pid}
        assert logged_commands(root / "driver", GPU)[-3:] == [
            "set_default_active_thread_percentage 30",
            f"set_default_device_pinned_mem_limit 0 {20 * 1024}M",
            "get_server_list",
        ]

        # The last one leaves: quit through the pipe, the process and its directories gone.
        assert driver.unprepare([ref(1)]) == {claim_uid(1): None}
        assert logged_commands(root / "driver", GPU)[-1] == "quit"
        assert not alive(pid)
        assert not (root / "state" / "mps" / GPU).exists()
        assert daemons.running() == {}
    finally:
        driver.close()


def test_a_running_server_gets_each_new_ceiling_for_the_clients_to_come(root: Path) -> None:
    """A server spawned for the first claim's clients would keep its limits; the plugin sets
    the new ceiling on it too, so the next claim's clients are not held to the old one."""
    claims = FakeClaimSource([share(1, "20Gi", "30"), share(2, "40Gi", "50")])
    driver, _ = mps_driver(root, claims)
    try:
        assert driver.prepare([ref(1)])[claim_uid(1)].error is None
        add_fake_server(root / "state" / "mps" / GPU / "log", 4242)

        assert driver.prepare([ref(2)])[claim_uid(2)].error is None
        assert logged_commands(root / "driver", GPU)[-5:] == [
            "set_default_active_thread_percentage 50",
            f"set_default_device_pinned_mem_limit 0 {40 * 1024}M",
            "get_server_list",
            "set_active_thread_percentage 4242 50",
            f"set_device_pinned_mem_limit 4242 0 {40 * 1024}M",
        ]

        assert driver.unprepare([ref(2)]) == {claim_uid(2): None}
        assert logged_commands(root / "driver", GPU)[-5:] == [
            "set_default_active_thread_percentage 30",
            f"set_default_device_pinned_mem_limit 0 {20 * 1024}M",
            "get_server_list",
            "set_active_thread_percentage 4242 30",
            f"set_device_pinned_mem_limit 4242 0 {20 * 1024}M",
        ]
    finally:
        driver.close()


def test_a_restarted_plugin_adopts_the_running_daemon(root: Path) -> None:
    claims = FakeClaimSource([share(1, "20Gi", "30")])
    driver, _ = mps_driver(root, claims)
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    driver.close()
    (pid,) = daemon_pids(root)

    restarted, daemons = mps_driver(root, claims)
    try:
        assert daemons.running() == {GPU: pid}
        assert daemon_pids(root) == [pid]  # not started again under the running pod
        assert restarted.unprepare([ref(1)]) == {claim_uid(1): None}
        assert not alive(pid)
    finally:
        restarted.close()


def test_a_restarted_plugin_starts_a_missing_daemon_and_stops_an_orphan(root: Path) -> None:
    claims = FakeClaimSource([share(1, "20Gi", "30"), share(2, "10Gi", "20", device="gpu-1")])
    driver, _ = mps_driver(root, claims)
    assert [a.error for a in driver.prepare([ref(1), ref(2)]).values()] == [None, None]
    driver.close()
    gpu1 = inventory(2).gpus[1].uuid
    (first,) = daemon_pids(root)
    (orphan,) = daemon_pids(root, gpu1)
    os.kill(first, signal.SIGKILL)  # died while the plugin was down
    while alive(first):  # a zombie until its parent (init or the reaper) collects it
        time.sleep(0.01)

    # claim-2 was deleted while the plugin was down: start-up recovery drops it.
    registry, events = CollectorRegistry(), []
    restarted, daemons = mps_driver(
        root, FakeClaimSource([share(1, "20Gi", "30")]), registry=registry, restarted=events
    )
    try:
        (_, second) = daemon_pids(root)
        assert daemons.running() == {GPU: second}
        assert alive(second)
        assert not alive(orphan)
        assert logged_commands(root / "driver", gpu1)[-1] == "quit"
        # It had run in this boot: its clients lost their server, as with a daemon that
        # dies under a running plugin (a Node Event, the metric).
        assert registry.get_sample_value("dra_driver_mps_daemon_restarts_total") == 1
        assert events == [(GPU, claim_uid(1))]
    finally:
        restarted.close()


def test_a_daemon_gone_with_a_reboot_is_started_without_counting_a_restart(root: Path) -> None:
    claims = FakeClaimSource([share(1, "20Gi", "30")])
    driver, _ = mps_driver(root, claims)
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    driver.close()
    (first,) = daemon_pids(root)
    os.kill(first, signal.SIGKILL)
    while alive(first):
        time.sleep(0.01)
    # As after a reboot: the record was written before the node booted.
    os.utime(root / "state" / "mps" / GPU / "daemon.json", (0, 0))

    registry, events = CollectorRegistry(), []
    restarted, daemons = mps_driver(root, claims, registry=registry, restarted=events)
    try:
        (_, second) = daemon_pids(root)
        assert daemons.running() == {GPU: second}
        assert registry.get_sample_value("dra_driver_mps_daemon_restarts_total") == 0
        assert events == []
    finally:
        restarted.close()


def test_two_plugin_instances_keep_a_daemon_that_either_one_s_claims_use(root: Path) -> None:
    # A rolling update: the new instance runs beside the old one, calls serialised by the
    # node lock, each seeing the checkpoint the other changed.
    claims = FakeClaimSource([share(1, "20Gi", "30"), share(2, "10Gi", "20")])
    lock = root / "state" / "serialize.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    old, _ = mps_driver(root, claims, node_lock=NodeFileLock(lock))
    new, _ = mps_driver(root, claims, node_lock=NodeFileLock(lock))
    try:
        assert old.prepare([ref(1)])[claim_uid(1)].error is None
        assert new.prepare([ref(2)])[claim_uid(2)].error is None
        (pid,) = daemon_pids(root)  # the new instance uses the old one's daemon

        # The old instance unprepares its claim: claim-2 of the new one still uses the GPU.
        assert old.unprepare([ref(1)]) == {claim_uid(1): None}
        assert alive(pid)
        assert new.unprepare([ref(2)]) == {claim_uid(2): None}
        assert not alive(pid)
    finally:
        old.close()
        new.close()


def test_a_daemon_that_dies_is_started_again_and_counted(root: Path) -> None:
    registry = CollectorRegistry()
    claims = FakeClaimSource([share(1, "20Gi", "30")])
    restarted: list[tuple[str, str]] = []
    driver, daemons = mps_driver(
        root, claims, registry=registry, check_interval_s=0.05, restarted=restarted
    )
    try:
        assert driver.prepare([ref(1)])[claim_uid(1)].error is None
        (pid,) = daemon_pids(root)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT_S
        while len(daemon_pids(root)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        (_, new) = daemon_pids(root)
        while daemons.running() != {GPU: new} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemons.running() == {GPU: new}
        assert registry.get_sample_value("dra_driver_mps_daemon_restarts_total") == 1
        assert restarted == [(GPU, claim_uid(1))]  # the plugin makes it a Node Event
        assert registry.get_sample_value("dra_driver_mps_daemons") == 1
        # The new daemon got the claim's limits before any client could connect.
        assert logged_commands(root / "driver", GPU)[-3:] == [
            "set_default_active_thread_percentage 30",
            f"set_default_device_pinned_mem_limit 0 {20 * 1024}M",
            "get_server_list",
        ]
    finally:
        driver.close()


def test_time_slicing_starts_no_daemon(root: Path) -> None:
    sliced = claim(1, ["gpu-0"], configs=[gpu_config_entry({"strategy": "TimeSlicing"})])
    driver, daemons = mps_driver(root, FakeClaimSource([sliced]))
    try:
        assert driver.prepare([ref(1)])[claim_uid(1)].error is None
        assert daemon_pids(root) == [] and daemons.running() == {}
        assert logged_timeslices(root / "driver") == [(GPU, 0)]
        env = validate_cdi_file(spec_path(root, 1))["containerEdits"]["env"]
        assert not any(e.startswith("CUDA_MPS_PIPE_DIRECTORY=") for e in env)
    finally:
        driver.close()


def test_a_missing_binary_is_a_prepare_error_naming_it(root: Path) -> None:
    (root / "driver" / "usr" / "bin" / "nvidia-cuda-mps-control").unlink()
    driver, _ = mps_driver(root, FakeClaimSource([share(1, "20Gi", "30")]))
    try:
        error = driver.prepare([ref(1)])[claim_uid(1)].error
        assert error is not None and "nvidia-cuda-mps-control" in error
        assert driver.prepared() == {} and not spec_path(root, 1).exists()
    finally:
        driver.close()


def test_a_missing_binary_on_mock_gpus_leaves_mps_as_env(root: Path) -> None:
    (root / "driver" / "usr" / "bin" / "nvidia-cuda-mps-control").unlink()
    driver, _ = mps_driver(root, FakeClaimSource([share(1, "20Gi", "30")]), required=False)
    try:
        assert driver.prepare([ref(1)])[claim_uid(1)].error is None
        env = validate_cdi_file(spec_path(root, 1))["containerEdits"]["env"]
        assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=30" in env
        assert not any(e.startswith("CUDA_MPS_PIPE_DIRECTORY=") for e in env)
    finally:
        driver.close()


def test_a_daemon_that_does_not_start_fails_the_prepare_and_leaves_nothing(root: Path) -> None:
    binary = root / "driver" / "usr" / "bin" / "nvidia-cuda-mps-control"
    binary.write_text("#!/bin/sh\necho 'no GPU here' >&2\nexit 3\n")
    driver, _ = mps_driver(root, FakeClaimSource([share(1, "20Gi", "30")]))
    try:
        error = driver.prepare([ref(1)])[claim_uid(1)].error
        assert error is not None and "exited with 3: no GPU here" in error
        assert driver.prepared() == {} and not spec_path(root, 1).exists()
    finally:
        driver.close()


_AS_PID_1 = """
import ctypes, os, sys
from pathlib import Path
from kubelet_plugin.mps import MpsDaemon

PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
daemon = MpsDaemon(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
daemon.start()
assert daemon.record is not None
pid = daemon.record.pid
parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
assert parent == str(os.getpid())  # re-parented to this process, as to a plugin as PID 1
daemon.stop()
print("zombie" if Path(f"/proc/{pid}").exists() else "reaped")
"""


def test_a_daemon_that_ends_under_a_plugin_running_as_pid_1_is_reaped(root: Path) -> None:
    # In its container the plugin is PID 1: daemonised processes are re-parented to it.
    # A child subreaper is the same for them, without a PID namespace.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _AS_PID_1,
            str(root / "driver" / "usr" / "bin" / "nvidia-cuda-mps-control"),
            str(root / "state" / "mps"),
            GPU,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reaped"
