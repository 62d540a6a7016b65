"""Deciding: which node and devices a gated pod's pending claims get, and why none fit.

Pure: a function of what the cache holds (:class:`~controller.cache.PlacementView`),
taken under the cache's lock. Nothing here writes, emits an Event or counts a
metric; the reconciler acts on the outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from api.errors import CelEvaluationError, InvalidInputError, UnsatisfiableError
from api.resource_v1 import (
    AllocationResult,
    ResourceClaim,
    ResourceClaimStatus,
    claim_label,
)
from controller.cache import PlacementView
from controller.placement.marks import Marks, is_allocated, is_reserved, reserved_by_others
from controller.scheduling import NodeFilter, PodInfo, filter_nodes
from dra_driver.allocator import POLICIES, allocate, explain
from dra_driver.allocator.nodes import compile_node_selector

__all__ = [
    "Decision",
    "PodClaims",
    "PolicyChoice",
    "ReleaseFirst",
    "Unplaceable",
    "Unusable",
    "allocated_node",
    "candidate_nodes",
    "choose_policy",
    "decide",
    "explain_claims",
    "pod_claims",
    "with_allocation",
]


@dataclass(frozen=True)
class PodClaims:
    """A pod's claims split by state, in the pod's order."""

    #: Not allocated yet: the decision allocates these.
    pending: list[ResourceClaim]
    #: Allocated before (by us or anyone): respected, never moved.
    allocated: list[ResourceClaim]


@dataclass
class Decision:
    """All of a pod's pending claims allocated together on one node."""

    pod: PodInfo
    node: str | None
    policy: str
    #: The pending claims with their new allocation (assumed in the cache; after the
    #: write, the versions the API server returned).
    claims: list[ResourceClaim]
    #: Claims of the pod allocated before (by us or anyone).
    allocated: list[ResourceClaim]

    def placed_by_us(self, marks: Marks) -> list[ResourceClaim]:
        """The pod's claims this controller allocated for it (``placed-for`` is its UID)."""
        return [
            claim
            for claim in [*self.allocated, *self.claims]
            if marks.owner(claim) == self.pod.uid and is_allocated(claim)
        ]


@dataclass(frozen=True)
class Unplaceable:
    """No node fits the pod's pending claims (or no node can run the pod at all)."""

    pending: list[ResourceClaim]
    policy: str
    #: The node filter's verdicts, when it had the last word on the candidates.
    filtered: NodeFilter | None
    error: UnsatisfiableError


@dataclass(frozen=True)
class Unusable:
    """The claims cannot be evaluated (a missing class, a CEL error): no node will do."""

    pending: list[ResourceClaim]
    error: InvalidInputError | CelEvaluationError


@dataclass(frozen=True)
class ReleaseFirst:
    """Our own earlier allocations of the pod, which cannot be completed: release them and
    decide again."""

    claims: list[ResourceClaim]


@dataclass(frozen=True)
class PolicyChoice:
    name: str
    #: Why an annotation's choice was refused (for an Event); None when none was.
    refused: str | None = None


def pod_claims(view: PlacementView) -> PodClaims | None:
    """The pod's claims, or None while one does not exist or is being deleted (its
    creation, or replacement, brings the pod back)."""
    claims: list[ResourceClaim] = []
    for claim in view.claims:
        if claim is None or claim.metadata.deletion_timestamp:
            return None
        claims.append(claim)
    return PodClaims(
        pending=[c for c in claims if not is_allocated(c)],
        allocated=[c for c in claims if is_allocated(c)],
    )


def choose_policy(
    pod: PodInfo, pending: Sequence[ResourceClaim], default: str, marks: Marks
) -> PolicyChoice:
    """The pod's policy annotation, else the first pending claim's, else ``default``."""
    wanted = pod.annotations.get(marks.policy)
    source = "pod"
    if wanted is None:
        for claim in pending:
            wanted = (claim.metadata.annotations or {}).get(marks.policy)
            if wanted is not None:
                source = claim_label(claim.metadata.namespace, claim.metadata.name)
                break
    if wanted is None:
        return PolicyChoice(default)
    if wanted not in POLICIES:
        return PolicyChoice(
            default,
            f'{source} annotation {marks.policy}: unknown policy "{wanted}"; '
            f"use one of {', '.join(POLICIES)}. Placing with {default}",
        )
    return PolicyChoice(wanted)


