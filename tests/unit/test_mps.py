"""MPS, the pure parts: the CDI edits that connect a claim's containers to its GPUs'
daemons, and the daemon-wide ceiling over the claims holding one GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from dra_driver.cdi import HostFiles, SharingSettings, SpecDevice, build_cdi_spec
from dra_driver.cdi.mps import mps_container_dirs
from kubelet_plugin.mps import MpsCeiling, MpsDaemon
from kubelet_plugin.mps.daemons import ceiling
from kubelet_plugin.sharing_tools import MpsRestartEvents
from tests.fakes.cluster import FakeCluster

GIB = 2**30


def _device(n: int, uuid: str, sharing: SharingSettings | None) -> SpecDevice:
    return SpecDevice(
        name=f"c-gpu-{n}-s{n}",
        env_key=f"{n}_S{n}",
        uuid=uuid,
        device_node="/dev/nvidia0",
        sharing=sharing,
    )


def _mps(percentage: int | None = None, memory: int | None = None) -> SharingSettings:
    return SharingSettings(
        strategy="MPS",
        mps_active_thread_percentage=percentage,
        mps_pinned_memory_limit_bytes=memory,
    )


def test_a_claim_on_two_mps_gpus_mounts_both_daemons_and_names_the_first() -> None:
    spec = build_cdi_spec(
        driver_name="gpu.dra-driver.io",
        devices=[
            _device(0, "GPU-a", _mps(30)),
            _device(1, "GPU-a", _mps(30)),  # a second share of the same GPU: one daemon
            _device(2, "GPU-b", _mps(20)),
        ],
        host=HostFiles(mps_root="/var/lib/plugin/mps", mps_shared_shm=True),
    )
    edits = spec.container_edits
    assert edits is not None and edits.mounts is not None and edits.env is not None
    assert [(m.host_path, m.container_path) for m in edits.mounts] == [
        ("/var/lib/plugin/mps/GPU-a/pipe", "/run/dra-driver/mps/GPU-a/pipe"),
        ("/var/lib/plugin/mps/GPU-a/log", "/run/dra-driver/mps/GPU-a/log"),
        ("/var/lib/plugin/mps/GPU-b/pipe", "/run/dra-driver/mps/GPU-b/pipe"),
        ("/var/lib/plugin/mps/GPU-b/log", "/run/dra-driver/mps/GPU-b/log"),
        ("/var/lib/plugin/mps/GPU-a/shm", "/dev/shm"),  # one /dev/shm: the first daemon's
    ]
    assert "CUDA_MPS_PIPE_DIRECTORY=/run/dra-driver/mps/GPU-a/pipe" in edits.env
    assert "CUDA_MPS_LOG_DIRECTORY=/run/dra-driver/mps/GPU-a/log" in edits.env
    third = spec.devices[2].container_edits.env or []
    assert f"DRA_GPU_2_S2_MPS_PIPE_DIRECTORY={mps_container_dirs('GPU-b').pipe}" in third


def test_without_daemons_or_with_time_slicing_nothing_is_mounted() -> None:
    sliced = SharingSettings(strategy="TimeSlicing", time_slice_interval="Default")
    for devices, host in (
        ([_device(0, "GPU-a", _mps(30))], HostFiles()),
        ([_device(0, "GPU-a", sliced)], HostFiles(mps_root="/mps")),
    ):
        spec = build_cdi_spec(driver_name="gpu.dra-driver.io", devices=devices, host=host)
        edits = spec.container_edits
        assert edits is not None and not edits.mounts
        assert not any(e.startswith("CUDA_MPS_PIPE_DIRECTORY") for e in edits.env or [])


def test_the_ceiling_is_the_largest_limit_and_none_where_a_claim_has_none() -> None:
    assert ceiling([_mps(30, 20 * GIB), _mps(50, 10 * GIB)]) == MpsCeiling(50, 20 * GIB)
    assert ceiling([_mps(30, 20 * GIB), _mps(None, None)]) == MpsCeiling(100, None)
    assert MpsCeiling(40, 10 * GIB + 1).commands() == [
        "set_default_active_thread_percentage 40",
        "set_default_device_pinned_mem_limit 0 10241M",
    ]
    assert MpsCeiling(100, None).commands() == ["set_default_active_thread_percentage 100"]
    assert MpsCeiling(40, 10 * GIB + 1).server_commands(77) == [
        "set_active_thread_percentage 77 40",
        "set_device_pinned_mem_limit 77 0 10241M",
    ]
    assert MpsCeiling(100, None).server_commands(77) == ["set_active_thread_percentage 77 100"]


def test_a_daemon_is_only_ever_named_after_a_gpu_uuid(tmp_path: Path) -> None:
    # Its directory is removed when it stops: a tampered checkpoint must not name another.
    for bad in ("../etc", "GPU-1/../../x", "", "MIG-1"):
        with pytest.raises(ValueError, match="not a GPU UUID"):
            MpsDaemon(tmp_path / "bin", tmp_path / "mps", bad)
    assert MpsDaemon(tmp_path / "bin", tmp_path / "mps", "GPU-0a1B-2c").base == (
        tmp_path / "mps" / "GPU-0a1B-2c"
    )


def test_a_restarted_daemon_is_a_warning_event_on_the_node() -> None:
    cluster = FakeCluster()
    events = MpsRestartEvents(cluster, "node-a", "uid-node-a")
    events.restarted("GPU-0a", "uid-1, uid-2")
    events.stop()  # sends what waits
    (event,) = cluster.objects("events")
    assert (event["type"], event["reason"]) == ("Warning", "MpsDaemonRestarted")
    assert event["involvedObject"]["kind"] == "Node"
    assert event["involvedObject"]["uid"] == "uid-node-a"
    assert "GPU GPU-0a" in event["message"] and "claims uid-1, uid-2" in event["message"]
