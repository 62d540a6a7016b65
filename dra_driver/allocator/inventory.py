"""The allocator's view of ResourceSlices: slices, devices and pool generations.

Built once per :class:`~dra_driver.allocator.snapshot.Snapshot` from the
ResourceSlice models and never changed afterwards (the in-use state lives in the
snapshot). Work per device is deferred: a slice turns its devices into
:class:`InventoryDevice` objects the first time an allocation looks at it, so a
cluster of thousands of nodes costs little until a node is actually searched.

Identity: a device is ``<driver>/<pool>/<device>`` (:func:`device_id`), whatever
slice or generation publishes it; that string is also the form error messages
use (``gpu.dra-driver.io/node-a/gpu-3``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Final

from api.resource_v1 import (
    AttributeValue,
    CounterSet,
    Device,
    DeviceAttribute,
    ResourceSlice,
    describe,
)
from dra_driver.allocator.capacity import CapacityEntry, resolve_device_capacity
from dra_driver.allocator.nodes import (
    CompiledNodeSelector,
    NodeInfo,
    compile_node_selector,
    node_matches,
)
from dra_driver.allocator.taints import NO_RULES, AppliedTaint, TaintRules, blocking_taints

if TYPE_CHECKING:
    from dra_driver.cel import CelDevice

_NO_ATTRIBUTES: Final[Mapping[str, DeviceAttribute]] = {}

#: A counter of a pool generation: (counter set name, counter name).
CounterKey = tuple[str, str]


def device_id(driver: str, pool: str, device: str) -> str:
    """``driver/pool/device``: unique, since drivers and device names hold no ``/``."""
    return f"{driver}/{pool}/{device}"


class InventoryDevice:
    """One device of one slice, with what matching needs precomputed.

    ``matches`` caches selector results per CEL expression for this device (this
    pool generation): ``True``/``False``, or the evaluation error to re-raise
    each time a search reaches the device. ``policy_keys`` caches per-policy
    static sort keys.
    """

    __slots__ = (
        "_capacity",
        "_cel",
        "all_nodes",
        "attributes",
        "binding_conditions",
        "binding_failure_conditions",
        "binds_to_node",
        "blocking_taints",
        "consumes",
        "driver",
        "id",
        "matches",
        "model",
        "multi",
        "name",
        "node_name",
        "node_selector",
        "policy_keys",
        "pool",
        "slice",
    )

    def __init__(self, slice_: SliceRecord, model: Device, index: int) -> None:
        # Built for every device of every node a search visits, mostly to be
        # skipped as in use: keep this cheap (no work for absent fields).
        self.slice = slice_
        self.model = model
        self.driver: str = slice_.driver
        self.pool: str = slice_.pool
        self.name: str = model.name
        self.id: str = f"{slice_.driver}/{slice_.pool}/{model.name}"
        self.attributes: Mapping[str, DeviceAttribute] = model.attributes or _NO_ATTRIBUTES
        # Capacities are resolved on first use (:attr:`capacity`): ranking nodes by their
        # devices, or skipping devices in use, needs none.
        self._capacity: dict[str, CapacityEntry] | None = None if model.capacity else {}
        consumption = model.consumes_counters
        self.consumes: tuple[tuple[CounterKey, Fraction], ...] = ()
        if consumption:
            consumes: list[tuple[CounterKey, Fraction]] = []
            for c in consumption:
                name = c.counter_set
                for counter, amount in c.counters.items():
                    consumes.append(((name, counter), amount.value.value))
            self.consumes = tuple(consumes)
        rules = slice_.taint_rules
        #: NoSchedule/NoExecute taints: the slice's own, then the DeviceTaintRules'.
        self.blocking_taints: tuple[AppliedTaint, ...] = (
            blocking_taints(model.taints, rules, self.driver, self.pool, self.name)
            if model.taints or rules
            else ()
        )
        self.multi: bool = bool(model.allow_multiple_allocations)
        self.binds_to_node: bool = bool(model.binds_to_node)
        self.binding_conditions = model.binding_conditions
        self.binding_failure_conditions = model.binding_failure_conditions
        self.node_name: str | None = None
        self.all_nodes = False
        self.node_selector: CompiledNodeSelector | None = None
        if slice_.per_device:
            self.node_name = model.node_name or None
            self.all_nodes = bool(model.all_nodes)
            if model.node_selector is not None:
                self.node_selector = compile_node_selector(
                    model.node_selector,
                    obj=slice_.label,
                    path=f"spec.devices[{index}].nodeSelector",
                )
        self._cel: CelDevice | None = None
        self.matches: dict[str, bool | Exception] = {}
        self.policy_keys: dict[str, object] = {}

    @property
    def capacity(self) -> dict[str, CapacityEntry]:
        """The device's capacities by fully-qualified name (each counted once)."""
        resolved = self._capacity
        if resolved is None:
            resolved = resolve_device_capacity(self.model.capacity, self.driver)
            self._capacity = resolved
        return resolved

    def capacity_total(self, qualified: str) -> Fraction | None:
        """The value of one capacity by fully-qualified name, as :attr:`capacity` has it,
        without resolving the others: the qualified spelling wins over the unqualified one."""
        if self._capacity is not None:
            entry = self._capacity.get(qualified)
            return entry.total if entry is not None else None
        published = self.model.capacity or {}
        found = published.get(qualified)
        if found is None:
            domain, sep, identifier = qualified.partition("/")
            if sep and domain == self.driver and "/" not in identifier:
                found = published.get(identifier)
        return found.value.value if found is not None else None

    def available_on(self, node: NodeInfo | None) -> bool:
        """Per-device node selection (only meaningful in a perDeviceNodeSelection slice)."""
        return node_matches(node, self.node_name, self.all_nodes, self.node_selector)

    @property
    def cel(self) -> CelDevice:
        """The device as CEL selectors see it, built on first use."""
        if self._cel is None:
            from dra_driver.cel import build_cel_device

            values: dict[str, AttributeValue] = {}
            for name, attribute in self.attributes.items():
                if attribute.set_fields():
                    # An attribute without a value reads as missing.
                    values[name] = attribute.value
            self._cel = build_cel_device(
                self.driver,
                values,
                {name: cap.value for name, cap in (self.model.capacity or {}).items()},
                self.multi,
            )
        return self._cel

    def attribute(self, qualified: str) -> DeviceAttribute | None:
        """Look an attribute up by fully-qualified name, as constraints do.

        The fully-qualified key first; then, when the domain is the device's
        driver, the unqualified identifier.
        """
        found = self.attributes.get(qualified)
        if found is not None:
            return found
        domain, sep, identifier = qualified.partition("/")
        if sep and domain == self.driver:
            return self.attributes.get(identifier)
        return None

    def __repr__(self) -> str:
        return f"InventoryDevice({self.id})"