def decide(
    view: PlacementView,
    pod: PodInfo,
    claims: PodClaims,
    policy: str,
    *,
    marks: Marks,
    excluded: Iterable[str] = (),
    timeout_s: float | None,
    wall: Callable[[], datetime],
) -> Decision | Unplaceable | Unusable | ReleaseFirst:
    """Allocate ``claims.pending`` together on one node the pod can run on (see the
    package docstring, step 1). ``excluded``: nodes where a placement of the pod failed."""
    pending, allocated = claims.pending, claims.allocated
    if not pending:
        return Decision(pod, allocated_node(allocated), policy, [], allocated)
    filtered: NodeFilter | None = None
    try:
        nodes = candidate_nodes(view, pod, allocated, excluded)
        if isinstance(nodes, NodeFilter):
            filtered, candidates = nodes, nodes.nodes
        else:
            candidates = nodes
        if not candidates:
            raise UnsatisfiableError("no node can run the pod")
        snapshot = view.snapshot()
        found = allocate(
            snapshot,
            pending,
            policy=policy,
            # Every node of the snapshot: the allocator walks its own (ranked) node list
            # instead of sorting and ranking a list of its own each time.
            nodes=None if candidates == snapshot.node_names else candidates,
            timeout=timeout_s,
        )
    except UnsatisfiableError as err:
        # A gated pod's own reservation (written with the allocation) does not keep a
        # claim; once the gate is gone the pod may be bound any moment: any does.
        gated = pod.has_gate(marks.gate)
        ours = [
            c
            for c in allocated
            if marks.owner(c) == pod.uid
            and not (reserved_by_others(c, marks) if gated else is_reserved(c))
        ]
        if ours:
            return ReleaseFirst(ours)
        return Unplaceable(pending, policy, filtered, err)
    except (InvalidInputError, CelEvaluationError) as err:
        return Unusable(pending, err)
    placed = [
        with_allocation(claim, result, wall())
        for claim, result in zip(pending, found.results, strict=True)
    ]
    return Decision(pod, found.node, policy, placed, allocated)


def explain_claims(
    view: PlacementView, pod: PodInfo, pending: Sequence[ResourceClaim], timeout_s: float | None
) -> dict[str, str]:
    """Why each of ``pending`` fits no node the pod can run on (``claim ns/name`` -> why)."""
    try:
        nodes = filter_nodes(pod, view.nodes, view.usage)
        explanation = explain(view.snapshot(), pending, nodes=nodes.nodes, timeout=timeout_s)
        return explanation.reasons()
    except (InvalidInputError, CelEvaluationError) as err:
        return {claim_label(c.metadata.namespace, c.metadata.name): str(err) for c in pending}


def candidate_nodes(
    view: PlacementView, pod: PodInfo, allocated: Sequence[ResourceClaim], excluded: Iterable[str]
) -> NodeFilter | list[str]:
    """The nodes the pod may run on, narrowed by its allocated claims' node selectors
    (a list then: the filter's verdicts no longer tell the whole story)."""
    excluded = tuple(excluded)
    if view.node_filter is not None and not excluded and view.nominated is None:
        filtered = view.node_filter(pod)
    else:
        filtered = filter_nodes(
            pod,
            view.nodes,
            view.usage,
            excluded=excluded,
            # The pod's own nomination must not count against itself.
            own=(view.nominated, pod.requests) if view.nominated is not None else None,
        )
    names = filtered.nodes
    for claim in allocated:
        allocation = claim.status.allocation if claim.status is not None else None
        selector = allocation.node_selector if allocation is not None else None
        if selector is None:
            continue
        compiled = compile_node_selector(
            selector,
            obj=claim_label(claim.metadata.namespace, claim.metadata.name),
            path="status.allocation.nodeSelector",
        )
        names = [n for n in names if compiled.matches(view.nodes[n].info)]
    if names != filtered.nodes:
        return names
    return filtered


def allocated_node(claims: Sequence[ResourceClaim]) -> str | None:
    """The node named by the first ``metadata.name`` node selector among ``claims``."""
    for claim in claims:
        allocation = claim.status.allocation if claim.status is not None else None
        selector = allocation.node_selector if allocation is not None else None
        for term in selector.node_selector_terms if selector is not None else []:
            for requirement in term.match_fields or []:
                if requirement.key == "metadata.name" and requirement.values:
                    return requirement.values[0]
    return None


def with_allocation(
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
