"""A rollback that cannot remove a half-written spec never wedges the node.

The spec path is made a directory, as a hostile or broken host could: writing
the spec fails, and so does removing it (EISDIR), for as long as the cause
lasts. The GPU must stay usable by other claims, start-up must not fail, and
the cleanup must be retried until it succeeds.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from driver_fixtures import checkpoint_states, claim, claim_uid, make_driver, spec_path

from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component

WAIT_S = 10


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


def block_spec(root: Path, n: int) -> Path:
    """Make claim ``n``'s spec path a non-empty directory: it can be neither written nor removed."""
    path = spec_path(root, n)
    path.mkdir(parents=True)
    (path / "keep").touch()
    return path


def claims_on_gpu_1() -> FakeClaimSource:
    """Claims 1 and 2, both allocated gpu-1."""
    return FakeClaimSource([claim(1, ["gpu-1"]), claim(2, ["gpu-1"])])


def test_a_failed_rollback_does_not_hold_the_gpu_and_is_retried(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, claims_on_gpu_1())
    driver.start()
    blocked = block_spec(tmp_path, 1)

    failed = driver.prepare([ref(1)])[claim_uid(1)]
    assert failed.error is not None

    # The GPU is not held by the attempt that could not be undone.
    assert driver.prepare([ref(2)])[claim_uid(2)].error is None
    assert claim_uid(1) in driver.cleanup_pending()
    assert "Is a directory" in driver.cleanup_pending()[claim_uid(1)]

    driver.retry_cleanups()  # the cause lasts: still pending, nothing raised
    assert claim_uid(1) in driver.cleanup_pending()

    shutil.rmtree(blocked)
    driver.retry_cleanups()
    assert driver.cleanup_pending() == {}
    assert checkpoint_states(tmp_path) == {claim_uid(2): "PrepareCompleted"}


def test_start_up_serves_while_an_interrupted_prepare_cannot_be_rolled_back(
    tmp_path: Path,
) -> None:
    claims = claims_on_gpu_1()
    first = make_driver(tmp_path, claims)
    first.start()
    blocked = block_spec(tmp_path, 1)
    assert first.prepare([ref(1)])[claim_uid(1)].error is not None
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareStarted"}

    # The plugin restarts while the cause lasts.
    driver = make_driver(tmp_path, claims)
    report = driver.start()

    assert report.cleanup_pending == [claim_uid(1)]
    assert driver.prepare([ref(2)])[claim_uid(2)].error is None

    shutil.rmtree(blocked)
    driver.retry_cleanups()
    assert checkpoint_states(tmp_path) == {claim_uid(2): "PrepareCompleted"}


def test_the_cleanup_is_retried_in_the_background(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, claims_on_gpu_1(), cleanup_retry_s=0.05)
    driver.start()
    blocked = block_spec(tmp_path, 1)
    assert driver.prepare([ref(1)])[claim_uid(1)].error is not None
    assert claim_uid(1) in checkpoint_states(tmp_path)

    shutil.rmtree(blocked)  # no further kubelet call comes
    deadline = time.monotonic() + WAIT_S
    while claim_uid(1) in checkpoint_states(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert checkpoint_states(tmp_path) == {}
    assert driver.cleanup_pending() == {}
    driver.close()
