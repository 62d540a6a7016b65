"""The time slice applied with the fake ``nvidia-smi`` (tests/fakes/nvidia_smi.py): set by
the first claim on a GPU, a different interval refused, Default again after the last."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubelet_plugin.cdi_writer import scan_host_files
from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.node_driver import ClaimRef
from kubelet_plugin.time_slicing import TimeSlicePolicy
from tests.component.driver_fixtures import (
    claim,
    claim_uid,
    gpu_config_entry,
    inventory,
    make_driver,
    make_host,
)
from tests.fakes.claim_source import FakeClaimSource
from tests.fakes.nvidia_smi import install_fake_nvidia_smi, logged_timeslices

GPU = inventory(2).gpus[0].uuid


def sliced(n: int, interval: str) -> dict[str, Any]:
    """Claim ``claim-<n>``: a share of gpu-0, time-sliced with ``interval``."""
    document = claim(
        n,
        ["gpu-0"],
        configs=[
            gpu_config_entry(
                {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": interval}}
            )
        ],
    )
    document["status"]["allocation"]["devices"]["results"][0]["shareID"] = f"share-{n}"
    return document


def ref(n: int) -> ClaimRef:
    return ClaimRef("default", f"claim-{n}", claim_uid(n))


def started(root: Path, claims: FakeClaimSource) -> GpuDriver:
    make_host(root, 2)
    smi = install_fake_nvidia_smi(root / "driver")
    driver = make_driver(
        root,
        claims,
        gpus=2,
        host=scan_host_files(root / "host", root / "driver", None),
        enforcers=(TimeSlicePolicy(smi),),
    )
    driver.start()
    return driver


def test_the_first_claim_sets_the_slice_another_interval_is_refused_the_last_resets(
    tmp_path: Path,
) -> None:
    claims = FakeClaimSource([sliced(1, "Long"), sliced(2, "Long"), sliced(3, "Short")])
    driver = started(tmp_path, claims)
    try:
        assert driver.prepare([ref(1)])[claim_uid(1)].error is None
        assert driver.prepare([ref(2)])[claim_uid(2)].error is None
        assert logged_timeslices(tmp_path / "driver") == [(GPU, 3)]  # set once

        error = driver.prepare([ref(3)])[claim_uid(3)].error
        assert error is not None
        assert "claim default/claim-3" in error
        assert f"sharing.timeSlicingConfig.interval: Short on GPU {GPU}" in error
        assert "claim default/claim-1 (Long)" in error
        assert sorted(driver.prepared()) == sorted([claim_uid(1), claim_uid(2)])

        assert driver.unprepare([ref(1)]) == {claim_uid(1): None}
        assert logged_timeslices(tmp_path / "driver") == [(GPU, 3)]  # claim-2 still holds it
        assert driver.unprepare([ref(2)]) == {claim_uid(2): None}
        assert logged_timeslices(tmp_path / "driver") == [(GPU, 3), (GPU, 0)]

        # The GPU is free again: another interval is welcome.
        assert driver.prepare([ref(3)])[claim_uid(3)].error is None
        assert logged_timeslices(tmp_path / "driver")[-1] == (GPU, 1)
    finally:
        driver.close()


def test_a_restarted_plugin_sets_the_slice_of_its_prepared_claims_again(tmp_path: Path) -> None:
    claims = FakeClaimSource([sliced(1, "Medium")])
    driver = started(tmp_path, claims)
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    driver.close()

    restarted = started(tmp_path, claims)  # as after a reboot, which resets the GPU
    try:
        assert logged_timeslices(tmp_path / "driver") == [(GPU, 2), (GPU, 2)]
        assert restarted.unprepare([ref(1)]) == {claim_uid(1): None}
        assert logged_timeslices(tmp_path / "driver")[-1] == (GPU, 0)
    finally:
        restarted.close()


def test_without_nvidia_smi_a_time_sliced_claim_is_refused(tmp_path: Path) -> None:
    make_host(tmp_path, 2)
    driver = make_driver(
        tmp_path, FakeClaimSource([sliced(1, "Long")]), gpus=2, enforcers=(TimeSlicePolicy(None),)
    )
    driver.start()
    try:
        error = driver.prepare([ref(1)])[claim_uid(1)].error
        assert error is not None and "no nvidia-smi was found under the driver root" in error
        assert driver.prepared() == {}
    finally:
        driver.close()
