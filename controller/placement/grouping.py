"""Pod groups: the claims of every gated pod of one gang PodGroup, in one decision.

A gated pod whose ``spec.schedulingGroup.podGroupName`` names a PodGroup with the
``gang`` policy is not placed on its own. Whichever of the group's pods the work queue
hands out first, once ``minCount`` of the group's pods exist (gated, or placed
before) and each one's claims exist:

1. **decide**, under the cache's lock, for all of them together
   (:func:`~dra_driver.allocator.groups.allocate_group`): one NVLink island when the
   group fits on one, else as few as it can, moving an earlier pod's devices when a
   later pod fits nowhere. Each pod keeps its own node filter (selector, affinity,
   taints, cpu/memory) and its claims allocated before. The decision is assumed in
   the cache for every pod at once;
2. **write** every pod's claims (:class:`~controller.placement.writing.Writer`); when
   one write fails, every allocation written for the group is removed again, so
   no partial group keeps devices;
3. every pod then goes on as a pod placed alone does: settle, confirm, remove the
   gate. The scheduler's gang plugin (``GenericWorkload``) binds them once
   ``minCount`` pods are schedulable. A pod that gives its devices up at the confirm
   is decided again through this path, the others keeping theirs: the islands the
   group already holds are tried first for it.

When the group does not fit, nothing is assumed or written: the group holds no
device while it waits, and each pod gets one Warning Event ``GroupUnplaceable``
saying how many devices the group needs, how many are free, and the closest option
(how many pods it placed, and why the next did not fit). The pods are looked at
again when capacity changes. A group waiting for ``minCount`` pods writes nothing.

Not done: preemption (a group never displaces running pods), and composite pod
groups. A PodGroup with the ``basic`` policy, an unknown PodGroup on a cluster that
does not serve them, and a pod of no group are placed alone, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from agent_kit.kube import ApiError, ClusterClient, ForbiddenError, NotFoundError
from api.errors import CelEvaluationError, InvalidInputError
from api.resource_v1 import ResourceClaim, claim_key
from controller.cache import ClusterCache, PlacementView
from controller.cache.groups import GroupView
from controller.placement.deciding import (
    Decision,
    allocated_node,
    candidate_nodes,
    choose_policy,
    with_allocation,
)
from controller.placement.marks import Marks, is_allocated
from controller.placement.releasing import Releaser
from controller.placement.reporting import Reporter, pod_ref
from controller.placement.writing import WriteOutcome, Writer
from controller.scheduling import NodeFilter, PodInfo
from dra_driver.allocator import Snapshot
from dra_driver.allocator.groups import (
    GroupMember,
    GroupPlacement,
    GroupShortfall,
    allocate_group,
    island_of,
)

__all__ = ["GroupPlacer", "GroupWait", "serves_pod_groups"]

log = logging.getLogger(__name__)


def serves_pod_groups(client: ClusterClient) -> bool:
    """Whether PodGroups can be watched: the cluster serves ``scheduling.k8s.io/v1beta1``
    (the ``GenericWorkload`` gate) and RBAC lets us list them. Without them pods of a
    group are placed one by one, and placement does not wait for a watch that cannot
    start."""
    try:
        client.list("podgroups")
    except (NotFoundError, ForbiddenError) as err:
        log.warning(
            "PodGroups cannot be watched; pods of a pod group are placed one by one",
            extra={"error": str(err)},
        )
        return False
    except ApiError:
        return True  # the watch retries until the API server answers
    return True


@dataclass(frozen=True, slots=True)
class GroupWait:
    """The pod waits: for more of its group (``backoff`` False) or for capacity (True)."""

    backoff: bool


class GroupPlacer:
    """Steps 1 and 2 of the module docstring; the reconciler does the rest per pod."""

    def __init__(
        self,
        cache: ClusterCache,
        writer: Writer,
        releaser: Releaser,
        reporter: Reporter,
        marks: Marks,
        *,
        timeout_s: float | None,
        wall: Callable[[], datetime],
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.releaser = releaser
        self.reporter = reporter
        self.marks = marks
        self.timeout_s = timeout_s
        self._wall = wall

    def place(self, pod: PodInfo, default_policy: str) -> GroupWait | None:
        """Place ``pod``'s gang together. None: go on with ``pod`` alone (no gang, or its
        claims are all allocated now); a :class:`GroupWait`: stop here."""
        if pod.pod_group is None:
            return None
        decisions: list[Decision] = []
        with self.cache.group_view(pod) as view:
            if view.group is None:
                # The scheduler keeps a pod of an unknown group waiting too; where the
                # cluster serves no PodGroups at all, the pod is placed alone.
                return GroupWait(backoff=False) if view.served else None
            min_count = view.group.min_count
            if min_count is None:
                return None
            gated = [p for p in view.pods if p.has_gate(self.marks.gate) and not p.deleting]
            active = [p for p in view.pods if not p.terminal and not p.deleting]
            if len(active) < min_count or view.incomplete & {p.key for p in gated}:
                log.info(
                    "pod group waits for its pods",
                    extra={"pod": pod.key, "group": view.key, "pods": len(active)},
                )
                return GroupWait(backoff=False)
            pending = self._pending(view, gated)
            if pending is None:
                return GroupWait(backoff=False)  # a claim is being created or replaced
            if not any(claims for _, claims, _ in pending):
                return None
            policy = choose_policy(
                pod, [c for _, claims, _ in pending for c in claims], default_policy, self.marks
            )
            members = [
                GroupMember(member.key, claims, self._nodes(view, member, allocated))
                for member, claims, allocated in pending
                if claims
            ]
            snapshot = view.snapshot()
            try:
                outcome = allocate_group(
                    snapshot,
                    members,
                    policy=policy.name,
                    timeout=self.timeout_s,
                    held_islands=_held_islands(view, snapshot),
                )
            except (InvalidInputError, CelEvaluationError) as err:
                self._report_unusable(gated, str(err))
                for member in gated:
                    self.cache.waiting.add(member.key)
                return GroupWait(backoff=True)
            if isinstance(outcome, GroupShortfall):
                for member in gated:
                    self.cache.waiting.add(member.key)
            else:
                decisions = self._decisions(pending, outcome, policy.name)
                for decision in decisions:
                    self.cache.assume_placement(decision.pod.key, decision.claims)
        if isinstance(outcome, GroupShortfall):
            self._report_shortfall(gated, view.key, min_count, outcome)
            return GroupWait(backoff=True)
        if not self._write(decisions):
            return GroupWait(backoff=True)
        for decision in decisions:
            self.cache.nominate(decision.pod, decision.node or "")
        log.info(
            "pod group placed",
            extra={"group": view.key, "pods": len(decisions), "islands": len(outcome.islands)},
        )
        # The other pods go on from the settle step when the watch brings them back.
        return None

    # -- deciding ------------------------------------------------------------------------------

    def _pending(
        self, view: GroupView, gated: Sequence[PodInfo]
    ) -> list[tuple[PodInfo, list[ResourceClaim], list[ResourceClaim]]] | None:
        """Per gated pod: its claims to allocate now, and those allocated before."""
        found = []
        for member in gated:
            claims = view.claims.get(member.key, [])
            if any(c is None or c.metadata.deletion_timestamp for c in claims):
                return None
            present = [c for c in claims if c is not None]
            found.append(
                (
                    member,
                    [c for c in present if not is_allocated(c)],
                    [c for c in present if is_allocated(c)],
                )
            )
        return found

    def _nodes(
        self, view: GroupView, member: PodInfo, allocated: Sequence[ResourceClaim]
    ) -> list[str]:
        """The nodes ``member`` may run on, as for a pod placed alone."""
        single = PlacementView(
            claims=[],
            nodes=view.nodes,
            usage=view.usage,
            nominated=view.nominated.get(member.key),
            snapshot=view.snapshot,
        )
        found = candidate_nodes(single, member, allocated, ())
        return list(found.nodes if isinstance(found, NodeFilter) else found)

    def _decisions(
        self,
        pending: Sequence[tuple[PodInfo, list[ResourceClaim], list[ResourceClaim]]],
        placement: GroupPlacement,
        policy: str,
    ) -> list[Decision]:
        now = self._wall()
        decisions = []
        for member, claims, allocated in pending:
            allocation = placement.allocations.get(member.key)
            if allocation is None:
                continue
            placed = [
                with_allocation(claim, result, now)
                for claim, result in zip(claims, allocation.results, strict=True)
            ]
            decisions.append(Decision(member, allocation.node, policy, placed, allocated))
        return decisions

    # -- writing -------------------------------------------------------------------------------

    def _write(self, decisions: Sequence[Decision]) -> bool:
        """Write every pod's claims, or none: a failed write releases the group's others."""
        for index, decision in enumerate(decisions):
            names = [c.metadata.name or "" for c in [*decision.allocated, *decision.claims]]
            try:
                written = self.writer.write(decision, names)
            except BaseException:
                self._undo(decisions, index)
                raise
            if written is not WriteOutcome.DONE:
                self._undo(decisions, index)
                return False
        return True

    def _undo(self, decisions: Sequence[Decision], failed: int) -> None:
        """The write of ``decisions[failed]`` failed (the writer undid its own part):
        release what was written before it, forget what was assumed after it."""
        for decision in decisions[:failed]:
            self.cache.unnominate(decision.pod.key)
            self.releaser.rollback(decision.claims)
        for decision in decisions[failed + 1 :]:
            for claim in decision.claims:
                self.cache.forget(claim_key(claim))

    # -- reporting -----------------------------------------------------------------------------

    def _report_shortfall(
        self, pods: Sequence[PodInfo], group: str, min_count: int, shortfall: GroupShortfall
    ) -> None:
        self.reporter.metrics.failures.labels("unsatisfiable").inc()
        message = (
            f"pod group {group} (minCount {min_count}) cannot be placed all together, "
            f"so none of its pods holds a device: {shortfall.summary()}"
        )
        for member in pods:
            self.reporter.event(pod_ref(member), "Warning", "GroupUnplaceable", message)

    def _report_unusable(self, pods: Sequence[PodInfo], error: str) -> None:
        self.reporter.metrics.failures.labels("invalid").inc()
        for member in pods:
            self.reporter.event(
                pod_ref(member),
                "Warning",
                "PlacementFailed",
                f"cannot place the pod group's claims: {error}",
            )


def _held_islands(view: GroupView, snapshot: Snapshot) -> set[str]:
    """The NVLink islands of the devices the group's pods hold already (a pod placed again
    after giving its devices up at the confirm prefers where the rest of its group is)."""
    held: set[str] = set()
    for claims in view.claims.values():
        for claim in claims:
            if claim is None or claim.status is None or claim.status.allocation is None:
                continue
            devices = claim.status.allocation.devices
            node = allocated_node([claim])
            for result in devices.results or [] if devices is not None else []:
                island = island_of(snapshot, f"{result.driver}/{result.pool}/{result.device}", node)
                if island is not None:
                    held.add(island)
    return held
