"""Hostile NodePrepareResources / NodeUnprepareResources input, over real gRPC, to the real driver.

Empty, traversing and over-long UIDs, traversing namespaces and names, the
same UID twice, claims allocated devices this node does not have or another
driver's, 1,000 claims in one call: each bad claim gets its own error naming
it and the cause, the good claims of the same call are prepared, nothing is
written outside the driver's roots, and the server answers the next call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from driver_fixtures import (
    DRIVER,
    cdi_root,
    checkpoint_states,
    claim,
    claim_uid,
    expected_id,
    files_in,
    spec_path,
    validate_cdi_file,
)
from kubelet_standin import RegisteredPlugin
from plugin_factory import PluginFactory
from served_driver import files_outside_the_roots, served_driver

from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component

MANY = 1000
LONG_UID = "a" * 10_000


def ref(n: int, *, namespace: str = "default", name: str | None = None) -> ClaimRef:
    return ClaimRef(namespace=namespace, name=name or f"claim-{n}", uid=claim_uid(n))


def other_drivers_claim(n: int) -> dict[str, Any]:
    document = claim(n)
    document["status"]["allocation"]["devices"]["results"][0]["driver"] = "other.example.com"
    return document


@pytest.fixture
def node(tmp_path: Path, make_plugin: PluginFactory) -> Iterator[RegisteredPlugin]:
    claims = FakeClaimSource(
        [claim(1), claim(2), claim(3, ["gpu-99"]), claim(4, pool="node-b"), other_drivers_claim(5)]
    )
    # A file a traversing UID would reach: <cdi>/<driver>-x/../../victim.json.
    (cdi_root(tmp_path) / f"{DRIVER}-x").mkdir(parents=True)
    (tmp_path / "victim.json").write_text("keep me")
    with served_driver(make_plugin, tmp_path, claims) as (kubelet, _):
        yield kubelet


def test_each_bad_claim_gets_its_own_error_and_the_good_ones_are_prepared(
    tmp_path: Path, node: RegisteredPlugin
) -> None:
    before = files_outside_the_roots(tmp_path)
    hostile = {
        "empty uid": ClaimRef(namespace="default", name="claim-9", uid=""),
        "traversing uid": ClaimRef(namespace="default", name="claim-9", uid="x/../../victim"),
        "long uid": ClaimRef(namespace="default", name="claim-9", uid=LONG_UID),
        "traversing namespace": ref(6, namespace="../../x"),
        "traversing name": ref(7, name="../../victim"),
        "unknown device": ref(3),
        "another node's device": ref(4),
    }
    expected = {
        "empty uid": "namespace, name or uid",
        "traversing uid": 'invalid uid "x/../../victim"',
        "long uid": "invalid uid",
        "traversing namespace": 'invalid namespace "../../x"',
        "traversing name": 'invalid name "../../victim"',
        "unknown device": "node node-a has no device gpu-99",
        "another node's device": "the claim is allocated to another node",
    }

    # Claim 1 twice, the bad claims between.
    outcomes = node.prepare([ref(1), *hostile.values(), ref(1), ref(5)])

    for what, bad in hostile.items():
        assert expected[what] in outcomes[bad.uid].error, (what, outcomes[bad.uid].error)
        assert outcomes[bad.uid].devices == ()
    assert outcomes[claim_uid(1)].error == ""
    assert [d.cdi_device_ids for d in outcomes[claim_uid(1)].devices] == [(expected_id(1),)]
    # Another driver's devices are not this driver's to prepare: nothing to inject.
    assert outcomes[claim_uid(5)].error == "" and outcomes[claim_uid(5)].devices == ()
    assert files_in(cdi_root(tmp_path)) == sorted([f"{DRIVER}-x", spec_path(tmp_path, 1).name])
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}

    # Unprepare of the same hostile claims, and of claims never prepared.
    answers = node.unprepare([*hostile.values(), ref(2), ref(5)])
    for what in ("traversing uid", "long uid", "traversing namespace", "traversing name"):
        assert expected[what] in answers[hostile[what].uid], (what, answers[hostile[what].uid])
    assert "namespace, name or uid" in answers[""]
    assert answers[claim_uid(2)] == answers[claim_uid(5)] == ""

    assert files_outside_the_roots(tmp_path) == before
    # Still serving.
    assert node.prepare([ref(2)])[claim_uid(2)].error == ""
    validate_cdi_file(spec_path(tmp_path, 2))


def test_a_thousand_claims_in_one_call(tmp_path: Path, make_plugin: PluginFactory) -> None:
    claims = FakeClaimSource([claim(n) for n in range(MANY)])
    with served_driver(make_plugin, tmp_path, claims, gpus=MANY) as (kubelet, _):
        outcomes = kubelet.prepare([ref(n) for n in range(MANY)])

        assert [outcomes[claim_uid(n)].error for n in range(MANY)] == [""] * MANY
        assert [outcomes[claim_uid(n)].devices[0].cdi_device_ids for n in range(MANY)] == [
            (expected_id(n),) for n in range(MANY)
        ]
        assert len(files_in(cdi_root(tmp_path))) == MANY
        assert set(checkpoint_states(tmp_path).values()) == {"PrepareCompleted"}

        assert set(kubelet.unprepare([ref(n) for n in range(MANY)]).values()) == {""}
        assert files_in(cdi_root(tmp_path)) == []
        assert checkpoint_states(tmp_path) == {}
