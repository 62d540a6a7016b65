"""A read-only and a full CDI root, with real mounts: a prepare fails for its claim alone.

The CDI root is a bind mount remounted read-only, or a 16 KiB tmpfs filled up
by someone else. A prepare that cannot write its spec answers an error naming
the claim and the cause, leaves no half-written file and holds no GPU; the
plugin keeps answering what needs no write, and serves everything again once
the root is writable or has room.

These tests need root and mount(8) (the test machines run as root): without
them they fail, saying so, rather than skip.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from driver_fixtures import (
    cdi_root,
    checkpoint_path,
    checkpoint_states,
    claim,
    claim_uid,
    files_in,
    make_driver,
    spec_path,
    validate_cdi_file,
)

from kubelet_plugin.checkpoint_store import CheckpointStore
from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


def mount(*args: str) -> None:
    """Run mount(8); fail the test (never skip it) when it cannot."""
    if os.geteuid() != 0:
        pytest.fail(f"this test mounts file systems and must run as root (euid {os.geteuid()})")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        pytest.fail(f"mount {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")


def unmount(path: Path) -> None:
    done = subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=False)
    if done.returncode != 0:  # busy: detach it now, the kernel drops it when unused
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=True)


class CdiMount:
    """The CDI root of a test, mounted as a test needs it; unmounted at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted = 0

    def read_only(self) -> None:
        if not self.mounted:
            mount("--bind", str(self.root), str(self.root))
            self.mounted += 1
        mount("-o", "remount,bind,ro", str(self.root))

    def writable(self) -> None:
        mount("-o", "remount,bind,rw", str(self.root))

    def tiny_tmpfs(self) -> None:
        mount("-t", "tmpfs", "-o", "size=16k,mode=0755", "tmpfs", str(self.root))
        self.mounted += 1

    def fill(self) -> Path:
        """Fill the root with a file of someone else's until no byte fits; returns it."""
        filler = self.root / "filler.bin"
        with filler.open("wb", buffering=0) as handle:
            try:
                while True:
                    handle.write(b"\0" * 1024)
            except OSError as err:
                assert err.errno == errno.ENOSPC, err
        return filler


@pytest.fixture
def cdi_mount(tmp_path: Path) -> Iterator[CdiMount]:
    root = cdi_root(tmp_path)
    root.mkdir(parents=True, exist_ok=True)
    mounted = CdiMount(root)
    try:
        yield mounted
    finally:
        for _ in range(mounted.mounted):
            unmount(root)


def started(root: Path, claims: FakeClaimSource) -> GpuDriver:
    driver = make_driver(root, claims)
    driver.start()
    return driver


def test_a_read_only_cdi_root_fails_the_prepare_and_holds_no_gpu(
    tmp_path: Path, cdi_mount: CdiMount
) -> None:
    # Claims 2 and 4 are both allocated gpu-2: one may hold it at a time.
    claims = FakeClaimSource([claim(1), claim(2), claim(4, ["gpu-2"])])
    driver = started(tmp_path, claims)
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    cdi_mount.read_only()

    error = driver.prepare([ref(2)])[claim_uid(2)].error or ""

    assert "claim default/claim-2" in error and "Read-only file system" in error, error
    assert "the kubelet retries" in error
    assert files_in(cdi_root(tmp_path)) == [spec_path(tmp_path, 1).name]
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}
    # What needs no write is still served: claim 1 is prepared already.
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    unprepare_error = driver.unprepare([ref(1)])[claim_uid(1)] or ""
    assert "Read-only file system" in unprepare_error and "the kubelet retries" in unprepare_error

    cdi_mount.writable()
    assert driver.prepare([ref(4)])[claim_uid(4)].error is None, "gpu-2 was not held"
    validate_cdi_file(spec_path(tmp_path, 4))
    assert driver.unprepare([ref(1)]) == {claim_uid(1): None}
    assert files_in(cdi_root(tmp_path)) == [spec_path(tmp_path, 4).name]
    assert checkpoint_states(tmp_path) == {claim_uid(4): "PrepareCompleted"}
    driver.close()


def test_an_interrupted_prepare_on_a_read_only_root_is_cleaned_up_once_writable(
    tmp_path: Path, cdi_mount: CdiMount
) -> None:
    claims = FakeClaimSource([claim(1), claim(5, ["gpu-1"])])
    started(tmp_path, claims).prepare([ref(1)])
    # A crash between the spec and the completed entry, then the root turns read-only.
    store = CheckpointStore(checkpoint_path(tmp_path))
    checkpoint = store.load()
    entry = checkpoint.claims[claim_uid(1)].model_copy(update={"state": "PrepareStarted"})
    store.save(checkpoint.model_copy(update={"claims": {claim_uid(1): entry}}))
    cdi_mount.read_only()

    driver = make_driver(tmp_path, claims)
    report = driver.start()  # never a crash loop

    assert report.cleanup_pending == [claim_uid(1)]
    assert "Read-only file system" in driver.cleanup_pending()[claim_uid(1)]
    assert spec_path(tmp_path, 1).exists()

    cdi_mount.writable()
    # The next call retries the cleanup first; gpu-1 was never held by the attempt.
    assert driver.prepare([ref(5)])[claim_uid(5)].error is None
    assert driver.cleanup_pending() == {}
    assert files_in(cdi_root(tmp_path)) == [spec_path(tmp_path, 5).name]
    assert checkpoint_states(tmp_path) == {claim_uid(5): "PrepareCompleted"}
    driver.close()


def test_a_full_cdi_root_fails_the_prepare_and_holds_no_gpu(
    tmp_path: Path, cdi_mount: CdiMount
) -> None:
    cdi_mount.tiny_tmpfs()
    claims = FakeClaimSource([claim(1), claim(2), claim(4, ["gpu-2"])])
    driver = started(tmp_path, claims)
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    filler = cdi_mount.fill()

    error = driver.prepare([ref(2)])[claim_uid(2)].error or ""

    assert "claim default/claim-2" in error and "No space left on device" in error, error
    assert "the kubelet retries" in error
    # No half-written spec, no temp file: only what was there.
    assert files_in(cdi_root(tmp_path)) == sorted([filler.name, spec_path(tmp_path, 1).name])
    validate_cdi_file(spec_path(tmp_path, 1))
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None

    filler.unlink()  # room again
    assert driver.prepare([ref(4)])[claim_uid(4)].error is None, "gpu-2 was not held"
    validate_cdi_file(spec_path(tmp_path, 4))
    assert driver.unprepare([ref(1), ref(4)]) == {claim_uid(1): None, claim_uid(4): None}
    assert files_in(cdi_root(tmp_path)) == []
    assert checkpoint_states(tmp_path) == {}
    driver.close()
