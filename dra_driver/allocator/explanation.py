"""``explain``: why pending claims can or cannot be allocated, per node and request.

For each node (or the given one), each claim and each request (each
subrequest of a ``firstAvailable`` request) the explainer classifies every
candidate device by the first check it fails, looked at on its own (against
the devices in use, without the other requests of the pod):

1. a class selector is false / 2. a request selector is false / a selector
   fails to evaluate (counted, the first error kept);
3. not available on the node (per-device node selection);
4. in use, by which claims;
5. capacity insufficient (consumable capacity, request policy);
6. counters exhausted (partitionable devices);
7. tainted and not tolerated (the taint, and the DeviceTaintRule that put it there,
   are named per device);
8. lacking the attribute of a constraint that covers the request;

the rest are *eligible*. It also runs the allocator's search on the node to
say whether the claims fit together (constraints and competition between
requests are only visible that way) and lists incomplete and invalid pools,
whose devices are never candidates.

The *closest* node is one where the claims fit, else the one with the
smallest shortfall: per request the devices still missing (``needed -
eligible``; for ``All``, the matching devices that are not eligible), taking
the best alternative of a ``firstAvailable`` request; ties go to node order.

When no node fits but a request's eligible devices on all the nodes searched together would
be enough, the free devices are *fragmented* (one request's devices come from one node):
:meth:`Explanation.fragmented` names the request, the free total and the most on one node,
and the reasons, the table and the JSON carry that note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.errors import CelEvaluationError
from api.resource_v1 import ResourceClaim
from dra_driver.allocator.constraints import ConstraintState
from dra_driver.allocator.inventory import InventoryDevice
from dra_driver.allocator.matching import (
    DeviceMatcher,
    SearchAbortedError,
    evaluate,
    selector_error,
)
from dra_driver.allocator.reports import COLUMNS, ClaimReport, NodeReport, RequestReport
from dra_driver.allocator.requests import ClaimPlan, RequestPlan, plan_claims
from dra_driver.allocator.search import NodeSearch
from dra_driver.allocator.snapshot import Snapshot, candidate_nodes
from dra_driver.allocator.taints import untolerated

__all__ = [
    "FILTER_TIMEOUT",
    "ClaimReport",
    "Explanation",
    "Fragmented",
    "NodeReport",
    "RequestReport",
    "explain",
]

#: Seconds one node's search may take (the scheduler's filter timeout default).
FILTER_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Fragmented:
    """A request no node can serve although the free devices of all nodes would be enough."""

    claim: str
    request: str
    needed: int
    eligible: int
    """Eligible devices on all the nodes searched together."""
    most: int
    """The most eligible devices on one node (``node``)."""
    node: str | None

    def note(self) -> str:
        return (
            f"request {self.request} needs {self.needed} device(s): {self.eligible} eligible "
            f"on all nodes together, at most {self.most} on one node "
            f"({self.node or '(any)'}); the free devices are fragmented"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "request": self.request,
            "needed": self.needed,
            "eligible": self.eligible,
            "mostOnOneNode": self.most,
            "node": self.node,
        }


@dataclass
class Explanation:
    """What :func:`explain` found.

    ``to_json()`` schema (stable; keys are camelCase, lists keep node and
    request order)::

        {
          "claims": ["claim ns/name", ...],          # the pending claims
          "allocatable": bool,                       # some node fits them all
          "closestNode": "node-a" | null,            # see the module docstring
          "fragmented": [{                           # see Explanation.fragmented
            "claim": "claim ns/name", "request": "gpu", "needed": int,
            "eligible": int,                         # on all nodes searched together
            "mostOnOneNode": int, "node": "node-b" | null
          }, ...],
          "nodes": [{
            "node": "node-a" | null,                 # null: no particular node
            "allocatable": bool,
            "shortfall": int,                        # 0 when allocatable
            "error": str | null,                     # why the search stopped with an
                                                     # error (CEL, All over a pool
                                                     # being updated, ...)
            "excluded": str | null,                  # why the node is no candidate
                                                     # (a device plugin serves the pod's
                                                     # extended resource there); its
                                                     # "claims" are then empty
            "incompletePools": ["driver/pool", ...],
            "invalidPools": {"driver/pool": "reason", ...},
            "claims": [{
              "claim": "claim ns/name",
              "requests": [{
                "request": "gpu" | "gpu/big",
                "deviceClassName": str,
                "needed": int | "All",
                "considered": int,                   # candidate devices on the node
                "classSelectorsFalse": int,
                "requestSelectorsFalse": int,
                "selectorErrors": int,
                "notOnNode": int,
                "inUse": int,
                "capacityInsufficient": int,
                "countersExhausted": int,
                "tainted": int,
                "constraintUnmet": int,
                "eligible": int,
                "inUseBy": {"claim ns/name": int, ...},
                "selectorError": str | null,         # the first selector error
                "taintedDevices": [{                 # each device counted in "tainted"
                  "device": "driver/pool/device",
                  "key": str, "value": str, "effect": str,   # the first taint not tolerated
                  "rule": str | null                 # its DeviceTaintRule; null: the slice's
                }, ...]
              }, ...]
            }, ...]
          }, ...]
        }
    """

    claims: list[str]
    nodes: list[NodeReport]

    @property
    def allocatable(self) -> bool:
        return any(n.allocatable for n in self.nodes)

    @property
    def closest(self) -> NodeReport | None:
        """The node that came closest (first allocatable, else smallest shortfall)."""
        best: NodeReport | None = None
        for report in self.nodes:
            key = (
                not report.allocatable,
                report.excluded is not None,
                report.error is not None,
                report.shortfall,
            )
            if best is None or key < (
                not best.allocatable,
                best.excluded is not None,
                best.error is not None,
                best.shortfall,
            ):
                best = report
        return best

    def fragmented(self) -> list[Fragmented]:
        """Requests no node can serve although their eligible devices on all the nodes
        searched (not excluded, no error) together would be enough; none when some node fits
        or fewer than two nodes were searched. Requests for ``All`` devices are left out."""
        searched = [n for n in self.nodes if n.excluded is None and n.error is None]
        if self.allocatable or len(searched) < 2:
            return []
        found: list[Fragmented] = []
        for index, claim in enumerate(self.claims):
            per_request: dict[str, list[tuple[int, str | None]]] = {}
            needed: dict[str, int] = {}
            for report in searched:
                for request in report.claims[index].requests:
                    if request.needed is not None:
                        needed[request.request] = request.needed
                        per_request.setdefault(request.request, []).append(
                            (request.eligible, report.node)
                        )
            for name, counts in per_request.items():
                total = sum(count for count, _ in counts)
                most, node = max(counts, key=lambda c: c[0])  # ties: the first node
                if total >= needed[name] > most:
                    found.append(Fragmented(claim, name, needed[name], total, most, node))
        return found

    def to_json(self) -> dict[str, Any]:
        closest = self.closest
        return {
            "claims": self.claims,
            "allocatable": self.allocatable,
            "closestNode": closest.node if closest is not None else None,
            "fragmented": [f.to_json() for f in self.fragmented()],
            "nodes": [n.to_json() for n in self.nodes],
        }

    def reasons(self) -> dict[str, str]:
        """Per claim (``claim ns/name``), why it cannot be allocated, for stderr."""
        closest = self.closest
        checked = len(self.nodes)
        fragmented = self.fragmented()
        reasons: dict[str, str] = {}
        for index, claim in enumerate(self.claims):
            if closest is None:
                reasons[claim] = "no node to allocate on: the input has no nodes or slices"
                continue
            where = f"node {closest.node}" if closest.node else "the node-independent devices"
            prefix = (
                f"no fit on any of {checked} node(s); closest is {where}"
                if checked > 1
                else f"no fit on {where}"
            )
            if closest.excluded or closest.error:
                reasons[claim] = f"{prefix}: {closest.excluded or closest.error}"
                continue
            report = closest.claims[index]
            short = [r.summary() for group in report.groups for r in group if r.shortfall]
            if report.shortfall == 0 and closest.dead_end:
                reasons[claim] = (
                    f"{prefix}: each request has enough eligible devices there, but not "
                    f"all together: {closest.dead_end}"
                )
            elif report.shortfall == 0:
                reasons[claim] = (
                    f"{prefix}: each request has enough eligible devices there, but not "
                    "all together (constraints, or other requests and claims compete for them)"
                )
            else:
                reasons[claim] = f"{prefix}: " + "; ".join(short)
            if closest.incomplete_pools:
                reasons[claim] += f"; pools being updated: {', '.join(closest.incomplete_pools)}"
            if closest.invalid_pools:
                reasons[claim] += "; invalid resource pools were encountered: " + ", ".join(
                    f"{pool} ({why})" for pool, why in closest.invalid_pools.items()
                )
            for found in fragmented:
                if found.claim == claim:
                    reasons[claim] += f"; {found.note()}"
        return reasons

    def render_table(self) -> str:
        """A fixed-width table: one row per node, claim and request."""
        headings = ["NODE", "CLAIM", "REQUEST", "NEEDED", *(h for _, h in COLUMNS)]
        rows: list[list[str]] = [headings]
        notes: list[str] = []
        for report in self.nodes:
            node = report.node or "(any)"
            for claim in report.claims:
                for request in claim.requests:
                    needed = "All" if request.needed is None else str(request.needed)
                    rows.append(
                        [
                            node,
                            claim.claim.removeprefix("claim "),
                            request.request,
                            needed,
                            *(str(request.counts[k]) for k, _ in COLUMNS),
                        ]
                    )
                    if request.in_use_by:
                        holders = ", ".join(
                            f"{h} ({n})" for h, n in sorted(request.in_use_by.items())
                        )
                        notes.append(f"{node} {request.request}: in use by {holders}")
                    if request.selector_error:
                        notes.append(f"{node} {request.request}: {request.selector_error}")
                    notes.extend(f"{node} {request.request}: {t}" for t in request.taint_notes())
            verdict = (
                "fits" if report.allocatable else f"does not fit (shortfall {report.shortfall})"
            )
            if report.excluded:
                verdict = f"not a candidate: {report.excluded}"
            notes.append(f"{node}: {verdict}")
            if report.error:
                notes.append(f"{node}: error: {report.error}")
            if report.dead_end:
                notes.append(f"{node}: not all together: {report.dead_end}")
            for pool in report.incomplete_pools:
                notes.append(f"{node}: pool {pool} is being updated (incomplete), not used")
            for pool, why in report.invalid_pools.items():
                notes.append(f"{node}: pool {pool} is invalid ({why}), not used")
        widths = [max(len(row[i]) for row in rows) for i in range(len(headings))]
        lines = [
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
        ]
        closest = self.closest
        notes.extend(f"{f.claim.removeprefix('claim ')}: {f.note()}" for f in self.fragmented())
        lines.append("")
        lines.extend(notes)
        if closest is not None:
            lines.append(
                f"closest node: {closest.node or '(any)'}"
                + (" (fits)" if closest.allocatable else "")
            )
        return "\n".join(lines) + "\n"


def _classify(
    matcher: DeviceMatcher,
    claim: ClaimPlan,
    plan: RequestPlan,
    constraints: list[ConstraintState],
    report: RequestReport,
) -> None:
    snapshot = matcher.snapshot
    counts = report.counts
    for device in matcher.view.candidates:
        counts["considered"] += 1
        outcome = _selector_outcome(plan, device, report)
        if outcome is not None:
            counts[outcome] += 1
            continue
        if device.slice.per_device and device.id in matcher.view.off_node:
            counts["notOnNode"] += 1
            continue
        fits = matcher.capacity(plan, device) is not None
        if fits:
            report.matching += 1
        if matcher.in_use(claim.index, plan, device):
            counts["inUse"] += 1
            for holder in snapshot.users(device.id):
                report.in_use_by[holder] += 1
            continue
        if not fits:
            counts["capacityInsufficient"] += 1
        elif not matcher.counters_fit(device):
            counts["countersExhausted"] += 1
        elif (taint := untolerated(device.blocking_taints, plan.tolerations)) is not None:
            report.add_tainted(device.id, taint)
        elif any(state.would_reject(plan, device) for state in constraints):
            counts["constraintUnmet"] += 1
        else:
            counts["eligible"] += 1


def _selector_outcome(
    plan: RequestPlan, device: InventoryDevice, report: RequestReport
) -> str | None:
    for selectors, key, of_class in (
        (plan.device_class.selectors, "classSelectorsFalse", True),
        (plan.selectors, "requestSelectorsFalse", False),
    ):
        for selector in selectors:
            result = evaluate(selector, device)
            if result is True:
                continue
            if result is False:
                return key
            if report.selector_error is None:
                report.selector_error = str(
                    selector_error(result, plan, selector, device, of_class=of_class)
                )
            return "selectorErrors"
    return None


def explain_node(
    snapshot: Snapshot, plans: list[ClaimPlan], name: str | None, timeout: float | None
) -> NodeReport:
    """The report for one node (see the module docstring)."""
    view = snapshot.view(name)
    matcher = DeviceMatcher(snapshot, view, plans)
    claims: list[ClaimReport] = []
    for claim in plans:
        constraints = [ConstraintState(c) for c in claim.constraints]
        requests: list[RequestReport] = []
        groups: list[list[RequestReport]] = []
        for group in claim.groups:
            alternatives = []
            for plan in group.alternatives:
                report = RequestReport(
                    plan.full_name, plan.device_class.name, None if plan.all_devices else plan.count
                )
                _classify(matcher, claim, plan, constraints, report)
                alternatives.append(report)
            requests.extend(alternatives)
            groups.append(alternatives)
        claims.append(ClaimReport(claim.label, requests, groups))
    error: str | None = None
    search = NodeSearch(snapshot, view, plans, timeout=timeout)
    try:
        allocatable = bool(search.run())
        if not allocatable:
            search.find_dead_end()
    except (CelEvaluationError, SearchAbortedError) as err:
        allocatable = False
        error = str(err)
    return NodeReport(
        node=name,
        allocatable=allocatable,
        error=error,
        dead_end=search.dead_end,
        incomplete_pools=[p.label for p in view.pools if p.incomplete],
        invalid_pools={p.label: p.invalid for p in view.pools if p.invalid is not None},
        claims=claims,
    )


def explain(
    snapshot: Snapshot,
    pending_claims: Sequence[ResourceClaim],
    node: str | None = None,
    timeout: float | None = FILTER_TIMEOUT,
    nodes: Sequence[str] | None = None,
    *,
    excluded: Mapping[str, str] | None = None,
) -> Explanation:
    """Explain, for ``node`` or every candidate node, how the pending claims fit.

    ``nodes`` limits the report to these nodes, as for :func:`allocate`. A node of
    ``excluded`` is reported with its reason (``excluded``) and not searched.

    Raises InvalidInputError for input :func:`allocate` would reject (a missing
    DeviceClass, a selector that does not compile...). Selector evaluation
    errors do not raise here: they are counted and reported.
    """
    plans = plan_claims(pending_claims, snapshot.classes, snapshot.class_plans)
    skipped = excluded or {}
    reports = [
        NodeReport(name, False, None, [], {}, [], excluded=skipped[name])
        if name is not None and name in skipped
        else explain_node(snapshot, plans, name, timeout)
        for name in candidate_nodes(snapshot, node, nodes)
    ]
    return Explanation([plan.label for plan in plans], reports)
