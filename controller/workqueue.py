"""The work queue between the watches and the placement worker.

Keys are pod keys (``namespace/name``). The queue:

- deduplicates: a key is queued at most once; a key added while it is being
  processed is queued again when :meth:`WorkQueue.done` is called, so no
  change is lost and no key is processed by two workers at once;
- delays: :meth:`WorkQueue.add_after` makes a key ready later (one pending
  delay per key, the earliest wins);
- backs off per key: :meth:`WorkQueue.add_rate_limited` delays by ``base``
  doubling per consecutive failure up to ``cap``; :meth:`WorkQueue.forget`
  resets it after a success;
- is bounded: at most ``maxsize`` keys are held (ready and delayed together).
  An add beyond that never blocks (the watches that add keys must not wait
  on the worker) and is not lost either: the queue remembers that it
  overflowed and, once it has drained to half, asks ``resync`` for every key
  that may need work and queues those.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["WorkQueue"]

#: Failures after which a key's backoff stops doubling (the cap is reached long before).
_MAX_DOUBLINGS: Final = 64


class WorkQueue:
    """See the module docstring. Thread-safe."""

    def __init__(
        self,
        *,
        maxsize: int = 10_000,
        base_s: float = 0.5,
        cap_s: float = 60.0,
        resync: Callable[[], Iterable[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maxsize = maxsize
        self.base_s = base_s
        self.cap_s = cap_s
        self.resync = resync
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: deque[str] = deque()
        self._queued: set[str] = set()
        self._delayed: list[tuple[float, int, str]] = []
        self._due: dict[str, float] = {}
        self._seq = itertools.count()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._shutdown = False
        self.overflowed = False
        #: Keys dropped for the bound so far (each was later covered by a resync).
        self.dropped = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._queued) + len(self._due)

    def _full(self) -> bool:
        return len(self._queued) + len(self._due) >= self.maxsize

    def add(self, key: str) -> None:
        with self._cond:
            self._add(key)

    def add_all(self, keys: Iterable[str]) -> None:
        with self._cond:
            for key in keys:
                self._add(key)

    def _add(self, key: str) -> None:
        if self._shutdown:
            return
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        if self._full():
            self.overflowed = True
            self.dropped += 1
            return
        self._due.pop(key, None)  # ready now beats a pending delay
        self._queued.add(key)
        self._ready.append(key)
        self._cond.notify()

    def add_after(self, key: str, delay_s: float) -> None:
        if delay_s <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown or key in self._queued:
                return
            due = self._clock() + delay_s
            current = self._due.get(key)
            if current is not None and current <= due:
                return
            if current is None and self._full():
                self.overflowed = True
                self.dropped += 1
                return
            self._due[key] = due
            heapq.heappush(self._delayed, (due, next(self._seq), key))
            self._cond.notify()

    def backoff(self, key: str) -> float:
        """The delay :meth:`add_rate_limited` would use next for ``key``."""
        with self._cond:
            return self._delay(key)

    def _delay(self, key: str) -> float:
        # The exponent stops growing long before the cap is reached: 2.0 ** 1024 is past
        # a float, and a key that fails that often must not end the worker.
        doublings = min(self._failures.get(key, 0), _MAX_DOUBLINGS)
        return float(min(self.base_s * 2.0**doublings, self.cap_s))

    def add_rate_limited(self, key: str) -> float:
        """Queue ``key`` after its backoff; return the delay used."""
        with self._cond:
            delay = self._delay(key)
            self._failures[key] = self._failures.get(key, 0) + 1
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def get(self, timeout_s: float | None = None) -> str | None:
        """The next ready key (mark it processing), or None after ``timeout_s`` or shutdown."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
        key = self._take(deadline)
        if key is not None and self._resync_due():
            # Outside the queue's lock: resync reads the cache, whose lock is
            # held by the watches while they add keys here.
            assert self.resync is not None
            self.add_all(list(self.resync()))
        return key

    def _take(self, deadline: float | None) -> str | None:
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                self._promote()
                if self._ready:
                    key = self._ready.popleft()
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                waits = []
                if self._delayed:
                    waits.append(self._delayed[0][0] - self._clock())
                if deadline is not None:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        return None
                    waits.append(remaining)
                self._cond.wait(max(min(waits), 0.0) if waits else None)

    def _promote(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._due.get(key) != due:
                continue  # superseded by an earlier delay or an immediate add
            del self._due[key]
            if key in self._processing:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)

    def _resync_due(self) -> bool:
        with self._cond:
            if not self.overflowed or self.resync is None:
                return False
            if len(self._queued) + len(self._due) > self.maxsize // 2:
                return False
            self.overflowed = False
            return True

    def done(self, key: str) -> None:
        """Processing of ``key`` ended; queue it again if it changed meanwhile."""
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._add(key)

    def shutdown(self) -> None:
        """Wake every :meth:`get` with None; later adds are ignored."""
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
