"""The placement reconciler: what one pod needs now, step by step, each step done by its
own module (deciding, writing, releasing, reporting). The contract is the package docstring.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from agent_kit.events import EventRecorder
from agent_kit.kube import ClusterClient
from api.resource_v1 import ResourceClaim, object_key
from controller.cache import ClusterCache
from controller.metrics import ControllerMetrics
from controller.placement.conflicts import yields
from controller.placement.deciding import (
    Decision,
    ReleaseFirst,
    Unplaceable,
    Unusable,
    choose_policy,
    decide,
    explain_claims,
    pod_claims,
)
from controller.placement.grouping import GroupPlacer
from controller.placement.guard import CONFLICT_ATTEMPTS, AlwaysLeader, Fence, NotLeaderError
from controller.placement.marks import Marks, is_allocated, reserved_by_others
from controller.placement.records import Placed, Records
from controller.placement.releasing import Releaser
from controller.placement.reporting import Reporter
from controller.placement.writing import WriteOutcome, Writer
from controller.scheduling import PodInfo
from dra_driver.allocator.explanation import FILTER_TIMEOUT

__all__ = ["DONE", "Placer", "Result"]

log = logging.getLogger(__name__)

#: Messages of the scheduler that mean "failing on claims".
_CLAIM_FAILURE_WORDS: Final = ("claim",)


@dataclass(frozen=True, slots=True)
class Result:
    """What the worker does with the key next: nothing, later, or after its backoff."""

    requeue_after: float | None = None
    backoff: bool = False


DONE: Final = Result()


class Placer:
    """The placement reconciler (see the package docstring). Several workers may share one."""

    def __init__(
        self,
        client: ClusterClient,
        cache: ClusterCache,
        events: EventRecorder,
        metrics: ControllerMetrics,
        *,
        driver_name: str,
        policy: str = "binpack",
        max_retries: int = 3,
        grace_s: float = 30.0,
        settle_s: float = 0.0,
        fence: Fence | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        timeout_s: float | None = FILTER_TIMEOUT,
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.marks = Marks.of(driver_name)
        self.gate = self.marks.gate
        self.policy = policy
        self.max_retries = max_retries
        self.grace_s = grace_s
        self.settle_s = settle_s
        self.fence = fence or AlwaysLeader()
        self.timeout_s = timeout_s
        self._clock = clock
        self._wall = wall
        self.records = Records()
        self.releaser = Releaser(client, cache, metrics, self.fence, self.marks)
        self.writer = Writer(
            client,
            cache,
            metrics=metrics,
            fence=self.fence,
            releaser=self.releaser,
            marks=self.marks,
        )
        self.reporter = Reporter(events, metrics, self.marks)
        self.groups = GroupPlacer(
            cache,
            self.writer,
            self.releaser,
            self.reporter,
            self.marks,
            timeout_s=timeout_s,
            wall=wall,
        )

    def reconcile(self, key: str) -> Result:
        """Do what pod ``key`` needs now (see the package docstring)."""
        pod = self.cache.pod(key)
        if pod is None or pod.terminal or pod.deleting:
            self.records.forget(key)
            self.cache.unnominate(key)
            return DONE
        if not self.fence.can_write():
            # A standby does nothing; the new leader re-examines every pod.
            return DONE
        try:
            if pod.has_gate(self.gate):
                return self._place(pod)
            record = self.records.placed(pod)
            self.reporter.after_gate(pod, self.cache.pod_conflicts(pod))
            if record is not None:
                if pod.bound:
                    self.records.bound(key)
                    return DONE
                return self._check_placed(pod, record)
            if pod.bound:
                return DONE
            if pod.claims and pod.unschedulable:
                return self._explain_pending(pod)
            return DONE
        except NotLeaderError:
            self.metrics.failures.labels("not-leader").inc()
            return DONE

    def placed_pods(self) -> dict[str, str | None]:
        """Pods released to the scheduler and not bound yet -> the node chosen."""
        return self.records.placed_nodes()

    # -- a gated pod, top to bottom ----------------------------------------------------------

    def _place(self, pod: PodInfo) -> Result:
        """Decide and write (steps 1-3), settle and confirm (4), remove the gate (5)."""
        if self.records.ungated_by_us(pod):
            return DONE  # the watch has not delivered our gate removal yet
        early = self.records.settling(pod, self.settle_s, self._clock())
        if early > 0:
            # Brought back before its time by the watch delivering our own writes:
            # whatever changed meanwhile, the confirm looks at it when the time comes.
            return Result(requeue_after=early)
        waiting = self.groups.place(pod, self.policy)
        if waiting is not None:
            # Its PodGroup decides for all its pods together (placement/grouping.py).
            return Result(backoff=True) if waiting.backoff else DONE
        for _ in range(CONFLICT_ATTEMPTS):
            decision = self._decide_and_write(pod, None)
            if isinstance(decision, Result):
                return decision
            ours = decision.placed_by_us(self.marks)
            if not ours:
                break  # nothing of ours to confirm: every claim was allocated by others
            # Count the pod's cpu/memory on the node from the write on, so a placement
            # during the settle delay does not count on them too.
            self.cache.nominate(pod, decision.node or "")
            wait = self.records.settle(pod, bool(decision.claims), self.settle_s, self._clock())
            if wait > 0:
                return Result(requeue_after=wait)
            verdict = self._confirm(pod, ours)
            if verdict is None:
                break
            if isinstance(verdict, Result):
                return verdict
        else:
            return Result(backoff=True)
        return self._ungate(pod, decision, ours)

    def _decide_and_write(self, pod: PodInfo, record: Placed | None) -> Decision | Result:
        """Decide, then write; on a conflict decide again (up to CONFLICT_ATTEMPTS times)."""
        names, waiting = pod.claim_names()
        if waiting:
            # The claim controller has not created the template claims yet; the
            # pod's status update will bring it back.
            return DONE
        for _ in range(CONFLICT_ATTEMPTS):
            outcome = self._decide(pod, names, record)
            if isinstance(outcome, Result):
                return outcome
            if isinstance(outcome, ReleaseFirst):
                # Our own earlier allocations for this pod cannot be completed: release them.
                self.releaser.rollback(outcome.claims, gated=pod.has_gate(self.marks.gate))
                continue
            written = self.writer.write(outcome, names)
            if written is WriteOutcome.CONFLICT:
                continue
            if written is WriteOutcome.FAILED:
                return Result(backoff=True)
            return outcome
        return Result(backoff=True)

    def _decide(
        self, pod: PodInfo, names: Sequence[str], record: Placed | None
    ) -> Decision | ReleaseFirst | Result:
        """One decision, taken and assumed under the cache's lock (so the next decision
        does not hand out the same devices); when no node fits, the pod waits for capacity."""
        with self.cache.placement_view(pod, names) as view:
            claims = pod_claims(view)
            if claims is None:
                return DONE  # a claim's creation (or replacement) will bring the pod back
            policy = choose_policy(pod, claims.pending, self.policy, self.marks)
            if policy.refused is not None:
                self.reporter.invalid_policy(pod, policy.refused)
            outcome = decide(
                view,
                pod,
                claims,
                policy.name,
                marks=self.marks,
                excluded=record.excluded if record else (),
                timeout_s=self.timeout_s,
                wall=self._wall,
            )
            if isinstance(outcome, Decision) and outcome.claims:
                self.cache.assume_placement(pod.key, outcome.claims)
            elif isinstance(outcome, Unplaceable | Unusable):
                self.cache.waiting.add(pod.key)
        if isinstance(outcome, Unplaceable):
            self.reporter.unplaceable(pod, outcome)
            return Result(backoff=True)
        if isinstance(outcome, Unusable):
            self.reporter.unusable(pod, outcome)
            return Result(backoff=True)
        return outcome

    def _confirm(self, pod: PodInfo, ours: Sequence[ResourceClaim]) -> Result | bool | None:
        """Look for another claim holding one of our devices now (step 4).

        None: clean (or only conflicts the other claim yields in), remove the gate.
        True: ours were released, decide again now. A Result: stop with it.
        """
        found = self.cache.conflicts(ours)
        if not found:
            return None
        yielding = [held.conflict for held in found if yields(held, self.marks)]
        self.reporter.confirm_found(found, "yielded" if yielding else "kept")
        if not yielding:
            # Both claims are ours, for two pods still gated: the other one yields
            # (see conflicts.yields), so the pods never wait for each other.
            log.info(
                "devices allocated twice; the other claim yields",
                extra={"pod": pod.key, "devices": ", ".join(h.conflict.device for h in found)},
            )
            return None
        self.metrics.conflicts.labels("devices").inc()
        if any(reserved_by_others(claim, self.marks) for claim in ours):
            # Another pod reserved a claim of ours although our pod is gated (nothing we
            # know of does that): it is not ours to release any more; try again later.
            log.warning("a claim to give way is reserved; not releasing", extra={"pod": pod.key})
            return Result(backoff=True)
        written = self.records.gave_way(pod, self._clock())
        times = written.yields
        log.warning("devices allocated twice; releasing ours", extra={"pod": pod.key})
        self.cache.unnominate(pod.key)
        self.releaser.rollback(ours)
        again = times <= self.max_retries
        self.reporter.gave_way(pod, ours, yielding, times, again)
        if again:
            return True
        self.records.start_over(written)
        return Result(backoff=True)

    def _ungate(self, pod: PodInfo, decision: Decision, ours: Sequence[ResourceClaim]) -> Result:
        """Remove the gate (step 5); the scheduler binds the pod where its claims are."""
        ungated = self.writer.ungate(pod)
        if ungated is None:
            # The pod is gone: nobody will use what we allocated for it.
            self.releaser.rollback([c for c in ours if is_allocated(c)])
            return DONE
        if not ungated:
            return Result(backoff=True)
        now = self._clock()
        self.records.released(pod, decision.node, now)
        since = self.cache.gated_since.get(pod.key, now)
        self.reporter.placed(pod, decision, max(now - since, 0.0))
        return DONE

    # -- ungated pods ------------------------------------------------------------------------

    def _check_placed(self, pod: PodInfo, record: Placed) -> Result:
        """A placed pod the scheduler cannot bind: release its unreserved claims and place
        it again away from that node, at most ``max_retries`` times."""
        if not pod.unschedulable:
            return DONE
        if record.attempts > 1:
            waited = self._clock() - record.released_at
            if waited < self.grace_s:
                return Result(requeue_after=self.grace_s - waited)
        message = pod.scheduled.message if pod.scheduled is not None else ""
        if record.attempts > self.max_retries:
            if not record.abandoned:
                record.abandoned = True
                self.reporter.abandoned(pod, record.attempts, message)
            return DONE
        names, _ = pod.claim_names()
        reserved = self._reserved_for(pod, names)
        if reserved:
            # Reserved for the pod with our allocation, which the scheduler then binds
            # without a claim write of its own: releasing the allocation now could race
            # that binding. Take the reservation out first (the allocation stays); a
            # binding that raced it leaves a bound pod whose allocated claims the claim
            # controller reserves again, and the next look, a settle delay later, finds
            # the pod bound, or unbound with claims to release as any others.
            done = [self.releaser.unreserve(claim, pod.uid) for claim in reserved]
            return Result(requeue_after=self.settle_s) if all(done) else Result(backoff=True)
        released = self.releaser.release_pod(pod, names)
        if record.node:
            record.excluded.add(record.node)
        record.attempts += 1
        self.cache.unnominate(pod.key)
        self.reporter.retry(
            pod,
            node=record.node,
            message=message,
            released=released,
            attempt=record.attempts,
            attempts=self.max_retries + 1,
        )
        outcome = self._decide_and_write(pod, record)
        if isinstance(outcome, Result):
            return outcome
        record.node = outcome.node
        record.released_at = self._clock()
        self.cache.nominate(pod, outcome.node or "")
        return Result(requeue_after=self.grace_s)

    def _reserved_for(self, pod: PodInfo, names: Sequence[str]) -> list[ResourceClaim]:
        """The pod's claims ``names`` (as the cache holds them) reserved for the pod itself."""
        found = []
        for name in names:
            claim = self.cache.claim(object_key(pod.namespace, name))
            reserved = claim.status.reserved_for if claim and claim.status else None
            if claim is not None and any(ref.uid == pod.uid for ref in reserved or []):
                found.append(claim)
        return found

    def _explain_pending(self, pod: PodInfo) -> Result:
        """A pending pod without the gate that the scheduler reports failing on claims."""
        message = pod.scheduled.message if pod.scheduled is not None else ""
        if not any(word in message.lower() for word in _CLAIM_FAILURE_WORDS):
            return DONE
        names, waiting = pod.claim_names()
        if waiting:
            return DONE
        with self.cache.placement_view(pod, names) as view:
            pending = [c for c in view.claims if c is not None and not is_allocated(c)]
            if not pending:
                return DONE
            reasons = explain_claims(view, pod, pending, self.timeout_s)
        self.reporter.unallocatable(pod, message, pending, reasons)
        return DONE
