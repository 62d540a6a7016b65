"""Prepare and unprepare of one claim stay ordered, even across a batch the kubelet gave up on.

The kubelet's NodePrepareResources call with several claims may pass its
deadline while the driver still works through the batch; the kubelet may then
unprepare a claim of that batch. An unprepare that succeeded must never be
undone by the rest of the batch: no spec, no checkpoint entry, no GPU held.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from driver_fixtures import checkpoint_states, claim, claim_uid, make_driver, spec_path

from api.resource_v1 import ResourceClaim
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component

WAIT_S = 30


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


class GatedClaimSource(FakeClaimSource):
    """Reads of the claims named in ``gated`` wait for ``gate`` (a slow API server)."""

    def __init__(self, gated: set[str]) -> None:
        super().__init__()
        self.gated = gated
        self.gate = threading.Event()
        self.waiting = threading.Semaphore(0)

    def get(self, namespace: str, name: str) -> ResourceClaim | None:
        if name in self.gated:
            self.waiting.release()
            assert self.gate.wait(WAIT_S), "the test never opened the gate"
        return super().get(namespace, name)


def test_a_claim_unprepared_while_its_batch_runs_is_not_prepared_after(tmp_path: Path) -> None:
    # Two workers, both stuck reading claims 1 and 2: claim 3 of the same call
    # is not reached yet when the kubelet's deadline passes and it unprepares claim 3.
    claims = GatedClaimSource({"claim-1", "claim-2"})
    for n in (1, 2, 3):
        claims.put(claim(n))
    driver = make_driver(tmp_path, claims, prepare_workers=2)
    driver.start()

    with ThreadPoolExecutor(1) as pool:
        batch = pool.submit(driver.prepare, [ref(1), ref(2), ref(3)])
        for _ in range(2):
            assert claims.waiting.acquire(timeout=WAIT_S)
        assert driver.unprepare([ref(3)]) == {claim_uid(3): None}
        claims.gate.set()
        answers = batch.result(timeout=WAIT_S)

    assert answers[claim_uid(1)].error is None
    assert answers[claim_uid(2)].error is None
    # The unprepare that succeeded stands: nothing of claim 3 is left.
    assert not spec_path(tmp_path, 3).exists()
    assert claim_uid(3) not in checkpoint_states(tmp_path)
    assert claim_uid(3) not in driver.prepared()
    error = answers[claim_uid(3)].error
    assert error is not None
    assert "unprepared by a later NodeUnprepareResources" in error
    # Its GPU is free for the next claim.
    claims.put(claim(4, ["gpu-3"]))
    assert driver.prepare([ref(4)])[claim_uid(4)].error is None
    driver.close()


def test_a_claim_unprepared_then_prepared_by_a_new_call_is_prepared(tmp_path: Path) -> None:
    """Only stale work is stopped: another pod of the same claim gets it prepared again."""
    claims = GatedClaimSource({"claim-1"})
    for n in (1, 2):
        claims.put(claim(n))
    driver = make_driver(tmp_path, claims)
    driver.start()
    assert driver.prepare([ref(2)])[claim_uid(2)].error is None

    with ThreadPoolExecutor(1) as pool:
        # A batch that arrived before the unprepare is still running meanwhile.
        stale = pool.submit(driver.prepare, [ref(1)])
        assert claims.waiting.acquire(timeout=WAIT_S)
        assert driver.unprepare([ref(2)]) == {claim_uid(2): None}
        again = driver.prepare([ref(2)])[claim_uid(2)]
        claims.gate.set()
        assert stale.result(timeout=WAIT_S)[claim_uid(1)].error is None

    assert again.error is None
    assert spec_path(tmp_path, 2).exists()
    assert checkpoint_states(tmp_path)[claim_uid(2)] == "PrepareCompleted"
