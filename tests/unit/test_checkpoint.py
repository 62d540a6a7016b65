"""The checkpoint schema (versions, corruption) and its store (crash-safe saves, corrupt files)."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import pytest

from api.checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointVersionError,
    ClaimEntry,
    DeviceRecord,
    SharingRecord,
    assemble_checkpoint,
    decode_checkpoint,
    encode_checkpoint,
    encode_claim_entry,
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
    assert document["version"] == CHECKPOINT_VERSION == 1
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
    assert assemble_checkpoint({}) == b'{"claims":{},"version":1}'


def test_only_the_current_version_is_written() -> None:
    with pytest.raises(ValueError, match="only version 1"):
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
    with pytest.raises(CheckpointVersionError, match="version 2 was written by a newer plugin"):
        decode_checkpoint(b'{"version": 2, "claims": {}}')


def test_older_version_is_upgraded_step_by_step() -> None:
    # Version 0 as a made-up predecessor: entries were a list with the UID inside.
    def from_v0(document: dict[str, Any]) -> dict[str, Any]:
        claims = {item.pop("uid"): item for item in document["entries"]}
        return {"version": 1, "claims": claims}

    v1_entry = json.loads(encode_checkpoint(Checkpoint(claims={"uid-1": entry()})))["claims"][
        "uid-1"
    ]
    old = json.dumps({"version": 0, "entries": [{"uid": "uid-1", **v1_entry}]}).encode()
    assert decode_checkpoint(old, upgrades={0: from_v0}) == Checkpoint(claims={"uid-1": entry()})


def test_older_version_without_an_upgrade_is_an_error() -> None:
    with pytest.raises(CheckpointError, match="version 0 is not readable"):
        decode_checkpoint(b'{"version": 0, "claims": {}}')


def test_upgrade_that_does_not_bump_the_version_is_an_error() -> None:
    with pytest.raises(CheckpointError, match="gave version 0"):
        decode_checkpoint(b'{"version": 0}', upgrades={0: lambda d: d})


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


def test_newer_version_stays_in_place(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.path.parent.mkdir(parents=True)
    s.path.write_bytes(b'{"version": 9, "claims": {}}')
    with pytest.raises(CheckpointVersionError):
        s.load()
    assert s.path.read_bytes() == b'{"version": 9, "claims": {}}'
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
