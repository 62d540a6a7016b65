"""NodeFileLock between real processes: what two plugin instances of a node rely on."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from driver_fixtures import claim, claim_uid, expected_id, make_driver, spec_path

from kubelet_plugin.node_driver import ClaimRef
from kubelet_plugin.node_lock import NodeFileLock
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component

HOLDER = """
import sys
from pathlib import Path
from kubelet_plugin.node_lock import NodeFileLock
with NodeFileLock(Path(sys.argv[1])).held():
    print("held", flush=True)
    sys.stdin.readline()
"""


def _holder(path: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


def _end(holder: subprocess.Popen[str]) -> int:
    """Kill the holder if it still runs, reap it and close its pipes; its exit status."""
    if holder.poll() is None:
        holder.kill()
    code = holder.wait(timeout=30)
    for pipe in (holder.stdin, holder.stdout):
        if pipe is not None:
            pipe.close()
    return code


def _free_now(path: Path) -> bool:
    """One try: True (and released again) when no other process holds the lock."""
    stopped = threading.Event()
    stopped.set()
    lock = NodeFileLock(path)
    try:
        return lock.acquire_when_free(stopped, what="a probe")
    finally:
        lock.close()


def test_another_process_holds_it_until_it_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "plugin" / "serialize.lock"
    holder = _holder(path)
    try:
        assert not _free_now(path)
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
        assert _free_now(path)
        assert path.exists(), "the lock file stays: removing it would split the lock"
    finally:
        _end(holder)


def test_a_crashed_holder_leaves_nobody_waiting(tmp_path: Path) -> None:
    path = tmp_path / "publisher.lock"
    holder = _holder(path)
    assert _end(holder) != 0  # killed while holding the lock
    assert _free_now(path)


def test_a_held_lock_is_taken_over_once_released(tmp_path: Path) -> None:
    path = tmp_path / "publisher.lock"
    first, second = NodeFileLock(path), NodeFileLock(path)
    never = threading.Event()
    try:
        assert first.acquire_when_free(never, what="publishing")
        assert first.is_held
        took: list[bool] = []
        waiter = threading.Thread(
            target=lambda: took.append(second.acquire_when_free(never, what="publishing"))
        )
        waiter.start()
        first.release()
        waiter.join(timeout=30)
        assert took == [True]
        assert second.is_held and not first.is_held
    finally:
        first.close()
        second.close()


def test_two_drivers_of_one_node_take_turns_and_see_each_others_claims(tmp_path: Path) -> None:
    claims = FakeClaimSource()
    lock_path = tmp_path / "plugin" / "serialize.lock"
    old = make_driver(tmp_path, claims, node_lock=NodeFileLock(lock_path))
    new = make_driver(tmp_path, claims, node_lock=NodeFileLock(lock_path))
    old.start()
    new.start()
    claims.put(claim(0, ["gpu-0"]))
    claims.put(claim(1, ["gpu-0"]))
    first = ClaimRef(namespace="default", name="claim-0", uid=claim_uid(0))
    second = ClaimRef(namespace="default", name="claim-1", uid=claim_uid(1))

    assert new.prepare([first])[claim_uid(0)].error is None
    refused = old.prepare([second])[claim_uid(1)].error
    assert refused is not None and "already prepared for claim default/claim-0" in refused
    assert old.unprepare([first]) == {claim_uid(0): None}
    assert not spec_path(tmp_path, 0).exists()
    assert new.prepare([second])[claim_uid(1)].error is None
    assert sorted(old.prepare([second])[claim_uid(1)].devices[0].cdi_device_ids) == [
        expected_id(1, "gpu-0")
    ]


def test_a_node_lock_that_cannot_be_taken_is_an_answer_not_a_crash(tmp_path: Path) -> None:
    claims = FakeClaimSource()
    (tmp_path / "not-a-directory").write_text("")
    broken = NodeFileLock(tmp_path / "not-a-directory" / "serialize.lock")
    driver = make_driver(tmp_path, claims, node_lock=broken)
    with pytest.raises(OSError):
        driver.start()  # start-up fails loudly: the plugin exits and says why
    claims.put(claim(0, ["gpu-0"]))
    ref = ClaimRef(namespace="default", name="claim-0", uid=claim_uid(0))
    error = driver.prepare([ref])[claim_uid(0)].error
    assert error is not None and "not-a-directory" in error and "retries" in error
    answer = driver.unprepare([ref])[claim_uid(0)]
    assert answer is not None and "not-a-directory" in answer
