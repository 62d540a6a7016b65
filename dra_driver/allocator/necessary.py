"""Cheap necessary conditions, checked before (and during) a node's search.

The depth-first search (:mod:`.search`) is exhaustive: claims whose requests together want
more matching devices than a node has, or a ``matchAttribute`` no attribute value can
meet, make it try every combination before it fails, which on a big node takes longer
than any timeout. The conditions here are *necessary* for a solution, computed from
optimistic counts (every device a request could ever get on this node, now), so a node
that fails one has no solution and is skipped at once; a node that passes them is
searched as before. They never change which solution a feasible node yields.

Per plain request (not ``firstAvailable``, not ``All``), its *candidates* are the node's
devices it could be given: not in use (unless admin access), selected (a selector that
cannot be evaluated on a device counts as selecting it: the search decides), not tainted
for it, with room for its capacity requests and counters. The conditions:

1. each request has at least ``count`` candidates;
2. the requests that compete for exclusive devices (not admin access) fit together:
   their counts, less what devices that allow several allocations can give them, add up
   to at most the exclusive candidates they have between them; likewise for each set of
   requests with the very same candidates;
3. for each ``matchAttribute`` constraint of a claim over plain requests, some value of
   the attribute gives every request of it enough candidates, alone and together;
4. for each ``distinctAttribute`` constraint of a claim over plain requests whose
   candidates all hold single values of one type (not lists, not versions: there the
   search's own rules decide), the candidates of each set of those requests offer at
   least as many different values as the set wants devices (every device given must
   bring a value of its own).

Each failure is said in words naming the claim, the requests and the numbers, for
``explain`` and ``allocate``'s error. :class:`Remaining` then prunes inside the search:
a request is not started when fewer of its candidates are left free than it needs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Final

from api.errors import CelEvaluationError
from dra_driver.allocator.constraints import TypedValue, typed_value
from dra_driver.allocator.inventory import InventoryDevice
from dra_driver.allocator.matching import DeviceMatcher
from dra_driver.allocator.requests import ClaimPlan, ConstraintPlan, RequestPlan

__all__ = ["Candidates", "dead_end"]


@dataclass(frozen=True, slots=True)
class _Request:
    claim: ClaimPlan
    plan: RequestPlan
    candidates: tuple[InventoryDevice, ...]

    @property
    def label(self) -> str:
        return f"claim {self.claim.ref} request {self.plan.full_name}"

    @property
    def shared(self) -> int:
        return sum(1 for d in self.candidates if d.multi)

    @property
    def exclusive(self) -> frozenset[str]:
        return frozenset(d.id for d in self.candidates if not d.multi)

    @property
    def need_exclusive(self) -> int:
        """Devices it must get from exclusive ones: one share per device and request."""
        return max(self.plan.count - self.shared, 0)


#: Per plain request (``id`` of its plan), its candidates, for pruning inside the search.
Candidates = dict[int, tuple[InventoryDevice, ...]]


def _could_select(matcher: DeviceMatcher, plan: RequestPlan, device: InventoryDevice) -> bool:
    try:
        return matcher.selectable(plan, device)
    except CelEvaluationError:
        return True  # optimistic: the search evaluates it when it gets there


def _candidates(
    matcher: DeviceMatcher, plan: RequestPlan, devices: Sequence[InventoryDevice]
) -> tuple[InventoryDevice, ...]:
    found = []
    for device in devices:
        if not plan.admin_access and matcher.snapshot.in_use(device.id):
            continue
        if matcher.tainted(plan, device) or not _could_select(matcher, plan, device):
            continue
        if matcher.capacity(plan, device) is None or not matcher.counters_fit(device):
            continue
        found.append(device)
    return tuple(found)


def _plain_requests(
    matcher: DeviceMatcher, claims: Sequence[ClaimPlan], devices: Sequence[InventoryDevice]
) -> list[_Request]:
    requests = []
    for claim in claims:
        for group in claim.groups:
            if group.first_available:
                continue
            (plan,) = group.alternatives
            if plan.all_devices:
                continue
            requests.append(_Request(claim, plan, _candidates(matcher, plan, devices)))
    return requests


def _jointly_short(requests: Sequence[_Request]) -> str | None:
    need = sum(r.need_exclusive for r in requests)
    have = len(frozenset().union(*(r.exclusive for r in requests))) if requests else 0
    if need <= have:
        return None
    names = ", ".join(r.label for r in requests)
    return (
        f"{names} need {need} devices that no other request may have, together, and "
        f"{have} such device(s) match them here"
    )


def _constraint_dead_end(
    claim: ClaimPlan, constraint: ConstraintPlan, requests: Sequence[_Request]
) -> str | None:
    if any(
        constraint.applies_to(plan) and group.first_available
        for group in claim.groups
        for plan in group.alternatives
    ):
        return None  # which subrequest applies is the search's to find
    applying = [r for r in requests if r.claim is claim and constraint.applies_to(r.plan)]
    if constraint.distinct:
        return _distinct_dead_end(claim, constraint, applying)
    if len(applying) < 2 and sum(r.plan.count for r in applying) < 2:
        return None
    by_value: dict[TypedValue, list[list[InventoryDevice]]] = defaultdict(
        lambda: [[] for _ in applying]
    )
    for index, request in enumerate(applying):
        for device in request.candidates:
            attribute = device.attribute(constraint.attribute)
            value = typed_value(attribute) if attribute is not None else None
            if value is not None and value[0] != "list":
                by_value[value][index].append(device)
    for per_request in by_value.values():
        narrowed = [
            _Request(r.claim, r.plan, tuple(devices))
            for r, devices in zip(applying, per_request, strict=True)
        ]
        if all(len(r.candidates) >= r.plan.count for r in narrowed) and (
            _jointly_short([r for r in narrowed if not r.plan.admin_access]) is None
        ):
            return None
    names = ", ".join(r.plan.full_name for r in applying)
    message = (
        f"claim {claim.ref}: no value of {constraint.attribute} (matchAttribute over "
        f"{names}) has enough matching devices here for all of them"
    )
    # What the node offers at best: the value with the most matching devices.
    offers = {value: len({d.id for ds in lists for d in ds}) for value, lists in by_value.items()}
    if offers:
        value, most = max(offers.items(), key=lambda item: item[1])
        message += f"; the most one value offers is {most} ({value[1]})"
    return message


#: Requests of one distinctAttribute constraint up to which every subset of them is checked.
_DISTINCT_SUBSETS_UP_TO: Final = 8


def _distinct_dead_end(
    claim: ClaimPlan, constraint: ConstraintPlan, applying: Sequence[_Request]
) -> str | None:
    """Every subset of the requests (all of them together only, past
    ``_DISTINCT_SUBSETS_UP_TO``) wants at most as many devices as its candidates have
    different values."""
    if sum(r.plan.count for r in applying) < 2:
        return None
    values: list[frozenset[TypedValue]] = []
    for request in applying:
        found = set()
        for device in request.candidates:
            attribute = device.attribute(constraint.attribute)
            value = typed_value(attribute) if attribute is not None else None
            if value is not None:  # a device without it is never given (the search rejects it)
                found.add(value)
        values.append(frozenset(found))
    kinds = {value[0] for found in values for value in found}
    if len(kinds) > 1 or kinds & {"list", "version"}:
        return None
    sizes = (
        range(1, len(applying) + 1) if len(applying) <= _DISTINCT_SUBSETS_UP_TO else [len(applying)]
    )
    for size in sizes:
        for subset in combinations(range(len(applying)), size):
            need = sum(applying[i].plan.count for i in subset)
            have = len(frozenset().union(*(values[i] for i in subset)))
            if need > have:
                names = ", ".join(applying[i].plan.full_name for i in subset)
                return (
                    f"claim {claim.ref}: distinctAttribute {constraint.attribute} over {names} "
                    f"wants {need} devices with different values, and the matching devices "
                    f"here have {have} different value(s)"
                )
    return None


def dead_end(
    matcher: DeviceMatcher, claims: Sequence[ClaimPlan], devices: Sequence[InventoryDevice]
) -> tuple[str | None, Candidates]:
    """Why no solution can exist on this node (None: the search must tell), and each plain
    request's candidates (see the module docstring)."""
    requests = _plain_requests(matcher, claims, devices)
    candidates: Candidates = {id(r.plan): r.candidates for r in requests}
    for request in requests:
        if len(request.candidates) < request.plan.count:
            return (
                f"{request.label} needs {request.plan.count} device(s) and "
                f"{len(request.candidates)} match it here",
                candidates,
            )
    competing = [r for r in requests if not r.plan.admin_access]
    short = _jointly_short(competing)
    if short is not None:
        return short, candidates
    same: dict[frozenset[str], list[_Request]] = defaultdict(list)
    for request in competing:
        same[request.exclusive].append(request)
    for group in same.values():
        if len(group) > 1 and (short := _jointly_short(group)) is not None:
            return short, candidates
    for claim in claims:
        for constraint in claim.constraints:
            reason = _constraint_dead_end(claim, constraint, requests)
            if reason is not None:
                return reason, candidates
    return None, candidates
