"""One NodePrepareResources call with many claims: its claims are prepared concurrently.

The kubelet sends a pod's claims in one call with a 45 s deadline; one claim
after another, 1,000 claims took longer than that (bench/README.md, Prepare).
"""

from __future__ import annotations

import threading
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

from api.resource_v1 import ResourceClaim
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component

WAIT_S = 10


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


class MeetingClaimSource(FakeClaimSource):
    """Each read waits until ``parties`` reads are under way at once (or gives up)."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.meeting = threading.Barrier(parties, timeout=WAIT_S)

    def get(self, namespace: str, name: str) -> ResourceClaim | None:
        self.meeting.wait()
        return super().get(namespace, name)


def test_the_claims_of_one_call_are_prepared_at_the_same_time(tmp_path: Path) -> None:
    # Four reads can only go on together: one claim after another, the first waits
    # for the others in vain and every claim fails.
    claims = MeetingClaimSource(parties=4)
    for n in range(4):
        claims.put(claim(n))
    driver = make_driver(tmp_path, claims)
    driver.start()

    answers = driver.prepare([ref(n) for n in range(4)])

    assert {uid: answer.error for uid, answer in answers.items()} == {
        claim_uid(n): None for n in range(4)
    }
    driver.close()


def test_a_call_with_many_claims_prepares_each_once(tmp_path: Path) -> None:
    count = 200
    claims = FakeClaimSource([claim(n) for n in range(count)])
    driver = make_driver(tmp_path, claims, gpus=count)
    driver.start()

    # The same claim twice in one call (the kubelet never sends it, but it must hold).
    answers = driver.prepare([ref(n) for n in range(count)] + [ref(0)])

    assert [answers[claim_uid(n)].error for n in range(count)] == [None] * count
    assert [answers[claim_uid(n)].devices[0].cdi_device_ids for n in range(count)] == [
        (expected_id(n),) for n in range(count)
    ]
    assert len(files_in(tmp_path / "cdi")) == count
    validate_cdi_file(tmp_path / "cdi" / files_in(tmp_path / "cdi")[0])
    # What is on disk once the call returned holds every claim (the group commit).
    assert checkpoint_states(tmp_path) == {claim_uid(n): "PrepareCompleted" for n in range(count)}
    assert claims.reads == count  # the duplicate found its claim done

    answers_back = driver.unprepare([ref(n) for n in range(count)])
    assert set(answers_back.values()) == {None}
    assert files_in(tmp_path / "cdi") == []
    assert checkpoint_states(tmp_path) == {}
    driver.close()
