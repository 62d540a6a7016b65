"""Reporting: the Events a person reads on pods and claims (placed, unplaceable, gave way,
retried, devices held twice), the placement metrics, and the log lines that go with them.

Events are best effort (see :mod:`agent_kit.events`): nothing here raises.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Final

from agent_kit.events import EventRecorder, EventType, ObjectRef
from api import limits
from api.resource_v1 import ResourceClaim, claim_key, claim_label
from controller.cache import HeldTwice
from controller.metrics import ControllerMetrics
from controller.placement.conflicts import reportable_after_gate
from controller.placement.deciding import Decision, Unplaceable, Unusable
from controller.placement.marks import Marks
from controller.scheduling import PodInfo
from dra_driver.allocator.conflicts import DeviceConflict

__all__ = ["Reporter", "pod_ref"]

log = logging.getLogger(__name__)

#: Conflicts found after the gate that are remembered as reported (oldest forgotten first).
_REPORTED_MAX: Final = 4096


def pod_ref(pod: PodInfo) -> ObjectRef:
    return ObjectRef("Pod", "v1", pod.namespace, pod.name, pod.uid)


def _claim_ref(claim: ResourceClaim) -> ObjectRef:
    meta = claim.metadata
    return ObjectRef(
        "ResourceClaim", limits.API_VERSION, meta.namespace or "", meta.name or "", meta.uid or ""
    )


class Reporter:
    """Events and metrics of the placement. Thread-safe (workers share it)."""

    def __init__(self, events: EventRecorder, metrics: ControllerMetrics, marks: Marks) -> None:
        self.events = events
        self.metrics = metrics
        self.marks = marks
        self._lock = threading.Lock()
        #: Conflicts reported after the gate: (device, claim keys), oldest first.
        self._reported: OrderedDict[tuple[str, tuple[str, ...]], None] = OrderedDict()

    def event(self, ref: ObjectRef, event_type: EventType, reason: str, message: str) -> None:
        if self.events.emit(ref, event_type, reason, message):
            self.metrics.events.labels(reason).inc()

    def _pod_and_claims(
        self,
        pod: PodInfo,
        claims: Sequence[ResourceClaim],
        event_type: EventType,
        reason: str,
        message: str,
    ) -> None:
        self.event(pod_ref(pod), event_type, reason, message)
        for claim in claims:
            self.event(_claim_ref(claim), event_type, reason, message)

    # -- deciding --------------------------------------------------------------------------

    def invalid_policy(self, pod: PodInfo, message: str) -> None:
        self.event(pod_ref(pod), "Warning", "InvalidPolicy", message)

    def unplaceable(self, pod: PodInfo, outcome: Unplaceable) -> None:
        """No node fits: which node came closest and what each request lacked, plus
        why other nodes were filtered out."""
        self.metrics.failures.labels("unsatisfiable").inc()
        nodes = ""
        if outcome.filtered is not None and outcome.filtered.rejected:
            nodes = f"{outcome.filtered.summary()}. "
        err = outcome.error
        reasons = err.reasons
        details = "; ".join(f"{claim}: {reason}" for claim, reason in reasons.items()) or str(err)
        names = ", ".join(claim_key(c) for c in outcome.pending)
        self.event(
            pod_ref(pod),
            "Warning",
            "Unplaceable",
            f"cannot place claims {names} (policy {outcome.policy}): {nodes}{details}",
        )
        for claim in outcome.pending:
            reason = reasons.get(
                claim_label(claim.metadata.namespace, claim.metadata.name), str(err)
            )
            self.event(
                _claim_ref(claim),
                "Warning",
                "Unplaceable",
                f"cannot be placed for pod {pod.key}: {nodes}{reason}",
            )

    def unusable(self, pod: PodInfo, outcome: Unusable) -> None:
        self.metrics.failures.labels("invalid").inc()
        message = f"cannot place the pod's claims: {outcome.error}"
        self._pod_and_claims(pod, outcome.pending, "Warning", "PlacementFailed", message)

    # -- the gate --------------------------------------------------------------------------

    def placed(self, pod: PodInfo, decision: Decision, waited_s: float) -> None:
        """The gate is gone: ``waited_s`` since the gate was first seen."""
        self.metrics.placements.labels(decision.policy).inc()
        self.metrics.latency.observe(waited_s)
        where = f"node {decision.node}" if decision.node else "node-independent devices"
        names = ", ".join(claim_key(c) for c in [*decision.allocated, *decision.claims])
        self.event(
            pod_ref(pod),
            "Normal",
            "Placed",
            f"claims {names} allocated on {where} (policy {decision.policy}); "
            f"scheduling gate {self.marks.gate} removed",
        )
        log.info("placed", extra={"pod": pod.key, "node": decision.node, "policy": decision.policy})

    # -- devices held twice ----------------------------------------------------------------

    def confirm_found(self, found: Sequence[HeldTwice], outcome: str) -> None:
        """Count conflicts the confirm found; ``outcome``: ``yielded`` or ``kept``."""
        for held in found:
            self.metrics.device_conflicts.labels(held.conflict.kind, outcome).inc()

    def gave_way(
        self,
        pod: PodInfo,
        ours: Sequence[ResourceClaim],
        yielding: Sequence[DeviceConflict],
        yields: int,
        again: bool,
    ) -> None:
        """Our allocations were released for the others' (a ``PlacementConflict`` Event)."""
        what = "; ".join(
            f"device {c.device} of claim {c.claim} is held by claim {', '.join(c.others)} "
            f"({c.kind})"
            for c in yielding
        )
        then = (
            "placing again" if again else f"gave way {yields} times; placing again after a backoff"
        )
        message = f"{what}: released this pod's allocations, {then}"
        self._pod_and_claims(pod, ours, "Normal", "PlacementConflict", message)

    def after_gate(self, pod: PodInfo, found: Sequence[HeldTwice]) -> None:
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
        fresh: list[tuple[DeviceConflict, list[str]]] = []
        with self._lock:
            for held in found:
                identity = (held.conflict.device, held.keys)
                if identity in self._reported or not reportable_after_gate(held, self.marks):
                    continue
                pods = sorted({p.key for use in held.claims.values() for p in use.pods})
                fresh.append((held.conflict, pods))
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
                self.event(ref, "Warning", "DeviceConflict", message)

    # -- placed pods the scheduler cannot bind ---------------------------------------------

    def abandoned(self, pod: PodInfo, attempts: int, message: str) -> None:
        self.metrics.failures.labels("unschedulable-after-placement").inc()
        self.event(
            pod_ref(pod),
            "Warning",
            "PlacementAbandoned",
            f"the scheduler could not bind the pod after {attempts} "
            f"placement(s); leaving it to the scheduler: {message}",
        )

    def retry(
        self,
        pod: PodInfo,
        *,
        node: str | None,
        message: str,
        released: Sequence[str],
        attempt: int,
        attempts: int,
    ) -> None:
        self.metrics.retries.inc()
        self.event(
            pod_ref(pod),
            "Warning",
            "PlacementRetry",
            f"the scheduler could not bind the pod to node {node or '(any)'}: "
            f"{message}; released {', '.join(released) or 'no claim'} and placing again "
            f"(attempt {attempt} of {attempts})",
        )

    # -- pods the scheduler reports failing on claims --------------------------------------

    def unallocatable(
        self,
        pod: PodInfo,
        message: str,
        pending: Sequence[ResourceClaim],
        reasons: Mapping[str, str],
    ) -> None:
        summary = "; ".join(f"{claim}: {reason}" for claim, reason in reasons.items())
        self.event(
            pod_ref(pod),
            "Warning",
            "UnallocatableClaims",
            f"the scheduler reports: {message}. Explanation: {summary}",
        )
        for claim in pending:
            reason = reasons.get(claim_label(claim.metadata.namespace, claim.metadata.name), "")
            self.event(_claim_ref(claim), "Warning", "UnallocatableClaims", reason)
