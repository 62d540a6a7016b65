"""The depth-first search for devices on one node (spec/allocator.md §4-§7).

:class:`NodeSearch` reproduces the kube-scheduler's structured allocator for
one node: claims in order, requests in order, devices of one request as
combinations in candidate order, depth-first with backtracking; a
``firstAvailable`` request tries its subrequests in order and a later one only
when no solution for the whole pod exists with the earlier one.

Whether one candidate device fits one request (spec §5) is asked of a
:class:`~.matching.DeviceMatcher`, which also holds what this search has
reserved so far.

With ``max_solutions == 1`` the first complete solution wins (upstream). A
placement policy asks for more: the search then keeps going after a solution,
records up to ``max_solutions`` of them, and stops early once ``step_budget``
search steps have passed *after the first solution* (so a node is never
declared infeasible for lack of budget). Candidate order may be changed per
request by the policy (``order``); every order yields valid solutions.

The search is exhaustive and can take exponential time on adversarial input
(many devices, a constraint no combination meets). So once a search has run
:data:`DEAD_END_CHECK_STEPS` steps without a solution, it checks the cheap necessary
conditions of :mod:`.necessary` (requests that want more matching devices than the
node has, alone or together; a ``matchAttribute`` no value can meet): a node failing
one has no solution, and the search ends there, saying why (:attr:`NodeSearch.dead_end`).
From then on a request is not started when fewer of its candidates are left free than it
needs. Easy inputs never pay for the check. Like the scheduler's
filter timeout (``DRASchedulerFilterTimeout``, 10 s), ``timeout`` bounds one
node's search; running out aborts the allocation ("filter operation aborted").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from api import limits
from dra_driver.allocator.inventory import InventoryDevice
from dra_driver.allocator.matching import DeviceMatcher, Pick, SearchAbortedError
from dra_driver.allocator.necessary import Candidates, dead_end
from dra_driver.allocator.pools import NodeView
from dra_driver.allocator.requests import ClaimPlan, RequestPlan
from dra_driver.allocator.snapshot import Snapshot

_SUCCESS: Final = 0
_FAIL: Final = 1
_LIMIT: Final = 2  # the claim would get more than 32 devices: backtrack harder

#: The clock is read every 1024 search steps (a mask on the step count).
_CLOCK_EVERY: Final = 1023
#: Steps without a solution after which the necessary conditions are checked.
DEAD_END_CHECK_STEPS: Final = _CLOCK_EVERY + 1


class _DeadEndError(Exception):
    """The node cannot fit the claims (a necessary condition fails): stop searching."""


#: A candidate order for one request: the node's candidates, rearranged.
CandidateOrder = Callable[[RequestPlan, Sequence[InventoryDevice]], Sequence[InventoryDevice]]


@dataclass(slots=True)
class Solution:
    """A complete assignment for all pending claims on one node."""

    picks: list[list[Pick]]
    #: Per claim, per request: index of the chosen alternative (0 for plain requests).
    chosen: list[list[int]]
    #: The scheduler's prioritized-list score (§1): per firstAvailable request 8 for
    #: the first subrequest ... 1 for the 8th; 0 when no request has subrequests.
    prioritized_score: int


class NodeSearch:
    """One search for all pending claims on one node. Use once."""

    def __init__(
        self,
        snapshot: Snapshot,
        view: NodeView,
        claims: Sequence[ClaimPlan],
        *,
        order: CandidateOrder | None = None,
        max_solutions: int = 1,
        step_budget: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.view = view
        self.claims = claims
        self.order = order
        self.max_solutions = max_solutions
        self.step_budget = step_budget
        self.timeout = timeout
        self._deadline: float | None = None
        self.steps = 0
        self.solutions: list[Solution] = []
        self.matcher = DeviceMatcher(snapshot, view, claims)
        self._chosen: list[list[int]] = [[0 for _ in c.groups] for c in claims]
        self._num: dict[int, int] = {}
        self._all: dict[int, list[InventoryDevice]] = {}
        self._candidates: dict[int, Sequence[InventoryDevice]] = {}
        #: Why the node cannot fit the claims, when a necessary condition said so.
        self.dead_end: str | None = None
        self._checked = False
        self._free: Candidates | None = None

    # -- entry point ------------------------------------------------------------------

    def run(self) -> list[Solution]:
        """Search; return the solutions found (empty: the node cannot fit the claims).

        Raises CelEvaluationError when a selector fails on a device the search
        reaches, SearchAbortedError for the upstream errors listed there.
        """
        if self.timeout is not None:
            self._deadline = time.monotonic() + self.timeout
        self._prepare()
        try:
            self._one(0, 0, 0, 0, False, 0)
        except _DeadEndError:
            return []
        return self.solutions

    def _prepare(self) -> None:
        for claim in self.claims:
            minimum = 0
            for group in claim.groups:
                needed = []
                for plan in group.alternatives:
                    if plan.all_devices:
                        devices = self.all_devices(claim, plan)
                        self._all[id(plan)] = devices
                        self._num[id(plan)] = len(devices)
                    else:
                        self._num[id(plan)] = plan.count
                    needed.append(self._num[id(plan)])
                minimum += min(needed)
            if minimum > limits.ALLOCATION_RESULTS_MAX:
                raise SearchAbortedError(
                    claim.label,
                    f"claim {claim.ref}: number of requested devices {minimum} exceeds the "
                    f"claim limit of {limits.ALLOCATION_RESULTS_MAX}",
                )

    def all_devices(self, claim: ClaimPlan, plan: RequestPlan) -> list[InventoryDevice]:
        """Every device of the node an ``All`` request must get (selectors and capacity)."""
        matcher = self.matcher
        devices: list[InventoryDevice] = []
        for pool in self.view.pools:
            if pool.incomplete:
                raise SearchAbortedError(
                    claim.label,
                    f"claim {claim.ref}, request {plan.full_name}: asks for all devices, but "
                    f"resource pool {pool.label} is currently being updated",
                )
            if pool.invalid is not None:
                raise SearchAbortedError(
                    claim.label,
                    f"claim {claim.ref}, request {plan.full_name}: asks for all devices, but "
                    f"resource pool {pool.label} is currently invalid ({pool.invalid})",
                )
            for record in pool.slices:
                for device in record.devices:
                    if (
                        matcher.selectable(plan, device)
                        and matcher.capacity(plan, device) is not None
                    ):
                        devices.append(device)
        return devices

    # -- the recursion ------------------------------------------------------------------

    def _one(  # noqa: PLR0917 - the hot recursion; positions are its state
        self, ci: int, ri: int, si: int, di: int, in_sub: bool, start: int
    ) -> int:
        """Pick device ``di`` of (sub)request ``si`` of request ``ri`` of claim ``ci``.

        ``in_sub``: a firstAvailable alternative is being tried (do not branch
        again); ``start``: first candidate position (combinations, not
        permutations, within one request).
        """
        self.steps += 1
        if self.step_budget is not None and self.solutions and self.steps > self.step_budget:
            return _SUCCESS  # enough looking: unwind with what was found
        if not self.steps & _CLOCK_EVERY:
            if not self._checked and not self.solutions:
                self._check_dead_end()
            if self._deadline is not None:
                self._check_deadline(ci)
        if ci >= len(self.claims):
            return self._complete()
        claim = self.claims[ci]
        if ri >= len(claim.groups):
            result = self._one(ci + 1, 0, 0, 0, False, 0)
            return _FAIL if result == _LIMIT else result
        group = claim.groups[ri]
        if group.first_available and not in_sub:
            all_exceeded = True
            for index in range(len(group.alternatives)):
                self._chosen[ci][ri] = index
                before = len(self.solutions)
                result = self._one(ci, ri, index, 0, True, 0)
                if result == _LIMIT:
                    continue
                all_exceeded = False
                if result == _SUCCESS:
                    return _SUCCESS
                if len(self.solutions) > before:
                    # Solutions exist with this subrequest: later ones are less preferred.
                    return _FAIL
            return _LIMIT if all_exceeded else _FAIL
        plan = group.alternatives[si]
        key = id(plan)
        num = self._num[key]
        if plan.all_devices and num == 0:
            return _FAIL
        if di >= num:
            return self._one(ci, ri + 1, 0, 0, False, 0)
        matcher = self.matcher  # a local: the loop below asks it per candidate device
        if len(matcher.picks[ci]) + num - di > limits.ALLOCATION_RESULTS_MAX:
            return _LIMIT
        if di == 0 and self._free is not None and not self._enough_left(plan, num):
            return _FAIL
        if plan.all_devices:
            device = self._all[key][di]
            if matcher.in_use(ci, plan, device):
                return _FAIL
            pick = matcher.reserve(ci, plan, device, must=True)
            if pick is None:
                return _FAIL
            result = self._one(ci, ri, si, di + 1, in_sub, 0)
            if result != _SUCCESS:
                matcher.unreserve(ci, pick)
            return result
        candidates = self._candidates.get(key)
        if candidates is None:
            candidates = self.candidates(plan)
            self._candidates[key] = candidates
        for position in range(start, len(candidates)):
            device = candidates[position]
            if matcher.in_use(ci, plan, device) or not matcher.selectable(plan, device):
                continue
            pick = matcher.reserve(ci, plan, device, must=False)
            if pick is None:
                continue
            result = self._one(ci, ri, si, di + 1, in_sub, position + 1)
            if result == _SUCCESS:
                return _SUCCESS
            matcher.unreserve(ci, pick)
            if result == _LIMIT:
                return _LIMIT
        return _FAIL

    def find_dead_end(self) -> str | None:
        """After a search without solutions: which necessary condition fails, if one does
        (the search checks them itself only once it has run long; explain asks always)."""
        if self.dead_end is None and not self.solutions:
            self.dead_end, _ = dead_end(self.matcher, self.claims, self.view.candidates)
        return self.dead_end

    def _check_dead_end(self) -> None:
        """The necessary conditions, once (see the module docstring)."""
        self._checked = True
        reason, self._free = dead_end(self.matcher, self.claims, self.view.candidates)
        if reason is not None:
            self.dead_end = reason
            raise _DeadEndError

    def _enough_left(self, plan: RequestPlan, num: int) -> bool:
        """Whether at least ``num`` of a plain request's candidates are not yet taken by
        this search (an admin-access request, or one not known, is not judged)."""
        assert self._free is not None
        devices = self._free.get(id(plan))
        if devices is None or plan.admin_access:
            return True
        taken = self.matcher.taken
        left = 0
        for device in devices:
            if device.multi or not taken(device.id):
                left += 1
                if left >= num:
                    return True
        return False

    def _check_deadline(self, ci: int) -> None:
        if self._deadline is None or time.monotonic() <= self._deadline:
            return
        claim = self.claims[min(ci, len(self.claims) - 1)]
        where = f"node {self.view.name}" if self.view.name else "the node-independent devices"
        raise SearchAbortedError(
            claim.label,
            f"filter operation aborted: the search on {where} took longer than "
            f"{self.timeout:g}s ({self.steps} steps)",
        )

    def _complete(self) -> int:
        score = sum(
            limits.FIRST_AVAILABLE_DEVICE_REQUESTS_MAX - chosen[ri]
            for claim, chosen in zip(self.claims, self._chosen, strict=True)
            for ri, group in enumerate(claim.groups)
            if group.first_available
        )
        self.solutions.append(
            Solution([list(p) for p in self.matcher.picks], [list(c) for c in self._chosen], score)
        )
        return _SUCCESS if len(self.solutions) >= self.max_solutions else _FAIL

    def candidates(self, plan: RequestPlan) -> Sequence[InventoryDevice]:
        """Candidate devices of the node for an ExactCount request, in search order."""
        if self.order is None:
            return self.view.candidates
        return self.order(plan, self.view.candidates)
