"""NVLink topology through NVML (against the fake pynvml): peers, islands, fabric cliques,
and degrading to fewer attributes when the driver lacks a call."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from discovery_nvml_fake import UNKNOWN, FakeNvml, fake_gpu

from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import Gpu
from kubelet_plugin.nvml import NvmlBackend

BUSES = [f"0000:{b:02x}:00.0" for b in (0x18, 0x2A, 0x9A, 0xAB)]


def discover(sysfs: Path, **per_gpu: Any) -> tuple[Gpu, ...]:
    """Four A100s; ``per_gpu`` gives each keyword a list of four values."""
    fakes = [
        fake_gpu(
            "A100-80GB",
            f"GPU-{uuid.UUID(int=i)}",
            minor=i,
            bus_id=f"0000{BUSES[i]}",
            **{key: values[i] for key, values in per_gpu.items()},
        )
        for i in range(4)
    ]
    return NvmlBackend("node-a", nvml=FakeNvml(fakes), sysfs_root=sysfs).discover().gpus


def test_nvlink_bridged_pairs_are_two_islands(tmp_path: Path) -> None:
    # Each pair joined by two links, as an NVLink bridge does.
    links = [[BUSES[1]] * 2, [BUSES[0]] * 2, [BUSES[3]] * 2, [BUSES[2]] * 2]
    gpus = discover(tmp_path, nvlinks=links)
    assert [g.nvlink_peers for g in gpus] == [(1,), (0,), (3,), (2,)]
    assert [g.nvlink_island for g in gpus] == [gpus[0].uuid] * 2 + [gpus[2].uuid] * 2
    assert all(g.fabric_cluster_uuid is None for g in gpus)


def test_nvswitch_gpus_are_one_island_of_all_peers(tmp_path: Path) -> None:
    gpus = discover(tmp_path, nvlinks=[["switch"] * 18] * 4)
    assert [g.nvlink_peers for g in gpus] == [(1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2)]
    assert {g.nvlink_island for g in gpus} == {gpus[0].uuid}


def test_gpus_without_nvlink_are_islands_of_their_own(tmp_path: Path) -> None:
    gpus = discover(tmp_path, nvlinks=[[]] * 4)
    assert [g.nvlink_island for g in gpus] == [g.uuid for g in gpus]
    assert all(g.nvlink_peers == () for g in gpus)


def test_a_completed_fabric_names_the_island_by_its_clique(tmp_path: Path) -> None:
    cluster = uuid.uuid4()
    gpus = discover(tmp_path, nvlinks=[["switch"]] * 4, fabric=[(cluster.bytes, 7)] * 3 + [None])
    assert [g.fabric_cluster_uuid for g in gpus] == [str(cluster)] * 3 + [None]
    assert [g.fabric_clique_id for g in gpus] == [7, 7, 7, None]
    assert gpus[0].nvlink_island == f"{cluster}/7"
    assert gpus[3].nvlink_island == gpus[0].uuid


def test_a_driver_without_nvlink_calls_publishes_no_topology_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kubelet_plugin.nvml.topology"):
        gpus = discover(tmp_path)
    assert all(g.nvlink_island is None and g.nvlink_peers == () for g in gpus)
    assert len([r for r in caplog.records if "NVLink topology" in r.getMessage()]) == 1


def test_an_nvlink_error_degrades_to_no_topology_not_a_crash(tmp_path: Path) -> None:
    failures = [{}, {"nvmlDeviceGetNvLinkState": UNKNOWN}, {}, {}]
    gpus = discover(tmp_path, nvlinks=[["switch"]] * 4, failures=failures)
    assert all(g.nvlink_island is None for g in gpus)


def test_nvml_and_mock_agree_on_the_pairs_machine(tmp_path: Path) -> None:
    links = [[BUSES[1]], [BUSES[0]], [BUSES[3]], [BUSES[2]]]
    nvml = discover(tmp_path, nvlinks=links)
    mock = MockBackend("node-a", "pairs-4xA100").discover().gpus
    assert [g.nvlink_peers for g in nvml] == [g.nvlink_peers for g in mock]
    islands = [
        [g.index for g in gpus if g.nvlink_island == gpus[0].nvlink_island] for gpus in (nvml, mock)
    ]
    assert islands[0] == islands[1] == [0, 1]
