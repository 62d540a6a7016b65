"""Consumable capacity: how much of a device capacity one request consumes.

Rules (spec/allocator.md §5.5, resource-api.md §3.5):

- Capacity names are resolved against the device's driver: an unqualified name
  ``memory`` and ``<driver>/memory`` are the same capacity; when a device
  publishes both spellings the explicitly qualified entry wins.
- A request that names a capacity the device does not have makes the device
  ineligible (capacity requests are also a minimum filter on devices that are
  not shared).
- Consumed amount per capacity: the request rounded up by the request policy
  (``validRange``: to ``min`` and then to ``min + n*step``; ``validValues``: to
  the next listed value), or the request itself without a policy; when the
  request does not mention the capacity, the policy ``default``, else the whole
  capacity value.
- A consumed amount above ``validRange.max``, not on a step, or not one of the
  ``validValues`` violates the policy: the device is ineligible.

Values are exact (:class:`fractions.Fraction` inside :class:`api.quantity.Quantity`),
so the rounding needs no integer or milli-unit special cases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import NamedTuple

from api.quantity import Quantity
from api.resource_v1 import CapacityRequestPolicy, DeviceCapacity


class CapacityEntry(NamedTuple):
    """One capacity of a device, keyed elsewhere by its fully-qualified name."""

    #: The name as the device publishes it; results report consumption under it.
    published: str
    capacity: DeviceCapacity
    #: ``capacity.value`` as a fraction, for fast sums.
    total: Fraction


def qualify(name: str, driver: str) -> str:
    """The fully-qualified form of a capacity or attribute name of ``driver``'s device."""
    return name if "/" in name else f"{driver}/{name}"


def resolve_device_capacity(
    capacity: Mapping[str, DeviceCapacity] | None, driver: str
) -> dict[str, CapacityEntry]:
    """The device's capacities keyed by fully-qualified name, each counted once."""
    resolved: dict[str, CapacityEntry] = {}
    if not capacity:
        return resolved
    prefix = f"{driver}/"
    for name, cap in capacity.items():
        if name.startswith(prefix):
            resolved[name] = CapacityEntry(name, cap, cap.value.value)
    for name, cap in capacity.items():
        if name.startswith(prefix):
            continue
        key = qualify(name, driver)
        if key not in resolved:
            resolved[key] = CapacityEntry(name, cap, cap.value.value)
    return resolved


def resolve_requests(
    requests: Mapping[str, Quantity], capacity: Mapping[str, CapacityEntry], driver: str
) -> dict[str, Quantity] | None:
    """The requested amounts keyed by the device's fully-qualified capacity names.

    None when the device lacks a requested capacity, or when the request names
    one capacity twice (``memory`` and ``<driver>/memory``): such a device cannot
    satisfy the request.
    """
    resolved: dict[str, Quantity] = {}
    for name, amount in requests.items():
        key = qualify(name, driver)
        if key not in capacity or key in resolved:
            return None
        resolved[key] = amount
    return resolved


def consumed_amount(requested: Quantity | None, capacity: DeviceCapacity) -> Quantity:
    """What a request for ``requested`` (None: not mentioned) consumes of ``capacity``."""
    policy = capacity.request_policy
    if requested is None:
        if policy is not None and policy.default is not None:
            return policy.default
        return capacity.value
    if policy is None:
        return requested
    valid_range = policy.valid_range
    if valid_range is not None:
        low = valid_range.min
        if requested.value < low.value:
            return low
        step = valid_range.step
        if step is None or step.value <= 0:
            return requested
        steps = math.ceil((requested.value - low.value) / step.value)
        return Quantity(low.value + steps * step.value, step.format)
    if policy.valid_values:
        for valid in policy.valid_values:
            if requested.value <= valid.value:
                return valid
    return requested


def violates_policy(consumed: Quantity, policy: CapacityRequestPolicy | None) -> bool:
    """Whether consuming ``consumed`` breaks the request policy (the device is ineligible)."""
    if policy is None:
        return False
    if policy.default is not None and consumed.value == policy.default.value:
        return False
    valid_range = policy.valid_range
    if valid_range is not None:
        if valid_range.max is not None and consumed.value > valid_range.max.value:
            return True
        step = valid_range.step
        if step is not None and step.value > 0:
            return (consumed.value - valid_range.min.value) % step.value != 0
        return False
    if policy.valid_values:
        return all(consumed.value != valid.value for valid in policy.valid_values)
    return False
