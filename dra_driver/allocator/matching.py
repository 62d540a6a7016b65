"""Matching one candidate device to one request, and reserving the devices a search picks.

The checks, in the order a search applies them (spec/allocator.md §5):

1. in use (by an allocated claim, or earlier in this search) unless admin access;
2. class selectors, then request selectors (CEL; an error aborts everything);
3. per-device node selection;
4. capacity (consumable capacity, request policies);
5. counters of partitionable devices;
6. taints not tolerated (``NoSchedule``/``NoExecute``, the slice's and the
   DeviceTaintRules', :mod:`.taints`);
7. the claim's constraints.

A :class:`DeviceMatcher` answers them against the snapshot plus what its search
has reserved so far ("in flight": devices, consumed capacity, shares, counters),
and keeps the picks; :meth:`DeviceMatcher.reserve` and
:meth:`DeviceMatcher.unreserve` are the search's steps forward and back. The
explainer asks the same checks one by one, before any reservation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from api.errors import CelEvaluationError
from api.quantity import Quantity
from dra_driver.allocator.capacity import consumed_amount, resolve_requests, violates_policy
from dra_driver.allocator.constraints import ConstraintState
from dra_driver.allocator.inventory import CounterKey, InventoryDevice, PoolGeneration
from dra_driver.allocator.pools import NodeView
from dra_driver.allocator.requests import ClaimPlan, RequestPlan, Selector
from dra_driver.allocator.snapshot import Snapshot
from dra_driver.allocator.taints import untolerated

_ZERO: Final = Fraction(0)


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


class DeviceMatcher:
    """The per-device checks of one node's search, and the devices it has reserved."""

    def __init__(self, snapshot: Snapshot, view: NodeView, claims: Sequence[ClaimPlan]) -> None:
        self.snapshot = snapshot
        self.view = view
        self.claims = claims
        #: Per claim, the devices picked so far, in order.
        self.picks: list[list[Pick]] = [[] for _ in claims]
        self._allocating: dict[str, set[int]] = {}
        self._flight_capacity: dict[str, dict[str, Fraction]] = {}
        self._flight_shares: dict[str, int] = {}
        self._flight_counters: dict[PoolGeneration, dict[CounterKey, Fraction]] = {}
        self._overcommitted: dict[PoolGeneration, bool] = {}
        self._constraints: list[list[ConstraintState]] = [
            [ConstraintState(c) for c in claim.constraints] for claim in claims
        ]

    # -- per-device checks -------------------------------------------------------------

    def in_use(self, ci: int, plan: RequestPlan, device: InventoryDevice) -> bool:
        """§5.1: allocated, or picked earlier in this search (admin: only by this claim)."""
        flight = self._allocating.get(device.id)
        if plan.admin_access:
            return flight is not None and ci in flight
        return bool(flight) or self.snapshot.in_use(device.id)

    def taken(self, device_id: str) -> bool:
        """Whether this search has picked the (exclusive) device for some claim."""
        return bool(self._allocating.get(device_id))

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
        flight = self._flight_counters.get(generation)
        for counter, amount in device.consumes:
            limit = available.get(counter)
            if limit is None:
                continue
            # Nothing in flight (no entry) counts as zero: no Fraction sum to pay for it.
            held = flight.get(counter) if flight else None
            if (amount if held is None else held + amount) > limit:
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
        """§5.7: a NoSchedule/NoExecute taint (the slice's or a DeviceTaintRule's) that no
        toleration of the request tolerates."""
        return bool(device.blocking_taints) and (
            untolerated(device.blocking_taints, plan.tolerations) is not None
        )

    # -- picking and undoing ------------------------------------------------------------

    def reserve(
        self, ci: int, plan: RequestPlan, device: InventoryDevice, *, must: bool
    ) -> Pick | None:
        """Pick ``device`` for ``plan`` of claim ``ci`` if capacity, counters, taints and the
        claim's constraints allow (None: they do not); ``must`` (an ``All`` request) turns an
        unmet constraint into SearchAbortedError."""
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
                held = flight.get(counter)
                flight[counter] = amount if held is None else held + amount
            counted = True
        if device.multi:
            flight_capacity = self._flight_capacity.setdefault(device.id, {})
            for name, quantity in consumed.items():
                flight_capacity[name] = flight_capacity.get(name, _ZERO) + quantity.value
            self._flight_shares[device.id] = self._flight_shares.get(device.id, 0) + 1
        else:
            self._allocating.setdefault(device.id, set()).add(ci)
        pick = Pick(plan, device, consumed if device.multi else None, counted)
        self.picks[ci].append(pick)
        return pick

    def unreserve(self, ci: int, pick: Pick) -> None:
        """Undo the last :meth:`reserve` of claim ``ci``."""
        device, plan = pick.device, pick.request
        for state in self._constraints[ci]:
            state.remove(plan)
        if pick.counted:
            generation = device.slice.pool_generation
            assert generation is not None
            flight = self._flight_counters[generation]
            for counter, amount in device.consumes:
                left = flight[counter] - amount
                if left:
                    flight[counter] = left
                else:
                    del flight[counter]  # back to nothing in flight
        if device.multi:
            flight_capacity = self._flight_capacity[device.id]
            for name, quantity in (pick.consumed or {}).items():
                flight_capacity[name] -= quantity.value
            self._flight_shares[device.id] -= 1
        else:
            self._allocating[device.id].discard(ci)
        self.picks[ci].pop()
