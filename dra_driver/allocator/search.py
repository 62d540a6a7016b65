"""The depth-first search for devices on one node (spec/allocator.md §4-§7).

:class:`NodeSearch` reproduces the kube-scheduler's structured allocator for
one node: claims in order, requests in order, devices of one request as
combinations in candidate order, depth-first with backtracking; a
``firstAvailable`` request tries its subrequests in order and a later one only
when no solution for the whole pod exists with the earlier one.

Matching one candidate device for a request, in this order (§5):

1. in use (by an allocated claim, or earlier in this search) unless admin access;
2. class selectors, then request selectors (CEL; an error aborts everything);
3. per-device node selection;
4. capacity (consumable capacity, request policies);
5. counters of partitionable devices;
6. taints not tolerated (``NoSchedule``/``NoExecute``);
7. the claim's constraints.

With ``max_solutions == 1`` the first complete solution wins (upstream). A
placement policy asks for more: the search then keeps going after a solution,
records up to ``max_solutions`` of them, and stops early once ``step_budget``
search steps have passed *after the first solution* (so a node is never
declared infeasible for lack of budget). Candidate order may be changed per
request by the policy (``order``); every order yields valid solutions.

The search is exhaustive and can take exponential time on adversarial input
(many devices, a constraint no combination meets). Like the scheduler's
filter timeout (``DRASchedulerFilterTimeout``, 10 s), ``timeout`` bounds one
node's search; running out aborts the allocation ("filter operation aborted").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from api import limits
from api.errors import CelEvaluationError
from api.quantity import Quantity
from api.resource_v1 import DeviceTaint, DeviceToleration
from dra_driver.allocator.capacity import consumed_amount, resolve_requests, violates_policy
from dra_driver.allocator.constraints import ConstraintState
from dra_driver.allocator.inventory import CounterKey, InventoryDevice, PoolGeneration
from dra_driver.allocator.pools import NodeView
from dra_driver.allocator.requests import ClaimPlan, RequestPlan, Selector
from dra_driver.allocator.snapshot import Snapshot

_SUCCESS: Final = 0
_FAIL: Final = 1
_LIMIT: Final = 2  # the claim would get more than 32 devices: backtrack harder

_ZERO: Final = Fraction(0)
#: The clock is read every 1024 search steps (a mask on the step count).
_CLOCK_EVERY: Final = 1023

#: A candidate order for one request: the node's candidates, rearranged.
CandidateOrder = Callable[[RequestPlan, Sequence[InventoryDevice]], Sequence[InventoryDevice]]


class SearchAbortedError(Exception):
    """The allocation must stop with an error for one claim (upstream returns an error).

    Raised for an ``All`` request over an incomplete or invalid pool, for a claim
    whose requests need more than 32 devices, and when an ``All`` request's
    devices cannot satisfy a constraint.
    """

    def __init__(self, claim: str, message: str) -> None:
        super().__init__(message)
        self.claim = claim
        self.message = message


@dataclass(slots=True)
class Pick:
    """One device chosen for one request (or subrequest)."""

    request: RequestPlan
    device: InventoryDevice
    #: Consumed capacity (every capacity) for multi-allocatable devices, else None.
    consumed: dict[str, Quantity] | None
    #: Whether this pick added the device's counter consumption.
    counted: bool


@dataclass(slots=True)
class Solution:
    """A complete assignment for all pending claims on one node."""

    picks: list[list[Pick]]
    #: Per claim, per request: index of the chosen alternative (0 for plain requests).
    chosen: list[list[int]]
    #: The scheduler's prioritized-list score (§1): per firstAvailable request 8 for
    #: the first subrequest ... 1 for the 8th; 0 when no request has subrequests.
    prioritized_score: int


def tolerates(toleration: DeviceToleration, taint: DeviceTaint) -> bool:
    """Whether one toleration tolerates one taint (upstream ToleratesTaint)."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    operator = toleration.operator or limits.TOLERATION_OPERATOR_EQUAL
    if operator == limits.TOLERATION_OPERATOR_EXISTS:
        return True
    if operator == limits.TOLERATION_OPERATOR_EQUAL:
        return (toleration.value or "") == (taint.value or "")
    return False


def selector_error(
    err: Exception,
    plan: RequestPlan,
    selector: Selector,
    device: InventoryDevice,
    *,
    of_class: bool,
) -> CelEvaluationError:
    """The error a failed selector evaluation aborts the allocation with.

    ``claim default/c: selector #0: CEL runtime error: no such key: model
    (device gpu.dra-driver.io/node-a/gpu-3)``, or ``class gpu: selector #1: ...``.
    """
    reason = err.reason if isinstance(err, CelEvaluationError) else str(err)
    owner = f"class {plan.device_class.name}" if of_class else f"claim {plan.claim_ref}"
    error = CelEvaluationError(reason, expression=selector.expression)
    error.args = (
        f"{owner}: selector #{selector.index}: CEL runtime error: {reason} (device {device.id})",
    )
    return error


