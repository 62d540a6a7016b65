"""Device conflicts: allocations that together take more of a device than it allows.

The allocator never hands out a device beyond what it allows, but two writers
that do not see each other's decisions can (the kube-scheduler and the
placement controller, each from its own view). :func:`device_conflicts`
looks at one allocated claim against a snapshot that holds every allocation
and says which of its devices are over-committed, and by whom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from api.resource_v1 import ResourceClaim, claim_key, describe
from dra_driver.allocator.inventory import InventoryDevice, PoolGeneration, device_id
from dra_driver.allocator.snapshot import Snapshot

__all__ = ["ConflictKind", "DeviceConflict", "device_conflicts"]


ConflictKind = Literal["exclusive", "capacity", "counters"]


@dataclass(frozen=True, slots=True)
class DeviceConflict:
    """One device of claim ``claim`` that other claims hold too.

    ``kind`` says how: ``exclusive`` (the device is held by another claim, one of
    the two holding it whole), ``capacity`` (shares whose consumed capacity sums
    to more than the device has), ``counters`` (partitions of one physical device
    that together consume more counters than the pool publishes).
    """

    #: ``namespace/name`` of the claim examined.
    claim: str
    #: ``driver/pool/device``.
    device: str
    kind: ConflictKind
    #: ``namespace/name`` of the other claims, sorted.
    others: tuple[str, ...]


def _claim_keys(labels: Sequence[str], own: str) -> tuple[str, ...]:
    """Snapshot holder labels (``claim ns/name``) other than ``own``, as claim keys."""
    return tuple(sorted({label.partition(" ")[2] for label in labels if label != own}))


def _device_record(
    snapshot: Snapshot, driver: str, pool: str, name: str
) -> tuple[InventoryDevice | None, PoolGeneration | None]:
    """The device as the allocator sees it (its pool's newest generation), if published."""
    view = snapshot.view(snapshot.pool_node(driver, pool))
    for pool_view in view.pools:
        generation = pool_view.generation
        if generation.driver == driver and generation.pool == pool:
            return generation.devices_by_name.get(name), generation
    return None, None


def device_conflicts(snapshot: Snapshot, claim: ResourceClaim) -> list[DeviceConflict]:
    """Devices of ``claim`` (allocated, and registered in ``snapshot``) that are
    allocated beyond what they allow, with the other claims involved.

    The snapshot's in-use state is the allocator's own (spec/allocator.md §2, §5.5,
    §6), so this finds exactly what the allocator would have refused had it seen
    both claims: a result with ``adminAccess`` never conflicts; an exclusive
    result conflicts with any other holder; a shared result (``shareID``)
    conflicts with an exclusive holder, or when the shares' consumed capacity
    exceeds the device's; any result conflicts when its pool's counters are
    over-committed by devices that consume the same counters.
    """
    label = describe(claim)
    key = claim_key(claim)
    allocation = claim.status.allocation if claim.status is not None else None
    devices = allocation.devices if allocation is not None else None
    found: list[DeviceConflict] = []
    for result in (devices.results if devices is not None else None) or []:
        if result.admin_access:
            continue
        dev = device_id(result.driver, result.pool, result.device)
        exclusive = _claim_keys(snapshot.users(dev), label)
        shares = _claim_keys(snapshot.share_holders(dev), label)
        record, generation = _device_record(snapshot, result.driver, result.pool, result.device)
        if result.share_id is None:
            if exclusive or shares:
                others = tuple(sorted({*exclusive, *shares}))
                found.append(DeviceConflict(key, dev, "exclusive", others))
        elif exclusive:
            found.append(DeviceConflict(key, dev, "exclusive", exclusive))
        elif shares and record is not None:
            consumed = snapshot.aggregated(dev)
            if any(consumed.get(name, 0) > entry.total for name, entry in record.capacity.items()):
                found.append(DeviceConflict(key, dev, "capacity", shares))
        if record is None or generation is None or not record.consumes:
            continue
        available = snapshot.counters_available(generation)
        short = {counter for counter, _ in record.consumes if available.get(counter, 0) < 0}
        if not short:
            continue
        holders: list[str] = []
        for other in generation.devices_by_name.values():
            if other.id != dev and any(counter in short for counter, _ in other.consumes):
                holders += snapshot.users(other.id) + snapshot.share_holders(other.id)
        others = _claim_keys(holders, label)
        if others:
            found.append(DeviceConflict(key, dev, "counters", others))
    return found
