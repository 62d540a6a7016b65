"""GpuDriver on real files: prepare, idempotency, per-claim errors, unprepare."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from driver_fixtures import (
    NODE,
    checkpoint_states,
    claim,
    claim_uid,
    expected_id,
    files_in,
    gpu_config_entry,
    make_driver,
    spec_path,
    tamper_spec,
    validate_cdi_file,
)

from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.node_driver import ClaimRef, NodeDriver
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component


def ref(n: int, *, uid: str | None = None) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=uid or claim_uid(n))


def started(root: Path, claims: FakeClaimSource, **options: int) -> GpuDriver:
    driver = make_driver(root, claims, **options)
    driver.start()
    return driver


def test_prepare_writes_a_valid_spec_and_answers_its_ids(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1, ["gpu-1", "gpu-2"]), claim(3)])
    driver: NodeDriver = started(tmp_path, claims)

    results = driver.prepare([ref(1), ref(3)])

    assert set(results) == {claim_uid(1), claim_uid(3)}
    first = results[claim_uid(1)]
    assert first.error is None
    assert [(d.requests, d.pool, d.device, d.cdi_device_ids) for d in first.devices] == [
        (("gpu",), NODE, "gpu-1", (expected_id(1, "gpu-1"),)),
        (("gpu",), NODE, "gpu-2", (expected_id(1, "gpu-2"),)),
    ]
    document = validate_cdi_file(spec_path(tmp_path, 1))
    assert document["kind"] == "gpu.dra-driver.io/gpu"
    assert document["cdiVersion"] == "0.5.0"
    nodes = [d["containerEdits"]["deviceNodes"][0] for d in document["devices"]]
    assert nodes == [
        {"path": f"/dev/nvidia{m}", "hostPath": str(tmp_path / f"host/dev/nvidia{m}")}
        for m in (1, 2)
    ]
    common = document["containerEdits"]
    assert [n["path"] for n in common["deviceNodes"]] == ["/dev/nvidiactl", "/dev/nvidia-uvm"]
    assert {m["containerPath"] for m in common["mounts"]} == {
        "/usr/bin/nvidia-smi",
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15",
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15",
    }
    validate_cdi_file(spec_path(tmp_path, 3))
    assert checkpoint_states(tmp_path) == {
        claim_uid(1): "PrepareCompleted",
        claim_uid(3): "PrepareCompleted",
    }


def test_repeated_prepare_answers_the_same_without_redoing_work(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1)])
    driver = started(tmp_path, claims)
    first = driver.prepare([ref(1)])
    reads = claims.reads
    written = spec_path(tmp_path, 1).stat()

    second = driver.prepare([ref(1)])

    assert second == first
    assert claims.reads == reads  # no API read
    again = spec_path(tmp_path, 1).stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


def test_spec_deleted_behind_the_driver_is_written_again_from_the_checkpoint(
    tmp_path: Path,
) -> None:
    claims = FakeClaimSource([claim(1, configs=[gpu_config_entry({"strategy": "TimeSlicing"})])])
    driver = started(tmp_path, claims)
    first = driver.prepare([ref(1)])
    content = spec_path(tmp_path, 1).read_bytes()
    spec_path(tmp_path, 1).unlink()
    claims.delete("default", "claim-1")  # proves the API server is not asked

    assert driver.prepare([ref(1)]) == first
    assert spec_path(tmp_path, 1).read_bytes() == content
    assert "DRA_GPU_1_TIME_SLICE_INTERVAL=Default" in content.decode()


def test_spec_replaced_behind_the_driver_is_restored_from_the_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claims = FakeClaimSource([claim(1)])
    driver = started(tmp_path, claims)
    first = driver.prepare([ref(1)])
    content = spec_path(tmp_path, 1).read_bytes()
    tamper_spec(spec_path(tmp_path, 1))
    claims.delete("default", "claim-1")  # proves the API server is not asked

    with caplog.at_level(logging.WARNING):
        assert driver.prepare([ref(1)]) == first

    assert spec_path(tmp_path, 1).read_bytes() == content
    warning = next(r.getMessage() for r in caplog.records if "differs" in r.getMessage())
    assert str(spec_path(tmp_path, 1)) in warning and "claim default/claim-1" in warning


def test_each_bad_claim_gets_its_own_clear_error(tmp_path: Path) -> None:
    garbage = gpu_config_entry(
        {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 0}}
    )
    claims = FakeClaimSource(
        [
            claim(1),
            claim(2, configs=[garbage]),
            claim(3, pool="node-b"),
            claim(4, uid="00000000-0000-4000-8000-00000000000a"),
            # claim 5 is not in the API server: deleted
        ]
    )
    driver = started(tmp_path, claims)

    results = driver.prepare([ref(1), ref(2), ref(3), ref(4), ref(5)])

    assert results[claim_uid(1)].error is None
    errors = {n: results[claim_uid(n)].error or "" for n in (2, 3, 4, 5)}
    assert errors[2].startswith("claim default/claim-2: status.allocation.devices.config[0]")
    assert "defaultActiveThreadPercentage: must be between 1 and 100, not 0" in errors[2]
    assert errors[3].startswith("claim default/claim-3: status.allocation.devices.results[0].pool")
    assert "allocated to another node" in errors[3]
    assert errors[4].startswith("claim default/claim-4: got replaced")
    assert "00000000-0000-4000-8000-00000000000a" in errors[4]
    assert errors[5] == (
        "claim default/claim-5: not found in the API server: it was deleted; nothing to prepare"
    )
    for n in (2, 3, 4, 5):
        assert results[claim_uid(n)].devices == ()
    assert files_in(tmp_path / "cdi") == [spec_path(tmp_path, 1).name]
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}


def test_api_server_unreachable_is_a_retryable_claim_error(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1)])
    driver = started(tmp_path, claims)
    claims.fail = True
    error = driver.prepare([ref(1)])[claim_uid(1)].error
    assert (
        error == "claim default/claim-1: reading it from the API server failed: connection refused"
    )
    claims.fail = False
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None


def test_a_device_serves_one_claim_at_a_time(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1, ["gpu-0"]), claim(2, ["gpu-0"])])
    driver = started(tmp_path, claims)
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None

    error = driver.prepare([ref(2)])[claim_uid(2)].error or ""
    assert "device gpu-0 is already prepared for claim default/claim-1" in error
    assert not spec_path(tmp_path, 2).exists()

    assert driver.unprepare([ref(1)]) == {claim_uid(1): None}
    assert driver.prepare([ref(2)])[claim_uid(2)].error is None


def test_failed_spec_write_leaves_nothing_behind(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1)])
    driver = started(tmp_path, claims)
    (tmp_path / "cdi").rmdir()
    (tmp_path / "cdi").write_text("not a directory")  # the write cannot succeed

    error = driver.prepare([ref(1)])[claim_uid(1)].error or ""

    assert error.startswith("claim default/claim-1: preparing failed:")
    assert "the kubelet retries" in error
    assert checkpoint_states(tmp_path) == {}
    assert driver.prepared() == {}
    assert files_in(tmp_path / "state") == ["checkpoint.json"]


def test_missing_claim_fields_are_an_error(tmp_path: Path) -> None:
    driver = started(tmp_path, FakeClaimSource())
    results = driver.prepare([ClaimRef(namespace="default", name="", uid="u-1")])
    assert "namespace, name and uid are all required" in (results["u-1"].error or "")


def test_unprepare_removes_spec_and_entry_and_tolerates_unknown_claims(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1), claim(2)])
    driver = started(tmp_path, claims)
    driver.prepare([ref(1), ref(2)])

    assert driver.unprepare([ref(1), ref(9)]) == {claim_uid(1): None, claim_uid(9): None}
    assert not spec_path(tmp_path, 1).exists()
    assert spec_path(tmp_path, 2).exists()
    assert checkpoint_states(tmp_path) == {claim_uid(2): "PrepareCompleted"}
    assert driver.unprepare([ref(1)]) == {claim_uid(1): None}  # again: still fine

    # After unprepare, a prepare does the work again (reads the claim).
    reads = claims.reads
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    assert claims.reads == reads + 1


def test_unprepare_removes_a_spec_even_without_a_checkpoint_entry(tmp_path: Path) -> None:
    driver = started(tmp_path, FakeClaimSource())
    orphan = spec_path(tmp_path, 4)
    orphan.write_text("{}")
    assert driver.unprepare([ref(4)]) == {claim_uid(4): None}
    assert not orphan.exists()


def test_checkpoint_file_holds_what_the_kubelet_was_told(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1, configs=[gpu_config_entry({"strategy": "MPS"})])])
    driver = started(tmp_path, claims)
    driver.prepare([ref(1)])
    document = json.loads((tmp_path / "state" / "checkpoint.json").read_bytes())
    entry = document["claims"][claim_uid(1)]
    assert entry["namespace"] == "default" and entry["name"] == "claim-1"
    assert entry["cdiSpecPath"] == str(spec_path(tmp_path, 1))
    assert entry["devices"][0]["cdiDeviceIds"] == [expected_id(1)]
    assert entry["devices"][0]["sharing"] == {"strategy": "MPS"}


def test_unprepare_answers_an_error_while_the_checkpoint_cannot_be_saved(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1), claim(2)])
    driver = started(tmp_path, claims)
    driver.prepare([ref(1), ref(2)])
    state = tmp_path / "state"
    (state / "checkpoint.json").unlink()
    state.rmdir()
    state.write_text("not a directory")  # no save can succeed now

    answers = driver.unprepare([ref(1), ref(2)])

    for n in (1, 2):
        assert "unpreparing failed: saving checkpoint" in (answers[claim_uid(n)] or "")
        assert not spec_path(tmp_path, n).exists()
    # Once the disk is fine again, the kubelet's retry succeeds and the file is right.
    state.unlink()
    assert driver.unprepare([ref(1), ref(2)]) == {claim_uid(1): None, claim_uid(2): None}
    assert checkpoint_states(tmp_path) == {}
