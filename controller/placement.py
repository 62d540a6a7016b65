"""Placement: the claims of gated pods, allocated together on the best node, then the gate removed.

For each pod key the work queue hands out, :meth:`Placer.reconcile` does one
of these (every write goes through the leader fence first):

**A pod carrying the gate** (``<driver>/placement``) whose claims all exist
(template claims once ``status.resourceClaimStatuses`` names them):

1. decide, holding the cache's lock: the pod's pending claims (no
   ``status.allocation``) are allocated *together* on one node by the policy
   (``--policy``; the pod annotation ``<driver>/policy``, else a claim's,
   overrides it) among the nodes the pod can run on
   (:func:`~controller.scheduling.filter_nodes`: node selector, required
   affinity, taints, cpu/memory/pods), narrowed by the node selectors of the
   pod's claims that are already allocated (by anyone: they are respected,
   never moved). The decision is *assumed* in the cache at once, so the next
   decision does not hand out the same devices;
2. write each claim, in the pod's order: first the finalizer
   ``resource.kubernetes.io/delete-protection`` and the annotation
   ``<driver>/placed-for: <pod uid>`` (a normal update, as the scheduler adds
   that finalizer: it lets the claim controller deallocate the claim when its
   pods are done), then ``status.allocation`` (the status subresource), both
   guarded by the resourceVersion. All or nothing: when one write fails, the
   allocations already written for this pod are removed again;
3. on a conflict (409: someone changed a claim, e.g. the scheduler allocated
   it for another pod): re-read the claim, decide again (up to
   ``CONFLICT_ATTEMPTS`` times, then back off);
4. settle, then confirm. The scheduler, allocating for an ungated pod, may
   have decided on one of our devices from its informer's view just before
   that view showed our write; its write goes to another claim (no conflict)
   and may land *after* ours. So the gate stays on for ``settle_s``
   (``--settle-delay``): the key is requeued with that delay and the workers
   place other pods meanwhile (the pod's cpu/memory already count on the node:
   it is nominated from the write on). When the key comes back, the cache
   (kept current by the watches) is checked for another claim holding one of
   our devices, by the allocator's own in-use state
   (:func:`~dra_driver.allocator.conflicts.device_conflicts`: exclusive
   devices, consumed capacity of shared ones, counters of partitions;
   ``adminAccess`` never counts). Our claim
   yields to a claim a pod has reserved, to one someone else allocated, and
   to one of ours whose pod has no gate any more; between two claims of ours
   whose pods both wait (the assume-cache rules it out) the later key yields.
   Yielding releases our allocations (never a reserved claim), writes a
   ``PlacementConflict`` Event and decides again, which restarts the settle
   delay; after ``max_retries`` yields in a row the pod backs off. With
   ``settle_s`` 0 the confirm runs right after the writes.

   What marks the state "written, awaiting confirm" is in the cluster, not in
   memory: a gated pod whose claims are all allocated, ours carrying the
   ``placed-for`` annotation with the pod's UID. A new leader (or a restart)
   finding such a pod does not place it again; not knowing when the writes
   happened, it waits one whole delay from when it first sees them, then
   confirms. A pod with no claim of ours (all allocated by others) has nothing
   to confirm;
5. only when the confirm is clean, remove the gate (a merge patch guarded
   by the pod's resourceVersion; on a conflict the pod is re-read). The
   scheduler then binds the pod to the chosen node: it honours an existing
   allocation through ``allocation.nodeSelector``. Allocations carry
   ``allocationTimestamp``: the scheduler stamps one that lacks it, and the API
   server refuses that change of an allocation, so the pod would never bind.

When no node fits, the explainer's summary (which node came closest and what
each request lacked, plus why other nodes were filtered out) becomes a
Warning Event on the pod and on each claim (rate-limited, renewed when the
reason changes) and the pod waits: it is looked at again when capacity
changes (a slice, class or node change, a claim released, a pod gone) and
after a backoff.

**A placed pod the scheduler cannot bind** (ungated, unbound, PodScheduled
False/Unschedulable: some other resource changed): its claims that no pod has
reserved are released and placed again away from the failed node, at most
``max_retries`` times, with an Event each time (the first retry at once, later
ones after ``grace_s``). The pod has no gate any more, so the scheduler may
allocate the released claims itself meanwhile; whichever write lands first
wins, the other gets a conflict.

**A conflict found after the gate was removed** (a device of a claim of ours
that another claim holds too, looked at whenever an ungated pod with claims
comes by: ours, or the other claim's pod that the watch brings back when the
late write lands): nothing is undone, as the pod may be bound and its claim
reserved; the kubelet plugin refuses to prepare the second claim of the
device. Each such conflict is counted
(``dra_driver_device_conflicts_total{outcome="after-gate"}``) and reported
once as a Warning Event ``DeviceConflict`` on the pods and claims involved,
naming the device, for an admin to act on.

**A pending pod without the gate that the scheduler reports failing on
claims**: an Event with the explanation, on the pod and its pending claims.

Nothing else is touched: pods without the gate are the scheduler's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from agent_kit.kube import ApiError, ClusterClient, ConflictError, InvalidError, NotFoundError
from api import limits
from api.errors import (
    CelEvaluationError,
    DraDriverError,
    InvalidInputError,
    UnsatisfiableError,
)
from api.resource_v1 import (
    AllocationResult,
    ResourceClaim,
    ResourceClaimStatus,
    claim_key,
    dump,
)
from controller.cache import ClusterCache, decode
from controller.events import EventRecorder, EventType, ObjectRef
from controller.metrics import ControllerMetrics
from controller.scheduling import NodeFilter, PodInfo, filter_nodes, parse_pod
from controller.workqueue import WorkQueue
from dra_driver.allocator import POLICIES, allocate, explain
from dra_driver.allocator.conflicts import DeviceConflict, device_conflicts
from dra_driver.allocator.explanation import FILTER_TIMEOUT
from dra_driver.allocator.nodes import compile_node_selector

__all__ = [
    "CONFLICT_ATTEMPTS",
    "AlwaysLeader",
    "Fence",
    "NotLeaderError",
    "Placer",
    "Result",
    "run_worker",
]

log = logging.getLogger(__name__)

#: Decide-and-write rounds per reconcile when claims keep changing under us.
CONFLICT_ATTEMPTS: Final = 3
#: How the API server words a field the caller may not write (RBAC checked in validation).
_FORBIDDEN_FIELD: Final = "cannot update resource"
#: Conflicts found after the gate that are remembered as reported (oldest forgotten first).
_REPORTED_MAX: Final = 4096
#: Messages of the scheduler that mean "failing on claims".
_CLAIM_FAILURE_WORDS: Final = ("claim",)


class NotLeaderError(DraDriverError):
    """This replica may not write (not the leader, or its lease may have expired)."""

    retryable = True


class Fence(Protocol):
    """Says whether writes are allowed now (the leader elector)."""

    def can_write(self) -> bool: ...


class AlwaysLeader:
    """The fence of a single replica run without leader election."""

    def can_write(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Result:
    """What the worker does with the key next: nothing, later, or after its backoff."""

    requeue_after: float | None = None
    backoff: bool = False


DONE: Final = Result()


@dataclass
class _Placed:
    """A pod whose gate this controller removed, until it is bound."""

    uid: str
    node: str | None
    attempts: int
    released_at: float
    excluded: set[str] = field(default_factory=set)
    abandoned: bool = False


@dataclass
class _Written:
    """A gated pod whose allocations are written and wait for the confirm."""

    uid: str
    #: When its last allocation was written, or when this replica first saw them all
    #: written (a new leader does not know when its predecessor wrote them).
    since: float
    #: Times it gave up its devices to another claim in this round.
    yields: int = 0


@dataclass
class _Decision:
    pod: PodInfo
    node: str | None
    policy: str
    #: The pending claims with their new allocation (assumed in the cache).
    claims: list[ResourceClaim]
    #: Claims of the pod allocated before (by us or anyone).
    allocated: list[ResourceClaim]


class _ConflictError(Exception):
    def __init__(self, resource: str, what: str) -> None:
        super().__init__(what)
        self.resource = resource
        self.what = what


def _allocated(claim: ResourceClaim) -> bool:
    return claim.status is not None and claim.status.allocation is not None


def _reserved(claim: ResourceClaim) -> bool:
    return bool(claim.status is not None and claim.status.reserved_for)


def _with_allocation(
    claim: ResourceClaim, allocation: AllocationResult, now: datetime
) -> ResourceClaim:
    """``claim`` with ``allocation``, stamped with ``allocationTimestamp``.

    The stamp is not optional in practice: with binding conditions on (beta,
    default on since 1.35) the scheduler stamps an allocation that has none when
    it adds the pod to ``reservedFor``, and the API server then refuses that
    write because an allocation may not be modified once set. The pod would never
    be bound.
    """
    copy = claim.model_copy(deep=True)
    status = copy.status or ResourceClaimStatus()
    stamped = allocation.model_copy()
    stamped.allocation_timestamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status.allocation = stamped
    copy.status = status
    return copy


def _pod_ref(pod: PodInfo) -> ObjectRef:
    return ObjectRef("Pod", "v1", pod.namespace, pod.name, pod.uid)


def _claim_ref(claim: ResourceClaim) -> ObjectRef:
    meta = claim.metadata
    return ObjectRef(
        "ResourceClaim", limits.API_VERSION, meta.namespace or "", meta.name or "", meta.uid or ""
    )


class Placer:
    """The placement reconciler (see the module docstring). Several workers may share one."""

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
        self.client = client
        self.cache = cache
        self.events = events
        self.metrics = metrics
        self.driver_name = driver_name
        self.gate = f"{driver_name}/placement"
        self.policy_annotation = f"{driver_name}/policy"
        self.placed_for_annotation = f"{driver_name}/placed-for"
        self.policy = policy
        self.max_retries = max_retries
        self.grace_s = grace_s
        self.settle_s = settle_s
        self.fence = fence or AlwaysLeader()
        self._clock = clock
        self._wall = wall
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._placed: dict[str, _Placed] = {}
        self._written: dict[str, _Written] = {}
        #: Conflicts reported after the gate: (device, claim keys), oldest first.
        self._reported: OrderedDict[tuple[str, tuple[str, ...]], None] = OrderedDict()

    # -- entry point -----------------------------------------------------------------------

    def reconcile(self, key: str) -> Result:
        """Do what pod ``key`` needs now (see the module docstring)."""
        pod = self.cache.pod(key)
        if pod is None or pod.terminal or pod.deleting:
            with self._lock:
                self._placed.pop(key, None)
                self._written.pop(key, None)
            self.cache.unnominate(key)
            return DONE
        if not self.fence.can_write():
            # A standby does nothing; the new leader re-examines every pod.
            return DONE
        try:
            if pod.has_gate(self.gate):
                return self._place(pod)
            with self._lock:
                self._written.pop(key, None)
                record = self._placed.get(key)
                if record is not None and record.uid != pod.uid:
                    del self._placed[key]
                    record = None
            self._report_after_gate(pod)
            if record is not None:
                if pod.bound:
                    with self._lock:
                        self._placed.pop(key, None)
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
        with self._lock:
            return {key: record.node for key, record in self._placed.items()}

    # -- gated pods ------------------------------------------------------------------------

    def _place(self, pod: PodInfo) -> Result:
        with self._lock:
            record = self._placed.get(pod.key)
        if record is not None and record.uid == pod.uid:
            # We removed the gate already; the watch has not delivered that yet.
            return DONE
        early = self._settling(pod)
        if early > 0:
            # Brought back before its time by the watch delivering our own writes:
            # whatever changed meanwhile, the confirm looks at it when the time comes.
            return Result(requeue_after=early)
        for _ in range(CONFLICT_ATTEMPTS):
            outcome = self._decide_and_write(pod, None)
            if isinstance(outcome, Result):
                return outcome
            decision = outcome
            ours = self._ours(pod, decision)
            if not ours:
                break  # nothing of ours to confirm: every claim was allocated by others
            # Count the pod's cpu/memory on the node from the write on, so a placement
            # during the settle delay does not count on them too.
            self.cache.nominate(pod, decision.node or "")
            wait = self._settle(pod, bool(decision.claims))
            if wait > 0:
                return Result(requeue_after=wait)
            verdict = self._confirm(pod, ours)
            if verdict is None:
                break
            if isinstance(verdict, Result):
                return verdict
        else:
            return Result(backoff=True)
        ungated = self._ungate(pod)
        if ungated is None:
            # The pod is gone: nobody will use what we allocated for it.
            self._rollback([c for c in ours if _allocated(c)])
            return DONE
        if not ungated:
            return Result(backoff=True)
        now = self._clock()
        with self._lock:
            self._written.pop(pod.key, None)
            self._placed[pod.key] = _Placed(pod.uid, decision.node, 1, now)
        since = self.cache.gated_since.get(pod.key, now)
        self.metrics.placements.labels(decision.policy).inc()
        self.metrics.latency.observe(max(now - since, 0.0))
        where = f"node {decision.node}" if decision.node else "node-independent devices"
        names = ", ".join(claim_key(c) for c in [*decision.allocated, *decision.claims])
        self._event(
            _pod_ref(pod),
            "Normal",
            "Placed",
            f"claims {names} allocated on {where} (policy {decision.policy}); "
            f"scheduling gate {self.gate} removed",
        )
        log.info(
            "placed",
            extra={"pod": pod.key, "node": decision.node, "policy": decision.policy},
        )
        return DONE

    def _decide_and_write(self, pod: PodInfo, record: _Placed | None) -> _Decision | Result:
        names, waiting = pod.claim_names()
        if waiting:
            # The claim controller has not created the template claims yet; the
            # pod's status update will bring it back.
            return DONE
        for _ in range(CONFLICT_ATTEMPTS):
            outcome = self._decide(pod, names, record)
            if isinstance(outcome, Result):
                return outcome
            if isinstance(outcome, list):
                # Our own earlier allocations for this pod cannot be completed: release them.
                self._rollback(outcome)
                continue
            try:
                self._write(outcome)
            except _ConflictError as err:
                self.metrics.conflicts.labels(err.resource).inc()
                log.info("conflict; deciding again", extra={"pod": pod.key, "what": err.what})
                self._refresh(pod, names)
                continue
            except ApiError as err:
                self.metrics.failures.labels("api-error").inc()
                log.warning(
                    "writing an allocation failed", extra={"pod": pod.key, "error": str(err)}
                )
                return Result(backoff=True)
            return outcome
        return Result(backoff=True)

    # -- the confirm step ------------------------------------------------------------------

    def _ours(self, pod: PodInfo, decision: _Decision) -> list[ResourceClaim]:
        """The pod's claims this controller allocated for it (annotation ``placed-for``)."""
        return [
            claim
            for claim in [*decision.allocated, *decision.claims]
            if (claim.metadata.annotations or {}).get(self.placed_for_annotation) == pod.uid
            and _allocated(claim)
        ]

    def _settling(self, pod: PodInfo) -> float:
        """Seconds left of the settle delay of allocations this replica wrote (0: none)."""
        with self._lock:
            written = self._written.get(pod.key)
            if written is None or written.uid != pod.uid:
                return 0.0
            return max(self.settle_s - (self._clock() - written.since), 0.0)

    def _settle(self, pod: PodInfo, wrote: bool) -> float:
        """Seconds the pod's allocations must still settle before the confirm (0: now).

        The clock restarts whenever this reconcile wrote an allocation, and when
        the written allocations are seen for the first time (a new leader, or a
        restart, does not know when they were written: it waits a whole delay).
        """
        now = self._clock()
        with self._lock:
            written = self._written.get(pod.key)
            if written is None or written.uid != pod.uid:
                written = _Written(pod.uid, now)
                self._written[pod.key] = written
            elif wrote:
                written.since = now
            return max(self.settle_s - (now - written.since), 0.0)

    def _confirm(self, pod: PodInfo, ours: Sequence[ResourceClaim]) -> Result | bool | None:
        """Check the cache for another claim holding one of our devices now.

        None: clean (or only conflicts the other claim yields in), remove the gate.
        True: ours were released, decide again now. A Result: stop with it.
        """
        with self.cache.lock:
            snapshot = self.cache.snapshot()
            found = [c for claim in ours for c in device_conflicts(snapshot, claim)]
            yielding = [c for c in found if self._yields(c)]
        if not found:
            return None
        outcome = "yielded" if yielding else "kept"
        for conflict in found:
            self.metrics.device_conflicts.labels(conflict.kind, outcome).inc()
        if not yielding:
            # Both claims are ours, for two pods still gated: the other one yields
            # (see _yields), so the pods never wait for each other.
            log.info(
                "devices allocated twice; the other claim yields",
                extra={"pod": pod.key, "devices": ", ".join(c.device for c in found)},
            )
            return None
        self.metrics.conflicts.labels("devices").inc()
        if any(_reserved(claim) for claim in ours):
            # A pod reserved a claim of ours although the pod is gated (nothing we
            # know of does that): it is not ours to release any more; try again later.
            log.warning("a claim to give way is reserved; not releasing", extra={"pod": pod.key})
            return Result(backoff=True)
        with self._lock:
            written = self._written.setdefault(pod.key, _Written(pod.uid, self._clock()))
            written.yields += 1
            yields = written.yields
        what = "; ".join(
            f"device {c.device} of claim {c.claim} is held by claim {', '.join(c.others)} "
            f"({c.kind})"
            for c in yielding
        )
        log.warning("devices allocated twice; releasing ours", extra={"pod": pod.key})
        self.cache.unnominate(pod.key)
        self._rollback(ours)
        again = yields <= self.max_retries
        then = (
            "placing again" if again else f"gave way {yields} times; placing again after a backoff"
        )
        message = f"{what}: released this pod's allocations, {then}"
        self._event(_pod_ref(pod), "Normal", "PlacementConflict", message)
        for claim in ours:
            self._event(_claim_ref(claim), "Normal", "PlacementConflict", message)
        if again:
            return True
        with self._lock:
            written.yields = 0
        return Result(backoff=True)

    def _yields(self, conflict: DeviceConflict) -> bool:
        """Whether our claim gives way to the others in ``conflict`` (hold the cache lock).

        Ours yields to a claim a pod has reserved, to a claim someone else (the
        scheduler) allocated, and to a claim of ours whose pod is no longer gated
        (released to the scheduler). Between two claims of ours whose pods both
        wait for the confirm -- which the assume-cache rules out, but a
        deterministic answer costs nothing -- the claim whose key sorts later yields.
        """
        for key in conflict.others:
            other = self.cache.claim(key)
            if other is None or not _allocated(other):
                continue  # released or gone meanwhile
            if not self._awaits_confirm(key, other) or conflict.claim > key:
                return True
        return False

    def _awaits_confirm(self, key: str, claim: ResourceClaim) -> bool:
        """Whether claim ``key`` is ours, unreserved, for a pod that is still gated."""
        if _reserved(claim):
            return False
        owner = (claim.metadata.annotations or {}).get(self.placed_for_annotation)
        pods = [self.cache.pod(k) for k in self.cache.pods_of_claim(key)]
        return any(p is not None and p.uid == owner and p.has_gate(self.gate) for p in pods)

    def _report_after_gate(self, pod: PodInfo) -> None:
        """Report devices of an ungated pod's claims that another claim holds too,
        where one of the claims is this controller's.

        Nothing can be undone now: the pod may be bound, its claim reserved. The
        kubelet plugin refuses to prepare the second claim of a device, so one pod
        will not start; an admin must delete one of them. Looked at from either
        side: from our placed pod, and from the pod of the other claim, whose key
        the watch brings back when the late write lands (our pod may be bound by
        then). Each conflict (device and claims) is reported once, as a Warning
        Event on the pods and the claims involved. Left out: conflicts where a
        claim of ours waits for its confirm (it will yield then), and conflicts
        between claims none of which is ours (not ours to judge).
        """
        names, _ = pod.claim_names()
        fresh: list[tuple[DeviceConflict, list[str]]] = []
        with self.cache.lock:
            snapshot = self.cache.snapshot()
            for name in names:
                claim = self.cache.claim(f"{pod.namespace}/{name}")
                if claim is None or not _allocated(claim):
                    continue
                for conflict in device_conflicts(snapshot, claim):
                    identity = (conflict.device, tuple(sorted((conflict.claim, *conflict.others))))
                    if identity in self._reported or not self._after_gate(identity[1]):
                        continue
                    pods = sorted({p for k in identity[1] for p in self.cache.pods_of_claim(k)})
                    fresh.append((conflict, pods))
                    self._reported[identity] = None
                    while len(self._reported) > _REPORTED_MAX:
                        self._reported.popitem(last=False)
        for conflict, pods in fresh:
            self.metrics.device_conflicts.labels(conflict.kind, "after-gate").inc()
            message = (
                f"device {conflict.device} is allocated to claim {conflict.claim} and to "
                f"claim {', '.join(conflict.others)} ({conflict.kind}), found after the "
                f"scheduling gate was removed; the kubelet plugin prepares it for one of them "
                f"only: delete one of the pods ({', '.join(pods) or 'none yet'}) to place it "
                f"again"
            )
            log.warning(
                "devices allocated twice after the gate",
                extra={"pod": pod.key, "device": conflict.device},
            )
            refs = [ObjectRef("Pod", "v1", *key.split("/", 1)) for key in pods]
            refs += [
                ObjectRef("ResourceClaim", limits.API_VERSION, *key.split("/", 1))
                for key in (conflict.claim, *conflict.others)
            ]
            for ref in refs:
                self._event(ref, "Warning", "DeviceConflict", message)

    def _after_gate(self, keys: Sequence[str]) -> bool:
        """Whether a conflict among claims ``keys`` is ours to report (hold the cache lock):
        one of them is this controller's, and none of ours waits for its confirm."""
        ours = False
        for key in keys:
            claim = self.cache.claim(key)
            if claim is None or not _allocated(claim):
                return False  # released or gone meanwhile: no conflict any more
            if self.placed_for_annotation in (claim.metadata.annotations or {}):
                ours = True
                if self._awaits_confirm(key, claim):
                    return False
        return ours

    def _decide(
        self, pod: PodInfo, names: Sequence[str], record: _Placed | None
    ) -> _Decision | Result | list[ResourceClaim]:
        """A decision (assumed in the cache), a Result to stop with, or our own
        earlier allocations of this pod that must be released first."""
        with self.cache.lock:
            claims: list[ResourceClaim] = []
            for name in names:
                claim = self.cache.claim(f"{pod.namespace}/{name}")
                if claim is None or claim.metadata.deletion_timestamp:
                    return DONE  # its creation (or replacement) will bring the pod back
                claims.append(claim)
            pending = [c for c in claims if not _allocated(c)]
            allocated = [c for c in claims if _allocated(c)]
            policy = self._policy(pod, pending)
            if not pending:
                node = self._node_of(allocated)
                return _Decision(pod, node, policy, [], allocated)
            filtered: NodeFilter | None = None
            try:
                nodes = self._candidates(pod, allocated, record)
                if isinstance(nodes, NodeFilter):
                    filtered, candidates = nodes, nodes.nodes
                else:
                    candidates = nodes
                if not candidates:
                    raise UnsatisfiableError("no node can run the pod")
                decision = allocate(
                    self.cache.snapshot(),
                    pending,
                    policy=policy,
                    nodes=candidates,
                    timeout=self.timeout_s,
                )
            except UnsatisfiableError as err:
                ours = [
                    c
                    for c in allocated
                    if (c.metadata.annotations or {}).get(self.placed_for_annotation) == pod.uid
                    and not _reserved(c)
                ]
                if ours:
                    return ours
                self.cache.waiting.add(pod.key)
                self.metrics.failures.labels("unsatisfiable").inc()
                self._unplaceable(pod, pending, policy, filtered, err)
                return Result(backoff=True)
            except (InvalidInputError, CelEvaluationError) as err:
                self.cache.waiting.add(pod.key)
                self.metrics.failures.labels("invalid").inc()
                message = f"cannot place the pod's claims: {err}"
                self._event(_pod_ref(pod), "Warning", "PlacementFailed", message)
                for claim in pending:
                    self._event(_claim_ref(claim), "Warning", "PlacementFailed", message)
                return Result(backoff=True)
            placed = [
                _with_allocation(claim, result, self._wall())
                for claim, result in zip(pending, decision.results, strict=True)
            ]
            for claim in placed:
                self.cache.assume(claim)
            self.cache.waiting.discard(pod.key)
            return _Decision(pod, decision.node, policy, placed, allocated)

    def _candidates(
        self, pod: PodInfo, allocated: Sequence[ResourceClaim], record: _Placed | None
    ) -> NodeFilter | list[str]:
        """The nodes the pod may run on, narrowed by its allocated claims' node selectors."""
        nodes = self.cache.nodes()
        nominated = self.cache.nominated_node(pod.key)
        filtered = filter_nodes(
            pod,
            nodes,
            self.cache.node_usage(),
            excluded=record.excluded if record else (),
            # The pod's own nomination must not count against itself.
            own=(nominated, pod.requests) if nominated is not None else None,
        )
        names = filtered.nodes
        for claim in allocated:
            allocation = claim.status.allocation if claim.status is not None else None
            selector = allocation.node_selector if allocation is not None else None
            if selector is None:
                continue
            compiled = compile_node_selector(
                selector, obj=f"claim {claim_key(claim)}", path="status.allocation.nodeSelector"
            )
            names = [n for n in names if compiled.matches(nodes[n].info)]
        if names != filtered.nodes:
            return names
        return filtered

    def _policy(self, pod: PodInfo, claims: Sequence[ResourceClaim]) -> str:
        wanted = pod.annotations.get(self.policy_annotation)
        source = "pod"
        if wanted is None:
            for claim in claims:
                wanted = (claim.metadata.annotations or {}).get(self.policy_annotation)
                if wanted is not None:
                    source = f"claim {claim_key(claim)}"
                    break
        if wanted is None:
            return self.policy
        if wanted not in POLICIES:
            self._event(
                _pod_ref(pod),
                "Warning",
                "InvalidPolicy",
                f'{source} annotation {self.policy_annotation}: unknown policy "{wanted}"; '
                f"use one of {', '.join(POLICIES)}. Placing with {self.policy}",
            )
            return self.policy
        return wanted

    @staticmethod
    def _node_of(claims: Sequence[ResourceClaim]) -> str | None:
        for claim in claims:
            allocation = claim.status.allocation if claim.status is not None else None
            selector = allocation.node_selector if allocation is not None else None
            for term in selector.node_selector_terms if selector is not None else []:
                for requirement in term.match_fields or []:
                    if requirement.key == "metadata.name" and requirement.values:
                        return requirement.values[0]
        return None

    # -- writes ----------------------------------------------------------------------------

    def _check_fence(self) -> None:
        if not self.fence.can_write():
            raise NotLeaderError("this replica is not the leader")

    def _write(self, decision: _Decision) -> None:
        """Write every decided allocation, all or nothing (see the module docstring)."""
        written: list[ResourceClaim] = []
        try:
            for claim in decision.claims:
                stored = self._write_claim(claim, decision.pod)
                written.append(stored)
                self.cache.confirm(stored)
        except BaseException:
            for claim in decision.claims[len(written) :]:
                self.cache.forget(claim_key(claim))
            self._rollback(written)
            raise
        decision.claims = written

    def _write_claim(self, claim: ResourceClaim, pod: PodInfo) -> ResourceClaim:
        meta = claim.metadata
        namespace, name = meta.namespace or "", meta.name or ""
        what = f"claim {namespace}/{name}"
        finalizers = list(meta.finalizers or [])
        annotations = meta.annotations or {}
        version = meta.resource_version
        try:
            if (
                limits.DELETE_PROTECTION_FINALIZER not in finalizers
                or annotations.get(self.placed_for_annotation) != pod.uid
            ):
                if limits.DELETE_PROTECTION_FINALIZER not in finalizers:
                    finalizers.append(limits.DELETE_PROTECTION_FINALIZER)
                self._check_fence()
                patched = self.client.patch(
                    "resourceclaims",
                    name,
                    {
                        "metadata": {
                            "resourceVersion": version,
                            "finalizers": finalizers,
                            "annotations": {self.placed_for_annotation: pod.uid},
                        }
                    },
                    namespace=namespace,
                )
                version = (patched.get("metadata") or {}).get("resourceVersion")
                meta = decode(ResourceClaim, patched).metadata
            body = dump(claim)
            body["metadata"] = dump(meta)
            body["metadata"]["resourceVersion"] = version
            self._check_fence()
            stored = self.client.replace_status("resourceclaims", body)
        except (ConflictError, NotFoundError, InvalidError) as err:
            if isinstance(err, InvalidError) and _FORBIDDEN_FIELD in str(err):
                # The API server authorizes status.allocation in validation: a role
                # without resourceclaims/binding gets 422, not 403. Not a conflict.
                raise
            # Changed (or allocated: 422 "immutable"), or gone meanwhile.
            raise _ConflictError("resourceclaims", f"{what}: {err}") from None
        return decode(ResourceClaim, stored)

    def _rollback(self, claims: Sequence[ResourceClaim]) -> None:
        """Remove allocations this controller wrote; failures are logged (a later
        attempt, or the next leader, finds them through the placed-for annotation)."""
        for claim in reversed(claims):
            try:
                self._release(claim)
            except (ApiError, NotLeaderError) as err:
                log.warning(
                    "could not release an allocation",
                    extra={"claim": claim_key(claim), "error": str(err)},
                )

    def _release(self, claim: ResourceClaim) -> bool:
        """Clear ``status.allocation`` unless a pod has reserved the claim; True when cleared."""
        namespace, name = claim.metadata.namespace or "", claim.metadata.name or ""
        for _ in range(CONFLICT_ATTEMPTS):
            if not _allocated(claim) or _reserved(claim):
                return False
            body = dump(claim)
            body.get("status", {}).pop("allocation", None)
            self._check_fence()
            try:
                stored = decode(ResourceClaim, self.client.replace_status("resourceclaims", body))
            except NotFoundError:
                return False
            except ConflictError:
                self.metrics.conflicts.labels("resourceclaims").inc()
                raw = self.client.get("resourceclaims", name, namespace=namespace)
                self.cache.apply("resourceclaims", "MODIFIED", raw)
                claim = decode(ResourceClaim, raw)
                continue
            self.cache.confirm(stored)
            return True
        return False

    def _refresh(self, pod: PodInfo, names: Sequence[str]) -> None:
        """Re-read the pod's claims after a conflict, so the next decision sees them."""
        for name in names:
            try:
                raw = self.client.get("resourceclaims", name, namespace=pod.namespace)
            except NotFoundError:
                self.cache.apply(
                    "resourceclaims",
                    "DELETED",
                    {"metadata": {"name": name, "namespace": pod.namespace}},
                )
                continue
            self.cache.apply("resourceclaims", "MODIFIED", raw)

    def _ungate(self, pod: PodInfo) -> bool | None:
        """Remove our gate: True when done, False to retry later, None when the pod is gone."""
        for _ in range(CONFLICT_ATTEMPTS):
            remaining = [{"name": gate} for gate in pod.gates if gate != self.gate]
            self._check_fence()
            try:
                self.client.patch(
                    "pods",
                    pod.name,
                    {
                        "metadata": {"resourceVersion": pod.resource_version},
                        "spec": {"schedulingGates": remaining or None},
                    },
                    namespace=pod.namespace,
                )
                return True
            except NotFoundError:
                return None
            except ConflictError:
                self.metrics.conflicts.labels("pods").inc()
            except ApiError as err:
                log.warning("removing the gate failed", extra={"pod": pod.key, "error": str(err)})
                return False
            try:
                raw = self.client.get("pods", pod.name, namespace=pod.namespace)
            except NotFoundError:
                return None
            except ApiError:
                return False
            self.cache.apply("pods", "MODIFIED", raw)
            fresh = parse_pod(raw)
            if fresh.uid != pod.uid:
                return None
            if not fresh.has_gate(self.gate):
                return True
            pod = fresh
        return False

    # -- placed pods the scheduler cannot bind ------------------------------------------------

    def _check_placed(self, pod: PodInfo, record: _Placed) -> Result:
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
                self.metrics.failures.labels("unschedulable-after-placement").inc()
                self._event(
                    _pod_ref(pod),
                    "Warning",
                    "PlacementAbandoned",
                    f"the scheduler could not bind the pod after {record.attempts} "
                    f"placement(s); leaving it to the scheduler: {message}",
                )
            return DONE
        names, _ = pod.claim_names()
        released = []
        for name in names:
            claim = self.cache.claim(f"{pod.namespace}/{name}")
            if claim is not None and self._release(claim):
                released.append(claim_key(claim))
        if record.node:
            record.excluded.add(record.node)
        record.attempts += 1
        self.metrics.retries.inc()
        self.cache.unnominate(pod.key)
        self._event(
            _pod_ref(pod),
            "Warning",
            "PlacementRetry",
            f"the scheduler could not bind the pod to node {record.node or '(any)'}: "
            f"{message}; released {', '.join(released) or 'no claim'} and placing again "
            f"(attempt {record.attempts} of {self.max_retries + 1})",
        )
        outcome = self._decide_and_write(pod, record)
        if isinstance(outcome, Result):
            return outcome
        record.node = outcome.node
        record.released_at = self._clock()
        self.cache.nominate(pod, outcome.node or "")
        return Result(requeue_after=self.grace_s)

    # -- explanations ----------------------------------------------------------------------

    def _unplaceable(
        self,
        pod: PodInfo,
        pending: Sequence[ResourceClaim],
        policy: str,
        filtered: NodeFilter | None,
        err: UnsatisfiableError,
    ) -> None:
        nodes = ""
        if filtered is not None and filtered.rejected:
            nodes = f"{filtered.summary()}. "
        reasons = err.reasons
        details = "; ".join(f"{claim}: {reason}" for claim, reason in reasons.items()) or str(err)
        names = ", ".join(claim_key(c) for c in pending)
        self._event(
            _pod_ref(pod),
            "Warning",
            "Unplaceable",
            f"cannot place claims {names} (policy {policy}): {nodes}{details}",
        )
        for claim in pending:
            reason = reasons.get(f"claim {claim_key(claim)}", str(err))
            self._event(
                _claim_ref(claim),
                "Warning",
                "Unplaceable",
                f"cannot be placed for pod {pod.key}: {nodes}{reason}",
            )

    def _explain_pending(self, pod: PodInfo) -> Result:
        message = pod.scheduled.message if pod.scheduled is not None else ""
        if not any(word in message.lower() for word in _CLAIM_FAILURE_WORDS):
            return DONE
        names, waiting = pod.claim_names()
        if waiting:
            return DONE
        with self.cache.lock:
            claims = [self.cache.claim(f"{pod.namespace}/{name}") for name in names]
            pending = [c for c in claims if c is not None and not _allocated(c)]
            if not pending:
                return DONE
            try:
                nodes = filter_nodes(pod, self.cache.nodes(), self.cache.node_usage())
                explanation = explain(
                    self.cache.snapshot(), pending, nodes=nodes.nodes, timeout=self.timeout_s
                )
                reasons = explanation.reasons()
            except (InvalidInputError, CelEvaluationError) as err:
                reasons = {f"claim {claim_key(c)}": str(err) for c in pending}
        summary = "; ".join(f"{claim}: {reason}" for claim, reason in reasons.items())
        self._event(
            _pod_ref(pod),
            "Warning",
            "UnallocatableClaims",
            f"the scheduler reports: {message}. Explanation: {summary}",
        )
        for claim in pending:
            reason = reasons.get(f"claim {claim_key(claim)}", "")
            self._event(_claim_ref(claim), "Warning", "UnallocatableClaims", reason)
        return DONE

    def _event(self, ref: ObjectRef, event_type: EventType, reason: str, message: str) -> None:
        if self.events.emit(ref, event_type, reason, message):
            self.metrics.events.labels(reason).inc()


def run_worker(
    placer: Placer,
    queue: WorkQueue,
    stop: threading.Event,
    *,
    on_idle: Callable[[], Any] | None = None,
) -> None:
    """Take keys from ``queue`` and reconcile them until ``stop`` is set.

    An unexpected exception is logged and the key retried after its backoff;
    it never ends the worker.
    """
    while not stop.is_set():
        key = queue.get(timeout_s=0.5)
        if key is None:
            if on_idle is not None:
                on_idle()
            continue
        try:
            result = placer.reconcile(key)
        except Exception:
            log.exception("placement failed unexpectedly", extra={"pod": key})
            result = Result(backoff=True)
        try:
            if result.backoff:
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
                if result.requeue_after is not None:
                    queue.add_after(key, result.requeue_after)
        finally:
            queue.done(key)
        placer.metrics.queue_depth.set(len(queue))
