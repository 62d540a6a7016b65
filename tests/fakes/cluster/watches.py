"""The change history of :class:`~tests.fakes.cluster.FakeCluster`, and the watches on it.

:class:`ChangeLog` keeps a bounded history of changes (the watch cache). A watch replays
the changes after its version; a version older than the history answers 410 Gone, as does
one whose history is dropped while it waits (:meth:`ChangeLog.compact` drops it all). An
object that stops matching the watch's selectors arrives as a DELETED event, and one that
starts matching as ADDED, as the real watch cache does. :meth:`ChangeLog.close` ends every
watch and refuses new ones (a server shutting down) until :meth:`ChangeLog.reopen`.

The log shares the server's condition: writers notify it, watches wait on it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agent_kit.kube import GoneError, UnavailableError, WatchEvent, WatchEventType

__all__ = ["ChangeLog"]


@dataclass(frozen=True, slots=True)
class _Change:
    rv: int
    resource: str
    type: str
    obj: dict[str, Any]
    previous: dict[str, Any] | None


class ChangeLog:
    """The last ``history`` changes; every method is called with ``cond`` held, except
    :meth:`follow`, which takes it."""

    def __init__(self, cond: threading.Condition, *, history: int) -> None:
        self._cond = cond
        self._log: list[_Change] = []
        self._history = history
        #: Changes at or below this version are no longer replayed (410 Gone).
        self._compacted = 0
        self._closed = False

    def record(
        self,
        rv: int,
        resource: str,
        kind: str,
        obj: dict[str, Any],
        previous: dict[str, Any] | None,
    ) -> None:
        """Append the change of ``obj`` (``previous``: what it was) at version ``rv``."""
        self._log.append(_Change(rv, resource, kind, copy.deepcopy(obj), previous))
        if len(self._log) > self._history:
            dropped = self._log[: len(self._log) - self._history]
            del self._log[: len(dropped)]
            self._compacted = dropped[-1].rv
        self._cond.notify_all()

    def compact(self, version: int) -> None:
        """Forget the history up to ``version`` (the current one): watches from any
        earlier version get 410 Gone."""
        self._log.clear()
        self._compacted = version
        self._cond.notify_all()

    def close(self) -> None:
        self._closed = True
        self._cond.notify_all()

    def reopen(self) -> None:
        self._closed = False

    def start(self, resource: str, resource_version: str) -> int:
        """The version a new watch replays from; 410 Gone when the history no longer
        reaches back to it, UnavailableError while closed."""
        cursor = int(resource_version or 0)
        if cursor < self._compacted:
            raise GoneError(
                f"watch {resource}: too old resource version: {cursor} ({self._compacted})"
            )
        if self._closed:
            raise UnavailableError(f"watch {resource}: connection refused")
        return cursor

    def follow(
        self,
        resource: str,
        cursor: int,
        deadline: float,
        matches: Callable[[Mapping[str, Any] | None], bool],
    ) -> Iterator[WatchEvent]:
        """The events of ``resource`` after ``cursor`` as seen through the selectors in
        ``matches``, until ``deadline`` (monotonic) or :meth:`close`."""
        while True:
            with self._cond:
                pending = [c for c in self._log if c.rv > cursor and c.resource == resource]
                if not pending:
                    if cursor < self._compacted:
                        raise GoneError(f"watch {resource}: too old resource version")
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        return
                    self._cond.wait(remaining)
                    continue
            for change in pending:
                cursor = change.rv
                now, before = matches(change.obj), matches(change.previous)
                if change.type == "DELETED":
                    if before or now:
                        yield WatchEvent("DELETED", copy.deepcopy(change.obj), str(change.rv))
                elif now:
                    kind: WatchEventType = "MODIFIED" if before else "ADDED"
                    yield WatchEvent(kind, copy.deepcopy(change.obj), str(change.rv))
                elif before:
                    yield WatchEvent("DELETED", copy.deepcopy(change.obj), str(change.rv))
