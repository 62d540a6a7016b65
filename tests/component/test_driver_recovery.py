"""GpuDriver start-up: repairs what a crash, a reboot or changes in the API server left."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from driver_fixtures import (
    checkpoint_path,
    checkpoint_states,
    claim,
    claim_uid,
    expected_id,
    files_in,
    make_driver,
    spec_path,
    tamper_spec,
    validate_cdi_file,
)

from api.checkpoint import CHECKPOINT_VERSION, CheckpointVersionError
from kubelet_plugin.checkpoint_store import CheckpointStore
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


def prepared_node(root: Path, claims: FakeClaimSource, *numbers: int) -> None:
    """A node where a first driver process prepared these claims."""
    driver = make_driver(root, claims)
    driver.start()
    results = driver.prepare([ref(n) for n in numbers])
    assert all(r.error is None for r in results.values())


def mark_started(root: Path, n: int) -> None:
    """Turn claim n's entry back into PrepareStarted, as a crash mid-prepare leaves it."""
    store = CheckpointStore(checkpoint_path(root))
    checkpoint = store.load()
    entry = checkpoint.claims[claim_uid(n)]
    claims = dict(checkpoint.claims)
    claims[claim_uid(n)] = entry.model_copy(update={"state": "PrepareStarted"})
    store.save(checkpoint.model_copy(update={"claims": claims}))


def test_started_prepare_is_rolled_back(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1), claim(2)])
    prepared_node(tmp_path, claims, 1, 2)
    mark_started(tmp_path, 2)

    report = make_driver(tmp_path, claims).start()

    assert report.rolled_back == [claim_uid(2)]
    assert not spec_path(tmp_path, 2).exists()
    assert spec_path(tmp_path, 1).exists()
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}


def test_completed_claim_with_a_missing_spec_gets_it_back(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1)])
    prepared_node(tmp_path, claims, 1)
    content = spec_path(tmp_path, 1).read_bytes()
    spec_path(tmp_path, 1).unlink()

    driver = make_driver(tmp_path, claims)
    report = driver.start()

    assert report.rewritten == [claim_uid(1)]
    assert spec_path(tmp_path, 1).read_bytes() == content
    reads = claims.reads
    result = driver.prepare([ref(1)])[claim_uid(1)]
    assert result.devices[0].cdi_device_ids == (expected_id(1),)
    assert claims.reads == reads


def test_reboot_redoes_every_prepared_claim(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1), claim(2)])
    prepared_node(tmp_path, claims, 1, 2)
    for n in (1, 2):  # the CDI root is a tmpfs: gone after a reboot
        spec_path(tmp_path, n).unlink()

    report = make_driver(tmp_path, claims, boot_id="new-boot").start()

    assert report.rewritten == sorted([claim_uid(1), claim_uid(2)])
    for n in (1, 2):
        validate_cdi_file(spec_path(tmp_path, n))
    document = json.loads(checkpoint_path(tmp_path).read_bytes())
    assert {e["bootId"] for e in document["claims"].values()} == {"new-boot"}


def test_claims_gone_from_the_api_server_are_removed(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1), claim(2), claim(3)])
    prepared_node(tmp_path, claims, 1, 2, 3)
    claims.delete("default", "claim-1")
    claims.put(claim(2, uid="00000000-0000-4000-8000-000000000002"))  # deleted and made again

    report = make_driver(tmp_path, claims).start()

    assert sorted(report.removed) == sorted([claim_uid(1), claim_uid(2)])
    assert files_in(tmp_path / "cdi") == [spec_path(tmp_path, 3).name]
    assert checkpoint_states(tmp_path) == {claim_uid(3): "PrepareCompleted"}


def test_claims_are_kept_when_the_api_server_cannot_tell(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1), claim(2), claim(3)])
    prepared_node(tmp_path, claims, 1, 2, 3)
    claims.fail = True
    reads = claims.reads

    report = make_driver(tmp_path, claims).start()

    assert sorted(report.unverified) == sorted(claim_uid(n) for n in (1, 2, 3))
    assert report.removed == []
    assert claims.reads == reads + 1  # asked once, not once per claim
    assert all(spec_path(tmp_path, n).exists() for n in (1, 2, 3))
    assert set(checkpoint_states(tmp_path).values()) == {"PrepareCompleted"}


def test_spec_without_an_entry_is_reported_and_left(tmp_path: Path) -> None:
    claims = FakeClaimSource()
    (tmp_path / "cdi").mkdir()
    orphan = spec_path(tmp_path, 5)
    orphan.write_text("{}")
    other_driver = tmp_path / "cdi" / "nvidia.yaml"
    other_driver.write_text("---\n")

    report = make_driver(tmp_path, claims).start()

    assert report.orphan_specs == [orphan.name]
    assert orphan.exists() and other_driver.exists()


