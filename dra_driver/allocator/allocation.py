"""``allocate``: all pending claims of one pod, together, on one node.

Node candidates: the given node, or every node the snapshot knows (Node
objects and nodes named by slices), in name order; with none known at all, a
single "no particular node" on which only ``allNodes`` devices exist. A caller
that has filtered the nodes itself (a controller honouring a pod's node
affinity, taints and resources) passes ``nodes=``: only those are candidates.

``first-fit`` is the upstream allocator: nodes in name order, the first node
with a solution, the first solution in search order; with firstAvailable
requests, the node with the best prioritized-list score (the scheduler's only
DRA node score) among the feasible ones. The scoring policies
(:mod:`dra_driver.allocator.policies`) try nodes in their own order, compare
up to ``NODE_BUDGET`` feasible nodes and up to ``SOLUTION_BUDGET`` solutions
on each, and keep the best.

Errors:

- InvalidInputError: a request naming a missing DeviceClass, an unknown
  allocationMode, a selector that does not compile... (before any search);
- CelEvaluationError: a selector failed on a device the search reached;
  fatal for the whole allocation, as upstream (no other node is tried);
- UnsatisfiableError: no node fits, or an upstream allocation error (an
  ``All`` request over a pool being updated, more than 32 devices for one
  claim); ``reasons`` maps each claim (``claim ns/name``) to why.

A node found infeasible for a claim shape is remembered in the snapshot until
devices it could use are released, so allocating many claims of one shape one
after another skips full nodes without searching them again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.errors import InvalidInputError, UnsatisfiableError
from api.limits import FIRST_AVAILABLE_DEVICE_REQUESTS_MAX
from api.resource_v1 import AllocationResult, ResourceClaim
from dra_driver.allocator.explanation import FILTER_TIMEOUT, explain
from dra_driver.allocator.feasibility import FeasibilityMemo
from dra_driver.allocator.matching import SearchAbortedError
from dra_driver.allocator.policies import (
    NODE_BUDGET,
    SOLUTION_BUDGET,
    STEP_BUDGET,
    scoring_policy,
)
from dra_driver.allocator.requests import ClaimPlan, claim_shape, plan_claims
from dra_driver.allocator.results import build_result
from dra_driver.allocator.search import CandidateOrder, NodeSearch, Solution
from dra_driver.allocator.snapshot import Snapshot, candidate_nodes
from dra_driver.policy_names import FIRST_FIT, POLICIES


@dataclass(frozen=True)
class Allocation:
    """The outcome of :func:`allocate`.

    ``node`` is the chosen node, or None when every allocated device is
    available on all nodes (no allocation carries a node selector).
    ``results`` are aligned with the pending claims. ``prioritized_score`` is the
    scheduler's prioritized-list score of the solution (0 without firstAvailable).
    """

    node: str | None
    results: list[AllocationResult]
    policy: str
    prioritized_score: int


def unsatisfiable(message: str, reasons: dict[str, str]) -> UnsatisfiableError:
    """An UnsatisfiableError with ``reasons`` (per ``claim ns/name``)."""
    return UnsatisfiableError(message, reasons)


def _new_share_id() -> str:
    return str(uuid.uuid4())


def allocate(
    snapshot: Snapshot,
    pending_claims: Sequence[ResourceClaim],
    node: str | None = None,
    policy: str = FIRST_FIT,
    *,
    share_id: Callable[[], str] | None = None,
    timeout: float | None = FILTER_TIMEOUT,
    nodes: Sequence[str] | None = None,
    excluded: Mapping[str, str] | None = None,
) -> Allocation:
    """Allocate every pending claim together on one node (see the module docstring).

    ``timeout`` bounds the search on each node in seconds (None: unbounded);
    running out raises UnsatisfiableError ("filter operation aborted").
    ``nodes`` restricts the candidates to these nodes (tried in name order,
    policies rank them as usual); an empty list leaves no candidate. With
    ``node`` as well, ``node`` is the only candidate if it is in ``nodes``. ``excluded``
    names nodes that are no candidates, with why (a device plugin serves the pod's extended
    resource there); an UnsatisfiableError then says why.

    Does not change the snapshot: call :meth:`Snapshot.add_allocated` with the
    claims once their allocation is written.
    """
    if policy not in POLICIES:
        raise InvalidInputError(
            f'unknown placement policy "{policy}": use one of {", ".join(POLICIES)}'
        )
    plans = plan_claims(pending_claims, snapshot.classes, snapshot.class_plans)
    names = candidate_nodes(snapshot, node, nodes)
    if excluded:
        names = [n for n in names if n not in excluded]
    memo = _memo(snapshot, plans, pending_claims)
    if policy == FIRST_FIT:
        found = _first_fit(
            snapshot,
            plans,
            names,
            memo,
            timeout,
            top_score=_top_score(plans),
            whole_cluster=node is None and nodes is None,
        )
    else:
        found = _best(snapshot, plans, names, memo, policy_name=policy, timeout=timeout)
    if found is None:
        raise _no_fit(
            snapshot, pending_claims, node, len(names), timeout, nodes=nodes, excluded=excluded
        )
    chosen_node, solution = found
    make_share_id = share_id or _new_share_id
    results = [
        build_result(plan, solution.picks[i], solution.chosen[i], chosen_node, make_share_id)
        for i, plan in enumerate(plans)
    ]
    pinned = any(result.node_selector is not None for result in results)
    return Allocation(chosen_node if pinned else None, results, policy, solution.prioritized_score)


def _memo(
    snapshot: Snapshot, plans: list[ClaimPlan], claims: Sequence[ResourceClaim]
) -> FeasibilityMemo | None:
    # "All" requests are not monotonic in the in-use state (a device whose
    # capacity is used up leaves the set of "all" devices), so they are not memoised.
    for plan in plans:
        for group in plan.groups:
            if any(alternative.all_devices for alternative in group.alternatives):
                return None
    return snapshot.memo(tuple(claim_shape(claim) for claim in claims))


def _search(
    snapshot: Snapshot,
    plans: list[ClaimPlan],
    name: str | None,
    *,
    timeout: float | None,
    order: CandidateOrder | None = None,
    max_solutions: int = 1,
    step_budget: int | None = None,
) -> list[Solution]:
    search = NodeSearch(
        snapshot,
        snapshot.view(name),
        plans,
        order=order,
        max_solutions=max_solutions,
        step_budget=step_budget,
        timeout=timeout,
    )
    try:
        return search.run()
    except SearchAbortedError as err:
        raise unsatisfiable(err.message, {err.claim: err.message}) from None


def _first_fit(
    snapshot: Snapshot,
    plans: list[ClaimPlan],
    nodes: list[str | None],
    memo: FeasibilityMemo | None,
    timeout: float | None,
    *,
    top_score: int,
    whole_cluster: bool,
) -> tuple[str | None, Solution] | None:
    """The first node in name order with a solution, and its first solution.

    With firstAvailable requests the scheduler scores feasible nodes by the
    prioritized list (8 for a request's first subrequest, down to 1): a node
    where every request gets its first choice wins at once; otherwise the
    highest-scoring node wins, the earliest by name among equals.
    """
    best: tuple[str | None, Solution] | None = None
    # The memo's cursor indexes the snapshot's node list: only used when walking it.
    cursor = memo if memo is not None and whole_cluster else None
    for index in range(cursor.cursor if cursor is not None else 0, len(nodes)):
        name = nodes[index]
        epoch = snapshot.epoch(name)
        if memo is not None and memo.infeasible.get(name) == epoch:
            if cursor is not None and index == cursor.cursor:
                cursor.cursor = index + 1
            continue
        solutions = _search(snapshot, plans, name, timeout=timeout)
        if solutions:
            solution = solutions[0]
            if solution.prioritized_score >= top_score:
                return name, solution
            if best is None or solution.prioritized_score > best[1].prioritized_score:
                best = (name, solution)
            continue
        if memo is not None:
            memo.infeasible[name] = epoch
            if cursor is not None and index == cursor.cursor:
                cursor.cursor = index + 1
    return best


def _top_score(plans: list[ClaimPlan]) -> int:
    """The prioritized-list score when every firstAvailable request gets its first choice."""
    return sum(
        FIRST_AVAILABLE_DEVICE_REQUESTS_MAX
        for plan in plans
        for group in plan.groups
        if group.first_available
    )


def _best(
    snapshot: Snapshot,
    plans: list[ClaimPlan],
    nodes: list[str | None],
    memo: FeasibilityMemo | None,
    *,
    policy_name: str,
    timeout: float | None,
) -> tuple[str | None, Solution] | None:
    policy = scoring_policy(policy_name)
    best: tuple[tuple[Any, ...], str | None, Solution] | None = None
    top_score = _top_score(plans)
    feasible = 0
    for rank, name in enumerate(policy.rank_nodes(snapshot, nodes)):
        if best is not None and best[0][0] == -top_score:
            bound = policy.bound(snapshot, name)
            if bound is not None and _cannot_win(best[0][1], bound):
                # No solution on this node can beat the best one.
                if policy.monotone:
                    break
                continue
        epoch = snapshot.epoch(name)
        if memo is not None and memo.infeasible.get(name) == epoch:
            continue
        view = snapshot.view(name)
        solutions = _search(
            snapshot,
            plans,
            name,
            timeout=timeout,
            order=policy.order(snapshot, view),
            max_solutions=SOLUTION_BUDGET,
            step_budget=STEP_BUDGET,
        )
        if not solutions:
            if memo is not None:
                memo.infeasible[name] = epoch
            continue
        for position, solution in enumerate(solutions):
            key = (
                -solution.prioritized_score,
                policy.score(snapshot, view, solution),
                rank,
                position,
            )
            if best is None or key < best[0]:
                best = (key, name, solution)
        feasible += 1
        if feasible >= NODE_BUDGET:
            break
    return None if best is None else (best[1], best[2])


def _cannot_win(best: tuple[Any, ...], bound: tuple[Any, ...]) -> bool:
    """Whether a node with this score bound cannot beat ``best`` (ties lose: later node)."""
    prefix = best[: len(bound)]
    return bool(prefix < bound or (prefix == bound and len(bound) == len(best)))


def _no_fit(
    snapshot: Snapshot,
    claims: Sequence[ResourceClaim],
    node: str | None,
    checked: int,
    timeout: float | None,
    *,
    nodes: Sequence[str] | None,
    excluded: Mapping[str, str] | None,
) -> UnsatisfiableError:
    explanation = explain(
        snapshot, claims, node=node, timeout=timeout, nodes=nodes, excluded=excluded
    )
    where = f"node {node}" if node is not None else f"any of {checked} node(s)"
    return unsatisfiable(f"cannot allocate all claims on {where}", explanation.reasons())
