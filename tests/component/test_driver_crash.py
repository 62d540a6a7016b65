"""Crash tests: the driver process dies at a fault point, a new one starts, the kubelet retries.

Each run is a separate Python process (driver_process.py, forked by
crash_node.DriverForker) that ends with ``os._exit`` at the chosen point, as a
SIGKILL would end it: no cleanup, no flushing of state. Nothing in the code
under test is patched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crash_node import DriverForker, Node, forker, refs
from driver_fixtures import (
    FAULT_EXIT_CODE,
    checkpoint_states,
    claim,
    claim_uid,
    expected_id,
    files_in,
    spec_path,
    validate_cdi_file,
)

__all__ = ["forker"]  # a fixture, used by name

pytestmark = pytest.mark.component


def ids(step: dict[str, Any], n: int) -> list[list[str]]:
    result = step[claim_uid(n)]
    assert result["error"] is None, result["error"]
    return [d["cdi_device_ids"] for d in result["devices"]]


def test_killed_between_spec_and_completed_checkpoint(tmp_path: Path, forker: DriverForker) -> None:
    node = Node(tmp_path, [claim(1, ["gpu-1", "gpu-2"])], forker)

    code, _ = node.run([("prepare", refs(1))], fault={"point": "spec-written"})

    assert code == FAULT_EXIT_CODE
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareStarted"}
    left_by_crash = spec_path(tmp_path, 1).read_bytes()

    code, out = node.run([("prepare", refs(1))])

    assert code == 0
    assert out["recovery"]["rolled_back"] == [claim_uid(1)]
    assert ids(out["steps"][0], 1) == [[expected_id(1, "gpu-1")], [expected_id(1, "gpu-2")]]
    assert spec_path(tmp_path, 1).read_bytes() == left_by_crash  # same content as before
    validate_cdi_file(spec_path(tmp_path, 1))
    assert files_in(tmp_path / "cdi") == [spec_path(tmp_path, 1).name]
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}
    node.no_temp_files()


def test_killed_after_the_started_checkpoint(tmp_path: Path, forker: DriverForker) -> None:
    node = Node(tmp_path, [claim(1)], forker)

    code, _ = node.run([("prepare", refs(1))], fault={"point": "checkpoint-started"})

    assert code == FAULT_EXIT_CODE
    assert not spec_path(tmp_path, 1).exists()
    code, out = node.run([("prepare", refs(1))])
    assert out["recovery"]["rolled_back"] == [claim_uid(1)]
    assert ids(out["steps"][0], 1) == [[expected_id(1)]]
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}
    node.no_temp_files()


def test_killed_before_answering_keeps_the_prepared_claim(
    tmp_path: Path, forker: DriverForker
) -> None:
    node = Node(tmp_path, [claim(1)], forker)

    code, _ = node.run([("prepare", refs(1))], fault={"point": "prepare-completed"})

    assert code == FAULT_EXIT_CODE
    code, out = node.run([("prepare", refs(1))])
    assert out["recovery"]["rolled_back"] == []
    assert ids(out["steps"][0], 1) == [[expected_id(1)]]
    # One read at start-up (is the claim still there?), none for the prepare: nothing redone.
    assert out["api_reads"] == 1


def test_no_claim_is_lost_when_another_prepare_is_killed(
    tmp_path: Path, forker: DriverForker
) -> None:
    node = Node(tmp_path, [claim(1), claim(2), claim(3)], forker)

    # Claims 1 and 2 complete; the process dies in the middle of claim 3.
    code, _ = node.run(
        [("prepare", refs(1, 2)), ("prepare", refs(3))],
        fault={"point": "spec-written", "hit": 3},
    )

    assert code == FAULT_EXIT_CODE
    assert checkpoint_states(tmp_path) == {
        claim_uid(1): "PrepareCompleted",
        claim_uid(2): "PrepareCompleted",
        claim_uid(3): "PrepareStarted",
    }
    code, out = node.run([("prepare", refs(1, 2, 3))])
    assert out["recovery"]["rolled_back"] == [claim_uid(3)]
    for n in (1, 2, 3):
        assert ids(out["steps"][0], n) == [[expected_id(n)]]
        validate_cdi_file(spec_path(tmp_path, n))
    assert set(checkpoint_states(tmp_path).values()) == {"PrepareCompleted"}
    assert len(files_in(tmp_path / "cdi")) == 3
    node.no_temp_files()


def test_killed_in_unprepare_then_the_claim_is_deleted(
    tmp_path: Path, forker: DriverForker
) -> None:
    node = Node(tmp_path, [claim(1)], forker)
    node.run([("prepare", refs(1))])

    code, _ = node.run([("unprepare", refs(1))], fault={"point": "spec-removed"})

    assert code == FAULT_EXIT_CODE
    assert not spec_path(tmp_path, 1).exists()
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}
    node.set_claims([])  # the pod is gone and so is its claim
    code, out = node.run([("unprepare", refs(1))])
    assert out["recovery"]["removed"] == [claim_uid(1)]
    assert out["steps"][0] == {claim_uid(1): None}
    assert checkpoint_states(tmp_path) == {}
    assert files_in(tmp_path / "cdi") == []


def test_killed_in_unprepare_and_the_kubelet_retries(tmp_path: Path, forker: DriverForker) -> None:
    node = Node(tmp_path, [claim(1)], forker)
    node.run([("prepare", refs(1))])
    node.run([("unprepare", refs(1))], fault={"point": "spec-removed"})

    # The claim still exists: start-up writes the spec again, the retried unprepare removes it.
    code, out = node.run([("unprepare", refs(1))])

    assert code == 0
    assert out["recovery"]["rewritten"] == [claim_uid(1)]
    assert out["steps"][0] == {claim_uid(1): None}
    assert checkpoint_states(tmp_path) == {}
    assert files_in(tmp_path / "cdi") == []


def test_reboot_after_a_kill_redoes_prepared_claims(tmp_path: Path, forker: DriverForker) -> None:
    node = Node(tmp_path, [claim(1), claim(2)], forker)
    node.run(
        [("prepare", refs(1)), ("prepare", refs(2))], fault={"point": "spec-written", "hit": 2}
    )
    for name in files_in(tmp_path / "cdi"):  # the reboot empties the tmpfs
        (tmp_path / "cdi" / name).unlink()

    code, out = node.run([("prepare", refs(1, 2))], boot_id="second-boot")

    assert code == 0
    assert out["recovery"]["rolled_back"] == [claim_uid(2)]
    assert out["recovery"]["rewritten"] == [claim_uid(1)]
    assert ids(out["steps"][0], 1) == [[expected_id(1)]]
    assert ids(out["steps"][0], 2) == [[expected_id(2)]]
    assert len(files_in(tmp_path / "cdi")) == 2
