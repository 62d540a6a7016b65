"""The devices in use: which claims hold which devices, and the counters they consume.

In use (spec/allocator.md §2), per device ``driver/pool/device``:

- exclusively, by every result of an allocated claim except results with
  ``adminAccess: true`` (admin access never blocks) and results with a
  ``shareID``;
- shared, by results with a ``shareID`` (consumable capacity); their
  ``consumedCapacity`` is summed per device and capacity;
- a device that is in use either way consumes its counters (§6).

Available counters per pool generation are computed on first use and then kept
up to date as devices are taken and released. Releasing devices (and a first
share, which lifts the counter check of a multi-allocatable device) moves the
node's release epoch (:mod:`.feasibility`); a change in a node's count of devices
in use re-sorts it in the policies' rankings (:mod:`.rankings`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from api.resource_v1 import ResourceClaim, describe
from dra_driver.allocator.capacity import qualify
from dra_driver.allocator.feasibility import Feasibility
from dra_driver.allocator.inventory import CounterKey, PoolGeneration, device_id
from dra_driver.allocator.pools import PoolIndex, PoolKey
from dra_driver.allocator.rankings import Rankings


@dataclass(frozen=True, slots=True)
class _Held:
    """One device a registered claim holds."""

    device: str
    driver: str
    pool: str
    name: str
    share: str | None  # share key for shared results, None for exclusive ones
    consumed: tuple[tuple[str, Fraction], ...]


class DeviceUsage:
    """The in-use state of one snapshot, by claim and by device."""

    def __init__(self, pools: PoolIndex, feasibility: Feasibility, rankings: Rankings) -> None:
        self._pools = pools
        self._feasibility = feasibility
        self._rankings = rankings
        self._held: dict[str, list[_Held]] = {}
        self._users: dict[str, list[str]] = {}
        self._shares: dict[str, dict[str, tuple[str, tuple[tuple[str, Fraction], ...]]]] = {}
        self._aggregated: dict[str, dict[str, Fraction]] = {}
        self._available: dict[PoolGeneration, dict[CounterKey, Fraction]] = {}
        #: Per pool generation: the used share of each counter set (policies' unit usage),
        #: dropped whenever the generation's available counters change.
        self._set_usage: dict[PoolGeneration, dict[str, float]] = {}
        self._node_used: dict[str, int] = {}
        self._share_serial = 0

    # -- claims ---------------------------------------------------------------------

    def add(self, claim: ResourceClaim) -> None:
        """Mark the devices of an allocated claim in use (replacing what it held before)."""
        label = describe(claim)
        if label in self._held:
            self.remove(claim)
        allocation = claim.status.allocation if claim.status is not None else None
        results = allocation.devices.results if allocation and allocation.devices else None
        held: list[_Held] = []
        for result in results or []:
            if result.admin_access:
                continue
            dev = device_id(result.driver, result.pool, result.device)
            consumed: tuple[tuple[str, Fraction], ...] = ()
            share: str | None = None
            if result.share_id is not None:
                self._share_serial += 1
                share = f"{label}#{self._share_serial}"
                consumed = tuple(
                    (qualify(name, result.driver), amount.value)
                    for name, amount in (result.consumed_capacity or {}).items()
                )
            item = _Held(dev, result.driver, result.pool, result.device, share, consumed)
            self._take(item, label)
            held.append(item)
        self._held[label] = held

    def remove(self, claim: ResourceClaim) -> None:
        """Release what :meth:`add` recorded for this claim; no-op if nothing."""
        label = describe(claim)
        held = self._held.pop(label, None)
        if not held:
            return
        released_global = False
        released_nodes: set[str] = set()
        for item in held:
            self._release(item, label)
            node = self._pools.pool_node(item.driver, item.pool)
            if node is None:
                released_global = True
            else:
                released_nodes.add(node)
        for node in sorted(released_nodes):
            self._feasibility.released(node)
        if released_global:
            self._feasibility.released(None)

    def _is_allocated(self, dev: str) -> bool:
        return dev in self._users or dev in self._shares

    def _take(self, item: _Held, label: str) -> None:
        was_allocated = self._is_allocated(item.device)
        if item.share is None:
            self._users.setdefault(item.device, []).append(label)
        else:
            shares = self._shares.setdefault(item.device, {})
            if not shares:
                # A first share lifts the counter check for a multi-allocatable
                # device (§5.6): that may make a node feasible again.
                self._feasibility.released(self._pools.pool_node(item.driver, item.pool))
            shares[item.share] = (label, item.consumed)
            totals = self._aggregated.setdefault(item.device, {})
            for name, amount in item.consumed:
                totals[name] = totals.get(name, Fraction(0)) + amount
        if not was_allocated:
            self._on_allocation_change(item, +1)

    def _release(self, item: _Held, label: str) -> None:
        if item.share is None:
            users = self._users.get(item.device)
            if users is None or label not in users:
                return
            users.remove(label)
            if not users:
                del self._users[item.device]
        else:
            shares = self._shares.get(item.device)
            if shares is None or item.share not in shares:
                return
            del shares[item.share]
            totals = self._aggregated[item.device]
            for name, amount in item.consumed:
                totals[name] -= amount
            if not shares:
                del self._shares[item.device]
                del self._aggregated[item.device]
        if not self._is_allocated(item.device):
            self._on_allocation_change(item, -1)

    def _on_allocation_change(self, item: _Held, sign: int) -> None:
        pool = self._pools.pool(item.driver, item.pool)
        if pool is None:
            return
        node = pool.node
        if node is not None:
            self._node_used[node] = self._node_used.get(node, 0) + sign
            self._rankings.changed(node)
        for generation in pool.generations.values():
            available = self._available.get(generation)
            if available is None:
                continue
            self._set_usage.pop(generation, None)
            record = generation.devices_by_name.get(item.name)
            if record is None:
                continue
            for key, amount in record.consumes:
                if key in available:
                    available[key] -= sign * amount

    # -- slice updates --------------------------------------------------------------

    def forget(self, generations: Iterable[PoolGeneration]) -> None:
        """These pool generations are gone: drop their available counters."""
        for generation in generations:
            self._available.pop(generation, None)
            self._set_usage.pop(generation, None)

    def recount(self, affected: set[PoolKey], old_nodes: Mapping[PoolKey, str | None]) -> None:
        """Move the in-use count of the allocated devices of ``affected`` pools to the
        node each pool is bound to now (the pool may be gone, or bound elsewhere)."""
        moved: dict[str, PoolKey] = {}
        for held in self._held.values():
            for item in held:
                key = (item.driver, item.pool)
                if key in affected:
                    moved[item.device] = key
        for key in moved.values():
            old = old_nodes.get(key)
            new = self._pools.pool_node(*key)
            if old == new:
                continue
            if old is not None:
                self._node_used[old] = self._node_used.get(old, 0) - 1
            if new is not None:
                self._node_used[new] = self._node_used.get(new, 0) + 1

    # -- queries --------------------------------------------------------------------

    def users(self, dev: str) -> list[str]:
        """Claims (``claim ns/name``) holding the device exclusively."""
        return self._users.get(dev, [])

    def in_use(self, dev: str) -> bool:
        """Whether the device is allocated exclusively (admin results excluded)."""
        return dev in self._users

    def share_count(self, dev: str) -> int:
        return len(self._shares.get(dev, ()))

    def share_holders(self, dev: str) -> list[str]:
        return [label for label, _ in self._shares.get(dev, {}).values()]

    def aggregated(self, dev: str) -> Mapping[str, Fraction]:
        """Summed ``consumedCapacity`` of the device's shares, by qualified capacity name."""
        return self._aggregated.get(dev, {})

    def node_usage(self, name: str | None) -> tuple[int, int]:
        """(devices in use, devices published) on a node, for placement policies."""
        if name is None:
            return 0, self._pools.view(None).published
        return self._node_used.get(name, 0), self._pools.view(name).published

    def counters_available(self, generation: PoolGeneration) -> dict[CounterKey, Fraction]:
        """Counters of the pool generation minus what allocated devices consume (§6).

        May be negative when the pool is over-committed; then nothing that
        consumes counters fits in the pool.
        """
        available = self._available.get(generation)
        if available is None:
            available = dict(generation.counter_totals)
            for name, record in generation.devices_by_name.items():
                dev = device_id(generation.driver, generation.pool, name)
                if not self._is_allocated(dev):
                    continue
                for key, amount in record.consumes:
                    if key in available:
                        available[key] -= amount
            self._available[generation] = available
        return available

    def counter_set_usage(self, generation: PoolGeneration) -> dict[str, float]:
        """Per counter set of the pool generation: the largest used share of any of its
        counters with a positive total (sets without one are absent).

        Kept until the generation's available counters change.
        """
        usage = self._set_usage.get(generation)
        if usage is None:
            available = self.counters_available(generation)
            usage = {}
            for key, total in generation.counter_totals.items():
                if total > 0:
                    level = float((total - available.get(key, total)) / total)
                    name = key[0]
                    previous = usage.get(name)
                    usage[name] = level if previous is None else max(previous, level)
            self._set_usage[generation] = usage
        return usage
