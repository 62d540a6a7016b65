"""What this replica remembers of pods between reconciles: allocations written and waiting
for their confirm (the settle delay), and pods released to the scheduler until bound.

Only memory: a new leader rebuilds what it needs from the cluster (see the package docstring).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from controller.scheduling import PodInfo

__all__ = ["Placed", "Records", "Written"]


@dataclass
class Placed:
    """A pod whose gate this controller removed, until it is bound."""

    uid: str
    node: str | None
    attempts: int
    released_at: float
    excluded: set[str] = field(default_factory=set)
    abandoned: bool = False


@dataclass
class Written:
    """A gated pod whose allocations are written and wait for the confirm."""

    uid: str
    #: When its last allocation was written, or when this replica first saw them all
    #: written (a new leader does not know when its predecessor wrote them).
    since: float
    #: Times it gave up its devices to another claim in this round.
    yields: int = 0


class Records:
    """Per pod key: :class:`Written` and :class:`Placed`. Thread-safe (workers share it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._placed: dict[str, Placed] = {}
        self._written: dict[str, Written] = {}

    def forget(self, key: str) -> None:
        """The pod is gone, finished or being deleted."""
        with self._lock:
            self._placed.pop(key, None)
            self._written.pop(key, None)

    # -- gated pods ------------------------------------------------------------------------

    def ungated_by_us(self, pod: PodInfo) -> bool:
        """Whether we removed this pod's gate already (the watch has not shown it yet)."""
        with self._lock:
            record = self._placed.get(pod.key)
            return record is not None and record.uid == pod.uid

    def settling(self, pod: PodInfo, settle_s: float, now: float) -> float:
        """Seconds left of the settle delay of allocations this replica wrote (0: none)."""
        with self._lock:
            written = self._written.get(pod.key)
            if written is None or written.uid != pod.uid:
                return 0.0
            return max(settle_s - (now - written.since), 0.0)

    def settle(self, pod: PodInfo, wrote: bool, settle_s: float, now: float) -> float:
        """Seconds the pod's allocations must still settle before the confirm (0: now).

        The clock restarts whenever this reconcile wrote an allocation, and when
        the written allocations are seen for the first time (a new leader, or a
        restart, does not know when they were written: it waits a whole delay).
        """
        with self._lock:
            written = self._written.get(pod.key)
            if written is None or written.uid != pod.uid:
                written = Written(pod.uid, now)
                self._written[pod.key] = written
            elif wrote:
                written.since = now
            return max(settle_s - (now - written.since), 0.0)

    def gave_way(self, pod: PodInfo, now: float) -> Written:
        """Count one more time the pod gave its devices up in this round."""
        with self._lock:
            written = self._written.setdefault(pod.key, Written(pod.uid, now))
            written.yields += 1
            return written

    def start_over(self, written: Written) -> None:
        """The pod backs off: its next round of yields counts from zero."""
        with self._lock:
            written.yields = 0

    def released(self, pod: PodInfo, node: str | None, now: float) -> None:
        """We removed the pod's gate, for ``node``."""
        with self._lock:
            self._written.pop(pod.key, None)
            self._placed[pod.key] = Placed(pod.uid, node, 1, now)

    # -- ungated pods ----------------------------------------------------------------------

    def placed(self, pod: PodInfo) -> Placed | None:
        """The pod's record if we released this very pod (not an earlier one of its name)."""
        with self._lock:
            self._written.pop(pod.key, None)
            record = self._placed.get(pod.key)
            if record is not None and record.uid != pod.uid:
                del self._placed[pod.key]
                record = None
            return record

    def bound(self, key: str) -> None:
        """The pod is bound: nothing more to watch for."""
        with self._lock:
            self._placed.pop(key, None)

    def placed_nodes(self) -> dict[str, str | None]:
        """Pods released to the scheduler and not bound yet -> the node chosen."""
        with self._lock:
            return {key: record.node for key, record in self._placed.items()}
