"""The checkpoint schema (versions, corruption) and its store (crash-safe saves, corrupt files)."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from api.checkpoint import (
    CHECKPOINT_VERSION,
    UPGRADES,
    Checkpoint,
    CheckpointVersionError,
    ClaimEntry,
    DeviceMetadataRecord,
    DeviceRecord,
    SharingRecord,
    assemble_checkpoint,
    decode_checkpoint,
    encode_checkpoint,
    encode_claim_entry,
    spec_digest,
)
from api.errors import CheckpointError
from kubelet_plugin.cdi_writer import write_atomically
from kubelet_plugin.checkpoint_store import CheckpointCorruptError, CheckpointStore, read_boot_id

# 2026-03-01T12:00:00Z
NOW = 1772366400.0


def entry(state: str = "PrepareCompleted", *, device: str = "gpu-0") -> ClaimEntry:
    return ClaimEntry.model_validate_json(
        json.dumps(
            {
                "namespace": "default",
                "name": "train-0",
                "state": state,
                "bootId": "5a0c0d6e-boot",
                "cdiSpecPath": "/var/run/cdi/gpu.dra-driver.io-uid-1.json",
                "devices": [
                    {
                        "requests": ["gpu"],
                        "pool": "node-a",
                        "device": device,
                        "cdiDeviceIds": [f"gpu.dra-driver.io/gpu=uid-1-{device}"],
                        "uuid": "GPU-1",
                        "deviceNode": "/dev/nvidia0",
                        "sharing": {"strategy": "MPS", "mpsActiveThreadPercentage": 50},
                    }
                ],
            }
        )
    )


def sample() -> Checkpoint:
    return Checkpoint(claims={"uid-1": entry(), "uid-2": entry("PrepareStarted", device="gpu-1")})


def test_round_trip() -> None:
    checkpoint = sample()
    data = encode_checkpoint(checkpoint)
    assert decode_checkpoint(data) == checkpoint
    document = json.loads(data)
    assert document["version"] == CHECKPOINT_VERSION == 3
    record = document["claims"]["uid-1"]
    assert record["state"] == "PrepareCompleted"
    assert record["bootId"] == "5a0c0d6e-boot"
    assert record["devices"][0]["cdiDeviceIds"] == ["gpu.dra-driver.io/gpu=uid-1-gpu-0"]
    assert record["devices"][0]["sharing"] == {"strategy": "MPS", "mpsActiveThreadPercentage": 50}


def test_entries_encoded_one_by_one_give_the_same_file() -> None:
    checkpoint = sample()
    whole = checkpoint.model_dump(mode="json", by_alias=True, exclude_none=True)
    expected = json.dumps(whole, separators=(",", ":"), sort_keys=True).encode()
    assert encode_checkpoint(checkpoint) == expected
    parts = {uid: encode_claim_entry(e) for uid, e in reversed(checkpoint.claims.items())}
    assert assemble_checkpoint(parts) == expected
    assert assemble_checkpoint({}) == b'{"claims":{},"version":3}'


def test_only_the_current_version_is_written() -> None:
    with pytest.raises(ValueError, match=f"only version {CHECKPOINT_VERSION}"):
        encode_checkpoint(Checkpoint(version=0))


def test_share_id_keeps_its_api_spelling() -> None:
    record = DeviceRecord(
        requests=("gpu",),
        pool="p",
        device="gpu-0",
        share_id="s-1",
        cdi_device_ids=("k=v",),
        uuid="GPU-1",
        device_node="/dev/nvidia0",
        sharing=SharingRecord(strategy="TimeSlicing", time_slice_interval="Short"),
    )
    checkpoint = Checkpoint(claims={"u": entry().model_copy(update={"devices": (record,)})})
    data = encode_checkpoint(checkpoint)
    assert '"shareID":"s-1"' in data.decode()
    assert decode_checkpoint(data) == checkpoint


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid JSON"),
        (b'{"version": 1, "claims": {', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"claims": {}}', "no integer version"),
        (b'{"version": "1", "claims": {}}', "no integer version"),
        (b'{"version": true, "claims": {}}', "no integer version"),
        (b'{"version": 1, "claims": {"u": {"state": "Done"}}}', "claims.u"),
        (b'{"version": 1, "claims": {}, "extra": 1}', "extra"),
    ],
)
def test_corrupt_documents_are_checkpoint_errors(data: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=message) as caught:
        decode_checkpoint(data)
    assert not isinstance(caught.value, CheckpointVersionError)


def test_newer_version_is_refused_as_a_version_error() -> None:
    newer = CHECKPOINT_VERSION + 1
    with pytest.raises(
        CheckpointVersionError, match=f"version {newer} was written by a newer plugin"
    ) as caught:
        decode_checkpoint(f'{{"version": {newer}, "claims": {{}}}}'.encode())
    assert caught.value.version == newer


@pytest.mark.parametrize("version", [0, -1])
def test_version_older_than_the_oldest_readable_is_a_version_error(version: int) -> None:
    # Not "corrupt": it parses, and moving it aside would forget the GPUs it holds.
    with pytest.raises(
        CheckpointVersionError, match=f"version {version} is older than this plugin reads"
    ) as caught:
        decode_checkpoint(f'{{"version": {version}, "claims": {{}}}}'.encode())
    assert caught.value.version == version


def test_version_1_entries_read_without_a_digest() -> None:
    v1_entry = json.loads(encode_claim_entry(entry()))
    assert "cdiSpecDigest" not in v1_entry
    old = json.dumps({"version": 1, "claims": {"uid-1": v1_entry}}).encode()
    checkpoint = decode_checkpoint(old)
    assert checkpoint.version == CHECKPOINT_VERSION
    assert checkpoint.claims["uid-1"] == entry()
    assert checkpoint.claims["uid-1"].cdi_spec_digest is None


def test_version_2_entries_read_without_device_metadata() -> None:
    digest = spec_digest(b"{}")
    with_digest = entry().model_copy(update={"cdi_spec_digest": digest})
    v2_entry = json.loads(encode_claim_entry(with_digest))
    old = json.dumps({"version": 2, "claims": {"uid-1": v2_entry}}).encode()
    checkpoint = decode_checkpoint(old)
    assert checkpoint.version == CHECKPOINT_VERSION
    assert checkpoint.claims["uid-1"].cdi_spec_digest == digest
    assert checkpoint.claims["uid-1"].device_metadata is None


@pytest.mark.parametrize(
    ("record", "written"),
    [
        (DeviceMetadataRecord(pod_claim_name="gpu"), {"podClaimName": "gpu"}),
        (DeviceMetadataRecord(), {}),
    ],
    ids=["from-a-template", "named-by-the-pod"],
)
def test_device_metadata_is_recorded_with_the_entry(
    record: DeviceMetadataRecord, written: dict[str, str]
) -> None:
    with_metadata = entry().model_copy(update={"device_metadata": record})
    data = encode_checkpoint(Checkpoint(claims={"uid-1": with_metadata}))
    assert json.loads(data)["claims"]["uid-1"]["deviceMetadata"] == written
    assert decode_checkpoint(data).claims["uid-1"] == with_metadata


def test_spec_digest_is_recorded_with_the_entry() -> None:
    content = b'{"cdiVersion":"0.6.0"}'
    digest = spec_digest(content)
    assert digest == "sha256:" + hashlib.sha256(content).hexdigest()
    with_digest = entry().model_copy(update={"cdi_spec_digest": digest})
    data = encode_checkpoint(Checkpoint(claims={"uid-1": with_digest}))
    assert f'"cdiSpecDigest":"{digest}"' in data.decode()
    assert decode_checkpoint(data).claims["uid-1"] == with_digest


def test_older_version_is_upgraded_step_by_step() -> None:
    # Version 0 as a made-up predecessor: entries were a list with the UID inside.
    def from_v0(document: dict[str, Any]) -> dict[str, Any]:
        claims = {item.pop("uid"): item for item in document["entries"]}
        return {"version": 1, "claims": claims}

    steps = {**UPGRADES, 0: from_v0}

    v1_entry = json.loads(encode_checkpoint(Checkpoint(claims={"uid-1": entry()})))["claims"][
        "uid-1"
    ]
    old = json.dumps({"version": 0, "entries": [{"uid": "uid-1", **v1_entry}]}).encode()
    assert decode_checkpoint(old, upgrades=steps) == Checkpoint(claims={"uid-1": entry()})


def test_upgrade_that_does_not_bump_the_version_is_an_error() -> None:
    with pytest.raises(CheckpointError, match="gave version 0"):
        decode_checkpoint(b'{"version": 0}', upgrades={**UPGRADES, 0: lambda d: d})


# --- the store --------------------------------------------------------------------------


def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "state" / "checkpoint.json", clock=lambda: NOW)


def test_missing_file_is_an_empty_checkpoint(tmp_path: Path) -> None:
    assert store(tmp_path).load() == Checkpoint()


def test_save_then_load(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.save(sample())
    assert s.load() == sample()
    assert stat.S_IMODE(s.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in s.path.parent.iterdir()) == ["checkpoint.json"]


def test_corrupt_file_is_moved_aside_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = store(tmp_path)
    s.path.parent.mkdir(parents=True)
    s.path.write_bytes(b'{"version": 1, "claims": {"u"')
    with caplog.at_level(logging.ERROR), pytest.raises(CheckpointCorruptError) as caught:
        s.load()
    aside = s.path.with_name("checkpoint.json.corrupt-20260301T120000Z")
    assert caught.value.moved_to == aside
    assert aside.read_bytes() == b'{"version": 1, "claims": {"u"'
    assert not s.path.exists()
    assert str(s.path) in caplog.text and str(aside) in caplog.text
    assert "corrupt" in caplog.text
    # The next start finds no file: an empty checkpoint, and the evidence stays.
    assert s.load() == Checkpoint()
    assert aside.exists()


def test_second_corruption_in_the_same_second_keeps_the_first(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.path.parent.mkdir(parents=True)
    for content in (b"first", b"second"):
        s.path.write_bytes(content)
        with pytest.raises(CheckpointCorruptError):
            s.load()
    assert s.path.with_name("checkpoint.json.corrupt-20260301T120000Z").read_bytes() == b"first"
    assert s.path.with_name("checkpoint.json.corrupt-20260301T120000Z-1").read_bytes() == b"second"


@pytest.mark.parametrize("version", [0, CHECKPOINT_VERSION + 1, 9])
def test_unknown_version_stays_in_place_with_an_error_naming_file_version_and_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, version: int
) -> None:
    s = store(tmp_path)
    s.path.parent.mkdir(parents=True)
    data = f'{{"version": {version}, "claims": {{}}}}'.encode()
    s.path.write_bytes(data)
    with caplog.at_level(logging.ERROR), pytest.raises(CheckpointVersionError) as caught:
        s.load()
    message = str(caught.value)
    assert str(s.path) in message
    assert f"version {version}" in message
    assert "roll forward" in message and "move it aside" in message
    assert caught.value.path == s.path and caught.value.version == version
    assert message in caplog.text
    # Left exactly as it was, nothing moved aside: the same error at every start.
    assert s.path.read_bytes() == data
    assert [p.name for p in s.path.parent.iterdir()] == ["checkpoint.json"]


def test_load_removes_temp_files_of_an_interrupted_save(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.save(sample())
    stale = s.path.with_name(".checkpoint.json.abc123.tmp")
    stale.write_bytes(b"half")
    other = s.path.with_name(".someone-else.tmp")
    other.write_bytes(b"theirs")
    assert s.load() == sample()
    assert not stale.exists()
    assert other.exists()


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "file.json"
    write_atomically(target, b"old")
    with pytest.raises(TypeError):
        write_atomically(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_read_boot_id(tmp_path: Path) -> None:
    path = tmp_path / "boot_id"
    path.write_text("3f1c2d4e-0000-4000-8000-000000000001\n")
    assert read_boot_id(path) == "3f1c2d4e-0000-4000-8000-000000000001"
