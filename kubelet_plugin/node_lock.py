"""NodeFileLock: one lock shared by the plugin instances of a node, through ``flock(2)``.

During a rolling update with max surge, the new plugin pod starts while the
old one still serves (spec/kubelet-plugin.md §1). Both instances use the same
checkpoint, CDI directory and GPUs, so:

- prepares and unprepares are serialised across the two processes by
  holding ``<plugin dir>/serialize.lock`` for the whole call
  (:meth:`NodeFileLock.held`);
- only one instance publishes the node's slices: the one holding
  ``<plugin dir>/publisher.lock``, taken by the new instance once the old one
  has let go (:meth:`NodeFileLock.acquire_when_free`). Two publishers would
  bump each other's pool generation forever.

``flock`` locks belong to the open file, so the kernel releases them when the
process ends, however it ends: a crashed instance never leaves the other one
waiting. The lock file itself is never removed (removing it would let two
processes lock two different files of the same name).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = ["NodeFileLock"]

log = logging.getLogger(__name__)

#: How often :meth:`NodeFileLock.acquire_when_free` tries again.
POLL_S: Final = 0.5


class NodeFileLock:
    """An exclusive lock on ``path``, shared by processes (flock) and threads (a mutex).

    ``flock`` does not exclude threads that share the open file, so a mutex
    serialises the threads of this process first. The directory is created
    if missing; the file is opened at the first use and kept open.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._held = False

    @property
    def is_held(self) -> bool:
        """Whether this process holds the lock now."""
        return self._held

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock inside the block, waiting as long as another holder keeps it."""
        with self._mutex:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held = True
            try:
                yield
            finally:
                self._held = False
                fcntl.flock(fd, fcntl.LOCK_UN)

    def acquire_when_free(self, stop: threading.Event, *, what: str) -> bool:
        """Take the lock and keep it until :meth:`release` or the end of the process.

        Tries every :data:`POLL_S` seconds, logging once that another instance
        holds it (``what`` says what for); returns False if ``stop`` is set first.
        """
        self._mutex.acquire()
        fd = self._open()
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    log.info(
                        "another plugin instance on this node holds %s (%s); waiting for it "
                        "to stop",
                        self.path,
                        what,
                    )
                    waited = True
                if stop.wait(POLL_S):
                    self._mutex.release()
                    return False
                continue
            self._held = True
            if waited:
                log.info("took over %s from the plugin instance that stopped", what)
            return True

    def release(self) -> None:
        """Let go of a lock taken by :meth:`acquire_when_free`; a no-op when not held."""
        if not self._held or self._fd is None:
            return
        self._held = False
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._mutex.release()

    def close(self) -> None:
        """Release (if held) and close the file."""
        self.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