class SliceRecord:
    """One ResourceSlice: its node fields compiled, its devices built on first use.

    ``taint_rules`` are the snapshot's DeviceTaintRules: each device carries the taints of
    those that select it as if the slice published them.
    """

    __slots__ = (
        "_devices",
        "all_nodes",
        "driver",
        "generation",
        "label",
        "model",
        "name",
        "node_name",
        "node_selector",
        "per_device",
        "pool",
        "pool_generation",
        "slice_count",
        "taint_rules",
    )

    def __init__(self, model: ResourceSlice, taint_rules: TaintRules = NO_RULES) -> None:
        spec = model.spec
        self.model = model
        self.taint_rules = taint_rules
        self.label = describe(model)
        self.name: str = model.metadata.name or ""
        self.driver: str = spec.driver
        self.pool: str = spec.pool.name
        self.generation: int = spec.pool.generation
        self.slice_count: int = spec.pool.resource_slice_count
        self.node_name: str | None = spec.node_name or None
        self.all_nodes = bool(spec.all_nodes)
        self.per_device = bool(spec.per_device_node_selection)
        self.node_selector: CompiledNodeSelector | None = (
            compile_node_selector(spec.node_selector, obj=self.label, path="spec.nodeSelector")
            if spec.node_selector is not None
            else None
        )
        self._devices: list[InventoryDevice] | None = None
        #: The cluster-wide generation this slice belongs to (set by PoolRecord.add).
        self.pool_generation: PoolGeneration | None = None
        if self.per_device:
            # Compile the devices' own node selectors now: a bad one is reported
            # when the snapshot is built, not in the middle of an allocation.
            _ = self.devices

    @property
    def has_devices(self) -> bool:
        return bool(self.model.spec.devices)

    @property
    def counter_sets(self) -> list[CounterSet]:
        return self.model.spec.shared_counters or []

    @property
    def devices(self) -> list[InventoryDevice]:
        if self._devices is None:
            self._devices = [
                InventoryDevice(self, device, i)
                for i, device in enumerate(self.model.spec.devices or [])
            ]
        return self._devices

    def relevant_for(self, node: NodeInfo | None) -> bool:
        """Whether a search on ``node`` looks at this slice (§3.1).

        Slices with shared counters always are; per-device selection needs one
        device available on the node; a slice with no known mode never is.
        """
        if self.model.spec.shared_counters:
            return True
        if self.node_name or self.all_nodes or self.node_selector is not None:
            return node_matches(node, self.node_name, self.all_nodes, self.node_selector)
        if self.per_device:
            return any(device.available_on(node) for device in self.devices)
        return False

    def __repr__(self) -> str:
        return f"SliceRecord({self.name}, gen {self.generation})"


