"""Hostile and corrupt state files: the plugin starts, serves, touches nothing outside its roots.

The checkpoint and the CDI specs are files on the node that someone else can
change. Whatever is found in their place, start-up must not fail (a crash
loop), must not hang or read without bound, and must never write or remove
anything a symbolic link points to. Cases covered elsewhere are left out:
truncated JSON and unknown versions (test_driver_recovery), traversing UIDs
and ``cdiSpecPath``s (test_driver_path_containment), a spec's content replaced
(test_driver_recovery), a spec path that is a directory during a prepare
(test_driver_rollback).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
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
    validate_cdi_file,
)

from kubelet_plugin.cdi_writer import MAX_SPEC_BYTES
from kubelet_plugin.checkpoint_store import MAX_CHECKPOINT_BYTES
from kubelet_plugin.driver import GpuDriver, RecoveryReport
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component

WAIT_S = 20
OUTSIDE_CONTENT = b"not the plugin's: keep me\n"


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


def prepared_node(root: Path, claims: FakeClaimSource, *numbers: int) -> None:
    """A node where an earlier plugin process prepared these claims."""
    driver = make_driver(root, claims)
    driver.start()
    assert all(r.error is None for r in driver.prepare([ref(n) for n in numbers]).values())


def outside(root: Path) -> Path:
    """A file outside the plugin's roots, which a link in them may name."""
    path = root / "elsewhere" / "precious.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(OUTSIDE_CONTENT)
    return path


def start_within(driver: GpuDriver) -> RecoveryReport:
    """``driver.start()``, failing the test if it does not return in WAIT_S (a hang)."""
    outcome: list[RecoveryReport | BaseException] = []

    def run() -> None:
        try:
            outcome.append(driver.start())
        except BaseException as err:  # reported below, in the test's thread
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    assert outcome, f"start-up did not return within {WAIT_S} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def moved_aside(root: Path) -> list[str]:
    return [f for f in files_in(root / "state") if f.startswith("checkpoint.json.corrupt-")]


def wrong_entry_types() -> bytes:
    return json.dumps(
        {"version": 2, "claims": {claim_uid(1): {"state": 5, "devices": "gpu-1"}}}
    ).encode()


def huge() -> bytes:
    """50 MB: within what the plugin reads, but not a checkpoint it wrote."""
    return b'{"version": 2, "claims": {}, "padding": "' + b"x" * 50_000_000 + b'"}'


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: b"", id="empty"),
        pytest.param(lambda: b"\x00\xff\xfe binary", id="not-utf8"),
        pytest.param(lambda: b"[1, 2, 3]", id="json-array"),
        pytest.param(lambda: b'{"version": 2, "claims": []}', id="claims-a-list"),
        pytest.param(wrong_entry_types, id="entry-of-wrong-types"),
        pytest.param(huge, id="huge"),
        pytest.param(lambda: b" " * (MAX_CHECKPOINT_BYTES + 1), id="over-the-limit"),
    ],
)
def test_a_checkpoint_that_is_not_one_is_moved_aside_and_the_plugin_serves(
    tmp_path: Path, content: Callable[[], bytes]
) -> None:
    claims = FakeClaimSource([claim(1)])
    prepared_node(tmp_path, claims, 1)
    checkpoint_path(tmp_path).write_bytes(content())

    driver = make_driver(tmp_path, claims)
    report = start_within(driver)

    assert report.checkpoint_corrupt
    assert len(moved_aside(tmp_path)) == 1
    # The spec of the claim prepared before is left (an orphan) and written again
    # identically when the kubelet asks.
    assert report.orphan_specs == [spec_path(tmp_path, 1).name]
    result = driver.prepare([ref(1)])[claim_uid(1)]
    assert result.error is None
    assert result.devices[0].cdi_device_ids == (expected_id(1),)
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}


def fifo(path: Path) -> Path | None:
    os.mkfifo(path)
    return None


def directory(path: Path) -> Path | None:
    path.mkdir()
    (path / "inside").write_bytes(OUTSIDE_CONTENT)
    return None


def link_to_file(path: Path) -> Path | None:
    target = outside(path.parents[1])
    path.symlink_to(target)
    return target


def link_to_directory(path: Path) -> Path | None:
    target = outside(path.parents[1]).parent
    path.symlink_to(target)
    return target


def link_to_a_checkpoint(path: Path) -> Path | None:
    """A link to a valid checkpoint elsewhere: still not the file the plugin wrote."""
    target = path.parents[1] / "elsewhere" / "checkpoint.json"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(path.with_name("saved.json").read_bytes())
    path.symlink_to(target)
    return target