def test_temp_files_of_an_interrupted_write_are_removed(tmp_path: Path) -> None:
    (tmp_path / "cdi").mkdir()
    ours = tmp_path / "cdi" / f".gpu.dra-driver.io-{claim_uid(1)}.json.x1y2.tmp"
    ours.write_text("{")
    theirs = tmp_path / "cdi" / ".other-vendor.json.tmp"
    theirs.write_text("{")

    make_driver(tmp_path, FakeClaimSource()).start()

    assert files_in(tmp_path / "cdi") == [theirs.name]


def test_corrupt_checkpoint_is_moved_aside_and_claims_are_prepared_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claims = FakeClaimSource([claim(1)])
    prepared_node(tmp_path, claims, 1)
    checkpoint_path(tmp_path).write_bytes(b'{"version": 1, "claims": {"')

    driver = make_driver(tmp_path, claims)
    with caplog.at_level(logging.ERROR):
        report = driver.start()

    assert report.checkpoint_corrupt
    assert "is corrupt" in caplog.text
    state_files = files_in(tmp_path / "state")
    assert [f for f in state_files if f.startswith("checkpoint.json.corrupt-")]
    # The kubelet asks again; the same spec and IDs come out.
    result = driver.prepare([ref(1)])[claim_uid(1)]
    assert result.error is None
    assert result.devices[0].cdi_device_ids == (expected_id(1),)
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}


@pytest.mark.parametrize("version", [0, CHECKPOINT_VERSION + 1])
def test_checkpoint_of_an_unknown_version_stops_the_start(tmp_path: Path, version: int) -> None:
    # Older than the oldest readable or newer than this plugin: one behaviour, never
    # "corrupt" (moving it aside would forget the GPUs the prepared claims hold).
    claims = FakeClaimSource([claim(1)])
    prepared_node(tmp_path, claims, 1)
    document = json.loads(checkpoint_path(tmp_path).read_bytes())
    document["version"] = version
    data = json.dumps(document).encode()
    checkpoint_path(tmp_path).write_bytes(data)

    with pytest.raises(CheckpointVersionError) as caught:
        make_driver(tmp_path, claims).start()

    assert str(checkpoint_path(tmp_path)) in str(caught.value)
    assert f"version {version}" in str(caught.value)
    assert checkpoint_path(tmp_path).read_bytes() == data
    assert files_in(tmp_path / "state") == ["checkpoint.json"]
    assert spec_path(tmp_path, 1).exists()


def test_completed_claim_with_a_replaced_spec_gets_it_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claims = FakeClaimSource([claim(1), claim(2)])
    prepared_node(tmp_path, claims, 1, 2)
    content = spec_path(tmp_path, 1).read_bytes()
    untouched = spec_path(tmp_path, 2).stat()
    tamper_spec(spec_path(tmp_path, 1))

    with caplog.at_level(logging.WARNING):
        report = make_driver(tmp_path, claims).start()

    assert report.rewritten == [claim_uid(1)]
    assert spec_path(tmp_path, 1).read_bytes() == content
    warning = next(r.getMessage() for r in caplog.records if "differs" in r.getMessage())
    assert str(spec_path(tmp_path, 1)) in warning and "claim default/claim-1" in warning
    # An intact spec is left alone.
    again = spec_path(tmp_path, 2).stat()
    assert (again.st_ino, again.st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)


def test_version_1_checkpoint_gets_its_digests_once(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1)])
    prepared_node(tmp_path, claims, 1)
    content = spec_path(tmp_path, 1).read_bytes()
    document = json.loads(checkpoint_path(tmp_path).read_bytes())
    document["version"] = 1
    for entry in document["claims"].values():
        entry.pop("cdiSpecDigest", None)
    checkpoint_path(tmp_path).write_bytes(json.dumps(document).encode())

    report = make_driver(tmp_path, claims).start()

    # Written again from the checkpoint (the same bytes), and its digest recorded.
    assert report.rewritten == [claim_uid(1)]
    assert spec_path(tmp_path, 1).read_bytes() == content
    saved = json.loads(checkpoint_path(tmp_path).read_bytes())
    assert saved["version"] == CHECKPOINT_VERSION
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    assert saved["claims"][claim_uid(1)]["cdiSpecDigest"] == digest
    # Once: the next start finds the digest and the spec matching it.
    assert make_driver(tmp_path, claims).start().rewritten == []