@dataclass(eq=False)
class PoolGeneration:
    """All slices of one pool at one generation, cluster-wide.

    Validity and shared counters are properties of the whole generation: a
    device may consume counters published in a slice that targets another node.
    """

    driver: str
    pool: str
    generation: int
    slices: list[SliceRecord] = field(default_factory=list)
    _invalid: str | None = None
    _checked: bool = False
    _totals: dict[CounterKey, Fraction] | None = None
    _devices_by_name: dict[str, InventoryDevice] | None = None

    @property
    def label(self) -> str:
        return f"{self.driver}/{self.pool}"

    @property
    def invalid_reason(self) -> str | None:
        """Why the pool is invalid (§3.4), or None.

        Duplicate device names, duplicate counter-set names, or a device
        consuming a counter set or counter the pool does not publish.
        """
        if not self._checked:
            self._checked = True
            self._invalid = self._find_problem()
        return self._invalid

    def _find_problem(self) -> str | None:
        names: set[str] = set()
        for slice_ in self.slices:
            for device in slice_.model.spec.devices or []:
                if device.name in names:
                    return f"duplicate device name {device.name}"
                names.add(device.name)
        sets: dict[str, set[str]] = {}
        for slice_ in self.slices:
            for counter_set in slice_.counter_sets:
                if counter_set.name in sets:
                    return f"duplicate counter set name {counter_set.name}"
                sets[counter_set.name] = set(counter_set.counters)
        for slice_ in self.slices:
            for device in slice_.model.spec.devices or []:
                for consumption in device.consumes_counters or []:
                    counters = sets.get(consumption.counter_set)
                    if counters is None:
                        return (
                            f"device {device.name} consumes counters of counter set "
                            f"{consumption.counter_set}, which is not defined in the pool"
                        )
                    for counter in consumption.counters:
                        if counter not in counters:
                            return (
                                f"device {device.name} consumes counter {counter} of counter "
                                f"set {consumption.counter_set}, which does not define it"
                            )
        return None

    @property
    def counter_totals(self) -> dict[CounterKey, Fraction]:
        """Every counter the pool's counter sets publish, with its full value."""
        if self._totals is None:
            self._totals = {
                (counter_set.name, name): counter.value.value
                for slice_ in self.slices
                for counter_set in slice_.counter_sets
                for name, counter in counter_set.counters.items()
            }
        return self._totals

    @property
    def devices_by_name(self) -> dict[str, InventoryDevice]:
        """Every device of the generation (all slices, all nodes) by name."""
        if self._devices_by_name is None:
            self._devices_by_name = {}
            for slice_ in self.slices:
                for device in slice_.devices:
                    self._devices_by_name.setdefault(device.name, device)
        return self._devices_by_name

    @property
    def has_binding_conditions(self) -> bool:
        return any(
            device.binding_conditions
            for slice_ in self.slices
            for device in slice_.model.spec.devices or []
        )


@dataclass(eq=False)
class PoolRecord:
    """One pool (driver, name) across all its generations."""

    driver: str
    pool: str
    generations: dict[int, PoolGeneration] = field(default_factory=dict)
    #: Node every slice of the pool is bound to, or None (shared / node-independent).
    node: str | None = None
    _node_set: bool = False

    @property
    def newest(self) -> int:
        return max(self.generations)

    def add(self, slice_: SliceRecord) -> None:
        generation = self.generations.get(slice_.generation)
        if generation is None:
            generation = PoolGeneration(self.driver, self.pool, slice_.generation)
            self.generations[slice_.generation] = generation
        generation.slices.append(slice_)
        slice_.pool_generation = generation
        if not self._node_set:
            self._node_set = True
            self.node = slice_.node_name
        elif self.node != slice_.node_name:
            self.node = None
