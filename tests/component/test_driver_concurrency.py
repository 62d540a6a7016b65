"""GpuDriver under concurrent calls: many claims from many threads, the same claim from many."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from driver_fixtures import (
    checkpoint_states,
    claim,
    claim_uid,
    expected_id,
    files_in,
    make_driver,
    validate_cdi_file,
)

from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.node_driver import ClaimRef, PrepareResult
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component

CLAIMS = 100
THREADS = 16


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


def prepare_one(driver: GpuDriver, n: int) -> PrepareResult:
    return driver.prepare([ref(n)])[claim_uid(n)]


def test_hundred_claims_from_many_threads(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(n) for n in range(CLAIMS)])
    driver = make_driver(tmp_path, claims, gpus=CLAIMS)
    driver.start()

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda n: prepare_one(driver, n), range(CLAIMS)))

    assert [r.error for r in results] == [None] * CLAIMS
    assert [r.devices[0].cdi_device_ids for r in results] == [
        (expected_id(n),) for n in range(CLAIMS)
    ]
    assert len(files_in(tmp_path / "cdi")) == CLAIMS
    validate_cdi_file(tmp_path / "cdi" / files_in(tmp_path / "cdi")[0])
    # What is on disk after the last call returned holds every claim.
    states = checkpoint_states(tmp_path)
    assert states == {claim_uid(n): "PrepareCompleted" for n in range(CLAIMS)}

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(lambda n: driver.unprepare([ref(n)]), range(CLAIMS)))

    assert answers == [{claim_uid(n): None} for n in range(CLAIMS)]
    assert files_in(tmp_path / "cdi") == []
    assert checkpoint_states(tmp_path) == {}


def test_same_claim_from_many_threads_is_prepared_once(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1, ["gpu-1", "gpu-2"])])
    driver = make_driver(tmp_path, claims)
    driver.start()

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda _: prepare_one(driver, 1), range(THREADS * 2)))

    assert all(r == results[0] for r in results)
    assert results[0].error is None
    assert claims.reads == 1  # the others found it done
    assert files_in(tmp_path / "cdi") == [f"gpu.dra-driver.io-{claim_uid(1)}.json"]


def test_claims_racing_for_one_device_get_it_one_at_a_time(tmp_path: Path) -> None:
    contenders = 20
    claims = FakeClaimSource([claim(n, ["gpu-0"]) for n in range(contenders)])
    driver = make_driver(tmp_path, claims)
    driver.start()

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda n: prepare_one(driver, n), range(contenders)))

    winners = [n for n, r in enumerate(results) if r.error is None]
    assert len(winners) == 1
    losers = [r.error or "" for r in results if r.error is not None]
    assert all("device gpu-0 is already prepared for claim default/claim-" in e for e in losers)
    assert list(checkpoint_states(tmp_path)) == [claim_uid(winners[0])]
    assert len(files_in(tmp_path / "cdi")) == 1