def evaluate(selector: Selector, device: InventoryDevice) -> bool | Exception:
    """The selector's result on the device, cached on the device per expression."""
    cached = device.matches.get(selector.expression)
    if cached is None:
        try:
            cached = bool(selector.program.evaluate(device.cel))
        except CelEvaluationError as err:
            cached = err
        device.matches[selector.expression] = cached
    return cached


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
        # Search state.
        self._allocating: dict[str, set[int]] = {}
        self._flight_capacity: dict[str, dict[str, Fraction]] = {}
        self._flight_shares: dict[str, int] = {}
        self._flight_counters: dict[PoolGeneration, dict[CounterKey, Fraction]] = {}
        self._overcommitted: dict[PoolGeneration, bool] = {}
        self._picks: list[list[Pick]] = [[] for _ in claims]
        self._chosen: list[list[int]] = [[0 for _ in c.groups] for c in claims]
        self._constraints: list[list[ConstraintState]] = [
            [ConstraintState(c) for c in claim.constraints] for claim in claims
        ]
        self._num: dict[int, int] = {}
        self._all: dict[int, list[InventoryDevice]] = {}
        self._candidates: dict[int, Sequence[InventoryDevice]] = {}

    # -- entry point ------------------------------------------------------------------

    def run(self) -> list[Solution]:
        """Search; return the solutions found (empty: the node cannot fit the claims).

        Raises CelEvaluationError when a selector fails on a device the search
        reaches, SearchAbortedError for the upstream errors listed there.
        """
        if self.timeout is not None:
            self._deadline = time.monotonic() + self.timeout
        self._prepare()
        self._one(0, 0, 0, 0, False, 0)
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
                    if self.selectable(plan, device) and self.capacity(plan, device) is not None:
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
        if not self.steps & _CLOCK_EVERY and self._deadline is not None:
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
        if len(self._picks[ci]) + num - di > limits.ALLOCATION_RESULTS_MAX:
            return _LIMIT
        if plan.all_devices:
            device = self._all[key][di]
            if self.in_use(ci, plan, device):
                return _FAIL
            pick = self._reserve(ci, plan, device, must=True)
            if pick is None:
                return _FAIL
            result = self._one(ci, ri, si, di + 1, in_sub, 0)
            if result != _SUCCESS:
                self._unreserve(ci, pick)
            return result
        candidates = self._candidates.get(key)
        if candidates is None:
            candidates = self.candidates(plan)
            self._candidates[key] = candidates
        for position in range(start, len(candidates)):
            device = candidates[position]
            if self.in_use(ci, plan, device) or not self.selectable(plan, device):
                continue
            pick = self._reserve(ci, plan, device, must=False)
            if pick is None:
                continue
            result = self._one(ci, ri, si, di + 1, in_sub, position + 1)
            if result == _SUCCESS:
                return _SUCCESS
            self._unreserve(ci, pick)
            if result == _LIMIT:
                return _LIMIT
        return _FAIL

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
            Solution([list(p) for p in self._picks], [list(c) for c in self._chosen], score)
        )
        return _SUCCESS if len(self.solutions) >= self.max_solutions else _FAIL

    def candidates(self, plan: RequestPlan) -> Sequence[InventoryDevice]:
        """Candidate devices of the node for an ExactCount request, in search order."""
        if self.order is None:
            return self.view.candidates
        return self.order(plan, self.view.candidates)

    # -- per-device checks (also used by the explainer) --------------------------------

    def in_use(self, ci: int, plan: RequestPlan, device: InventoryDevice) -> bool:
        """§5.1: allocated, or picked earlier in this search (admin: only by this claim)."""
        flight = self._allocating.get(device.id)
        if plan.admin_access:
            return flight is not None and ci in flight
        return bool(flight) or self.snapshot.in_use(device.id)

    def selectable(self, plan: RequestPlan, device: InventoryDevice) -> bool:
        """§5.3-§5.4: class and request selectors, then per-device node selection."""
        for selector in plan.device_class.selectors:
            result = evaluate(selector, device)
            if result is True:
                continue
            if result is False:
                return False
            raise selector_error(result, plan, selector, device, of_class=True)
        for selector in plan.selectors:
            result = evaluate(selector, device)
            if result is True:
                continue
            if result is False:
                return False
            raise selector_error(result, plan, selector, device, of_class=False)
        return not (device.slice.per_device and device.id in self.view.off_node)

    def capacity(self, plan: RequestPlan, device: InventoryDevice) -> dict[str, Quantity] | None:
        """§5.5: what the request consumes of each capacity, or None when it does not fit.

        An empty dict means "fits, nothing to record" (an exclusive device and
        no capacity requests).
        """
        requests = plan.capacity_requests
        if requests is None and not device.multi:
            return {}
        resolved = resolve_requests(requests or {}, device.capacity, device.driver)
        if resolved is None:
            return None
        aggregated = self.snapshot.aggregated(device.id)
        flight = self._flight_capacity.get(device.id)
        consumed: dict[str, Quantity] = {}
        for name, entry in device.capacity.items():
            amount = consumed_amount(resolved.get(name), entry.capacity)
            if amount.value < 0 or violates_policy(amount, entry.capacity.request_policy):
                return None
            total = amount.value + aggregated.get(name, _ZERO)
            if flight is not None:
                total += flight.get(name, _ZERO)
            if total > entry.total:
                return None
            consumed[name] = amount
        return consumed

    def counters_fit(self, device: InventoryDevice) -> bool:
        """§5.6 without side effects: would the device's counters stay >= 0?"""
        if not device.consumes or self._counters_skipped(device):
            return True
        generation = device.slice.pool_generation
        assert generation is not None
        available = self.snapshot.counters_available(generation)
        if self._is_overcommitted(generation, available):
            return False
        flight = self._flight_counters.get(generation, {})
        for counter, amount in device.consumes:
            limit = available.get(counter)
            if limit is not None and flight.get(counter, _ZERO) + amount > limit:
                return False
        return True

    def _counters_skipped(self, device: InventoryDevice) -> bool:
        # A multi-allocatable device pays its counters once, with its first share.
        return device.multi and bool(
            self.snapshot.share_count(device.id) or self._flight_shares.get(device.id)
        )

    def _is_overcommitted(
        self, generation: PoolGeneration, available: dict[CounterKey, Fraction]
    ) -> bool:
        known = self._overcommitted.get(generation)
        if known is None:
            known = any(value < 0 for value in available.values())
            self._overcommitted[generation] = known
        return known

    def tainted(self, plan: RequestPlan, device: InventoryDevice) -> bool:
        """§5.7: a NoSchedule/NoExecute taint that no toleration of the request tolerates."""
        for taint in device.blocking_taints:
            if not any(tolerates(t, taint) for t in plan.tolerations or ()):
                return True
        return False

    # -- picking and undoing ------------------------------------------------------------

    def _reserve(
        self, ci: int, plan: RequestPlan, device: InventoryDevice, *, must: bool
    ) -> Pick | None:
        consumed = self.capacity(plan, device)
        if consumed is None or not self.counters_fit(device) or self.tainted(plan, device):
            return None
        states = self._constraints[ci]
        for i, state in enumerate(states):
            if not state.add(plan, device):
                for previous in states[:i]:
                    previous.remove(plan)
                if must:
                    raise SearchAbortedError(
                        self.claims[ci].label,
                        f"claim {self.claims[ci].ref}, request {plan.full_name}: cannot add "
                        f"device {device.id} because a claim constraint would not be satisfied",
                    )
                return None
        counted = False
        if device.consumes and not self._counters_skipped(device):
            generation = device.slice.pool_generation
            assert generation is not None
            flight = self._flight_counters.setdefault(generation, {})
            for counter, amount in device.consumes:
                flight[counter] = flight.get(counter, _ZERO) + amount
            counted = True
        if device.multi:
            flight_capacity = self._flight_capacity.setdefault(device.id, {})
            for name, quantity in consumed.items():
                flight_capacity[name] = flight_capacity.get(name, _ZERO) + quantity.value
            self._flight_shares[device.id] = self._flight_shares.get(device.id, 0) + 1
        else:
            self._allocating.setdefault(device.id, set()).add(ci)
        pick = Pick(plan, device, consumed if device.multi else None, counted)
        self._picks[ci].append(pick)
        return pick

    def _unreserve(self, ci: int, pick: Pick) -> None:
        device, plan = pick.device, pick.request
        for state in self._constraints[ci]:
            state.remove(plan)
        if pick.counted:
            generation = device.slice.pool_generation
            assert generation is not None
            flight = self._flight_counters[generation]
            for counter, amount in device.consumes:
                flight[counter] -= amount
        if device.multi:
            flight_capacity = self._flight_capacity[device.id]
            for name, quantity in (pick.consumed or {}).items():
                flight_capacity[name] -= quantity.value
            self._flight_shares[device.id] -= 1
        else:
            self._allocating[device.id].discard(ci)
        self._picks[ci].pop()
