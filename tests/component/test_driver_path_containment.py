"""Defect 3 of issue 18: no path the driver writes or removes is built from an untrusted string.

The kubelet's claim references and the checkpoint on disk are input: a UID with
``../``, a namespace or name the API server would refuse, or a ``cdiSpecPath``
outside the CDI root must never reach a file outside the plugin's own roots.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from driver_fixtures import (
    DRIVER,
    cdi_root,
    checkpoint_path,
    claim,
    claim_uid,
    make_driver,
)

from kubelet_plugin.checkpoint_store import CheckpointStore
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


def victim(root: Path) -> Path:
    """A file outside the CDI root that a traversal would reach."""
    path = root / "victim.json"
    path.write_text("keep me")
    return path


def test_unprepare_with_a_traversing_uid_removes_nothing_outside_the_cdi_root(
    tmp_path: Path,
) -> None:
    driver = make_driver(tmp_path, FakeClaimSource())
    driver.start()
    target = victim(tmp_path)
    # <cdi root>/<driver>-evil/../../victim.json is <root>/victim.json.
    (cdi_root(tmp_path) / f"{DRIVER}-evil").mkdir()
    hostile = ClaimRef(namespace="default", name="claim-1", uid="evil/../../victim")

    error = driver.unprepare([hostile])[hostile.uid] or ""

    assert target.read_text() == "keep me"
    assert 'uid "evil/../../victim"' in error
    assert "RFC 4122" in error


@pytest.mark.parametrize(
    ("namespace", "name", "uid", "field"),
    [
        ("default", "claim-1", "../../victim", "uid"),
        ("default", "claim-1", "3F0C5A4E-0000-4000-8000-00000000000A", "uid"),
        ("Default", "claim-1", claim_uid(1), "namespace"),
        ("default", "claim_1/../x", claim_uid(1), "name"),
    ],
)
def test_prepare_refuses_a_reference_the_api_server_would_not_issue(
    tmp_path: Path, namespace: str, name: str, uid: str, field: str
) -> None:
    claims = FakeClaimSource([claim(1)])
    driver = make_driver(tmp_path, claims)
    driver.start()

    error = driver.prepare([ClaimRef(namespace=namespace, name=name, uid=uid)])[uid].error or ""

    assert f"{field} " in error and "must be" in error, error
    assert claims.reads == 0, "a bad reference never reaches the API server"
    assert sorted(p.name for p in cdi_root(tmp_path).iterdir()) == []


def test_recovery_never_removes_a_checkpointed_spec_path_outside_the_cdi_root(
    tmp_path: Path,
) -> None:
    claims = FakeClaimSource([claim(1)])
    first = make_driver(tmp_path, claims)
    first.start()
    assert first.prepare([ref(1)])[claim_uid(1)].error is None
    target = victim(tmp_path)
    store = CheckpointStore(checkpoint_path(tmp_path))
    checkpoint = store.load()
    entry = checkpoint.claims[claim_uid(1)].model_copy(
        update={"state": "PrepareStarted", "cdi_spec_path": str(target)}
    )
    store.save(checkpoint.model_copy(update={"claims": {claim_uid(1): entry}}))

    report = make_driver(tmp_path, claims).start()

    assert target.read_text() == "keep me"
    assert report.rolled_back == [claim_uid(1)]
    # The spec this driver wrote, inside its root, is what the rollback removed.
    assert not (cdi_root(tmp_path) / f"{DRIVER}-{claim_uid(1)}.json").exists()


def test_recovery_skips_a_checkpoint_entry_with_a_traversing_uid(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1)])
    first = make_driver(tmp_path, claims)
    first.start()
    assert first.prepare([ref(1)])[claim_uid(1)].error is None
    (cdi_root(tmp_path) / f"{DRIVER}-evil").mkdir()
    store = CheckpointStore(checkpoint_path(tmp_path))
    checkpoint = store.load()
    hostile_uid = "evil/../../planted"
    entry = checkpoint.claims[claim_uid(1)].model_copy(update={"boot_id": "another-boot"})
    store.save(checkpoint.model_copy(update={"claims": {hostile_uid: entry}}))

    # Even when the API server had a claim with that UID, nothing is written for it.
    driver = make_driver(tmp_path, FakeClaimSource([claim(1, uid=hostile_uid)]))
    driver.start()

    assert not (tmp_path / "planted.json").exists(), "nothing written outside the CDI root"
    assert hostile_uid not in driver.prepared()