@pytest.mark.parametrize(
    "plant",
    [fifo, directory, link_to_file, link_to_directory, link_to_a_checkpoint],
)
def test_something_else_in_the_checkpoints_place_is_moved_aside_never_followed(
    tmp_path: Path, plant: Callable[[Path], Path | None]
) -> None:
    # A FIFO would block a plain read for ever, a directory failed every start-up
    # (a crash loop), and a link may lead anywhere (/dev/zero: a read without end).
    claims = FakeClaimSource([claim(1), claim(2)])
    prepared_node(tmp_path, claims, 1)
    path = checkpoint_path(tmp_path)
    path.rename(path.with_name("saved.json"))
    target = plant(path)
    before = target.read_bytes() if target is not None and target.is_file() else None

    driver = make_driver(tmp_path, claims)
    report = start_within(driver)

    assert report.checkpoint_corrupt
    (aside,) = moved_aside(tmp_path)
    assert os.path.lexists(tmp_path / "state" / aside)
    assert driver.prepare([ref(2)])[claim_uid(2)].error is None
    assert path.is_file() and not path.is_symlink()
    assert set(checkpoint_states(tmp_path)) == {claim_uid(2)}
    if target is not None and before is not None:
        assert target.read_bytes() == before, "the link's target is untouched"
    if target is not None:
        assert (tmp_path / "state" / aside).readlink() == target


def test_a_spec_that_is_a_link_elsewhere_is_replaced_and_its_target_left(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1), claim(2)])
    prepared_node(tmp_path, claims, 1, 2)
    target = outside(tmp_path)
    spec_path(tmp_path, 1).unlink()
    spec_path(tmp_path, 1).symlink_to(target)
    orphan = spec_path(tmp_path, 3)
    orphan.symlink_to(target)  # no entry: left, and unprepare removes the link only

    driver = make_driver(tmp_path, claims)
    report = start_within(driver)

    assert report.rewritten == [claim_uid(1)]
    assert not spec_path(tmp_path, 1).is_symlink()
    validate_cdi_file(spec_path(tmp_path, 1))
    assert report.orphan_specs == [orphan.name]
    assert driver.unprepare([ref(3), ref(1)]) == {claim_uid(3): None, claim_uid(1): None}
    assert not os.path.lexists(orphan)
    assert target.read_bytes() == OUTSIDE_CONTENT
    assert files_in(tmp_path / "cdi") == [spec_path(tmp_path, 2).name]


def test_a_spec_grown_huge_is_not_read_whole_and_is_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claims = FakeClaimSource([claim(1)])
    prepared_node(tmp_path, claims, 1)
    content = spec_path(tmp_path, 1).read_bytes()
    with spec_path(tmp_path, 1).open("r+b") as spec:
        spec.truncate(2**30)  # 1 GiB, sparse: costs no disk, only a reader's memory

    with caplog.at_level(logging.WARNING):
        report = start_within(make_driver(tmp_path, claims))

    assert report.rewritten == [claim_uid(1)]
    assert spec_path(tmp_path, 1).read_bytes() == content
    assert f"is larger than {MAX_SPEC_BYTES} bytes" in caplog.text


def test_a_prepared_claims_spec_replaced_by_a_directory(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1), claim(2, ["gpu-1"])])
    prepared_node(tmp_path, claims, 1)
    spec = spec_path(tmp_path, 1)
    spec.unlink()
    spec.mkdir()
    (spec / "inside").write_bytes(OUTSIDE_CONTENT)

    driver = make_driver(tmp_path, claims)
    report = start_within(driver)

    # Kept (the claim is prepared; its GPU stays its own), its spec not restorable yet.
    assert report.rewritten == []
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}
    error = driver.prepare([ref(1)])[claim_uid(1)].error or ""
    assert str(spec) in error and "the kubelet retries" in error
    assert "already prepared for claim default/claim-1" in (
        driver.prepare([ref(2)])[claim_uid(2)].error or ""
    )
    unprepare_error = driver.unprepare([ref(1)])[claim_uid(1)] or ""
    assert str(spec) in unprepare_error and "the kubelet retries" in unprepare_error
    assert (spec / "inside").read_bytes() == OUTSIDE_CONTENT, "the plugin removes no directory"

    # The admin removes it: the retried calls work.
    (spec / "inside").unlink()
    spec.rmdir()
    result = driver.prepare([ref(1)])[claim_uid(1)]
    assert result.error is None
    validate_cdi_file(spec)
    assert driver.unprepare([ref(1)]) == {claim_uid(1): None}
    assert driver.prepare([ref(2)])[claim_uid(2)].error is None


def test_an_entry_naming_an_unknown_device_does_not_stop_the_start(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1), claim(2)])
    prepared_node(tmp_path, claims, 1, 2)
    document = json.loads(checkpoint_path(tmp_path).read_bytes())
    document["claims"][claim_uid(1)]["devices"][0]["device"] = "gpu-99"
    checkpoint_path(tmp_path).write_bytes(json.dumps(document).encode())
    for name in files_in(tmp_path / "cdi"):  # a reboot: every spec is written again
        (tmp_path / "cdi" / name).unlink()

    driver = make_driver(tmp_path, claims, boot_id="another-boot")
    report = start_within(driver)

    # Recorded state is replayed as recorded (the spec comes from the checkpoint alone).
    assert report.rewritten == sorted([claim_uid(1), claim_uid(2)])
    validate_cdi_file(spec_path(tmp_path, 1))
    assert driver.unprepare([ref(1)]) == {claim_uid(1): None}
    assert checkpoint_states(tmp_path) == {claim_uid(2): "PrepareCompleted"}
    assert files_in(tmp_path / "cdi") == [spec_path(tmp_path, 2).name]
