"""The order of prepares and unprepares of one claim across kubelet calls.

The kubelet gives a NodePrepareResources call 45 s; a batch that runs longer
is answered with an error and the kubelet may then unprepare its claims. The
batch itself cannot be stopped half-way through a claim, so it goes on; what
must not happen is that it prepares a claim *after* the kubelet was told that
claim was unprepared (a spec, a checkpoint entry and a GPU nobody releases).

:class:`UnprepareLedger` gives each prepare batch a ticket when it arrives and
remembers, per claim UID, when its last unprepare succeeded, for as long as an
older batch is still running. A batch skips a claim that was unprepared after
its ticket. A later call for the same UID has a later ticket, so a claim that
is legitimately prepared again (another pod of the same claim) is never
refused: the ledger only stops stale work.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Final

__all__ = ["MAX_REMEMBERED", "ClaimLocks", "UnprepareLedger"]

log = logging.getLogger(__name__)

#: Unprepares remembered at most while batches run (oldest forgotten first).
#: Far above what one node sees in a kubelet deadline; it bounds memory if a
#: batch never finishes.
MAX_REMEMBERED: Final = 65_536


class UnprepareLedger:
    """Batch tickets and the unprepares that happened after them; thread-safe.

    Memory: an unprepare is remembered only while a batch older than it is in
    flight, and forgotten when the last such batch ends; never more than
    ``limit`` at once.
    """

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._lock = threading.Lock()
        self._sequence = 0
        self._limit = limit
        # Tickets of the batches in flight; each ticket is given to one batch only.
        self._batches: set[int] = set()
        self._unprepared: dict[str, int] = {}

    @contextlib.contextmanager
    def batch(self) -> Iterator[int]:
        """A ticket for one prepare call, held until the call returns."""
        with self._lock:
            self._sequence += 1
            ticket = self._sequence
            self._batches.add(ticket)
        try:
            yield ticket
        finally:
            with self._lock:
                self._batches.discard(ticket)
                self._forget_older_than(min(self._batches, default=self._sequence + 1))

    def record_unprepare(self, uid: str) -> None:
        """Note that ``uid`` was unprepared now. Call holding the claim's lock, before answering."""
        with self._lock:
            if not self._batches:
                return  # no batch could race with it
            self._sequence += 1
            self._unprepared.pop(uid, None)
            self._unprepared[uid] = self._sequence
            if len(self._unprepared) > self._limit:
                forgotten = next(iter(self._unprepared))
                del self._unprepared[forgotten]
                log.warning(
                    "more than %d claims unprepared while a prepare call still runs; "
                    "claim UID %s is no longer protected from that call",
                    self._limit,
                    forgotten,
                )

    def unprepared_since(self, uid: str, ticket: int) -> bool:
        """Whether ``uid`` was unprepared after the batch with ``ticket`` arrived."""
        with self._lock:
            return self._unprepared.get(uid, 0) > ticket

    def remembered(self) -> int:
        """How many unprepares are remembered now (tests check the bound)."""
        with self._lock:
            return len(self._unprepared)

    def _forget_older_than(self, oldest: int) -> None:
        """Forget unprepares no running batch predates. Caller holds the lock."""
        stale = [uid for uid, sequence in self._unprepared.items() if sequence <= oldest]
        for uid in stale:
            del self._unprepared[uid]


class ClaimLocks:
    """One lock per claim UID, kept only while someone holds or waits for it; thread-safe.

    Calls for the same claim run one after another; calls for different claims never wait
    for each other.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, uid: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(uid, (threading.Lock(), 0))
            self._locks[uid] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[uid]
                if users == 1:
                    del self._locks[uid]
                else:
                    self._locks[uid] = (lock, users - 1)
