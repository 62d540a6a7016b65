"""ResourceSlice models: the pool, the devices with their typed attributes,
capacities (and request policies), counter consumption and taints, and the shared
counter sets.
"""

from __future__ import annotations

from typing import TypeAlias

from pydantic import Field

from api import limits
from api.resource_v1.base import (
    K8sModel,
    QuantityField,
    Timestamp,
    _VersionString,
    parse_version,
)
from api.resource_v1.meta import K8sObject
from api.resource_v1.node import NodeSelector
from api.semver import Semver

#: What :attr:`DeviceAttribute.value` returns.
AttributeValue: TypeAlias = (
    int | bool | str | Semver | list[int] | list[bool] | list[str] | list[Semver]
)


class DeviceAttribute(K8sModel):
    """One typed attribute value; the API server requires exactly one field to be set.

    ``version`` must be a strict semantic version (checked on decoding); it is
    kept as text and :attr:`value` returns it as a :class:`Semver`. The list
    forms belong to the alpha ``DRAListTypeAttributes`` feature.
    """

    int_: int | None = Field(default=None, alias="int")
    bool_: bool | None = Field(default=None, alias="bool")
    string: str | None = None
    version: _VersionString | None = None
    ints: list[int] | None = None
    bools: list[bool] | None = None
    strings: list[str] | None = None
    versions: list[_VersionString] | None = None

    @property
    def value(self) -> AttributeValue:
        """The Python value of the one field that is set (first one set, if several).

        Raises ValueError when no field is set: :func:`api.validation.validate`
        reports such an attribute, so validated objects never raise.
        """
        if self.int_ is not None:
            return self.int_
        if self.bool_ is not None:
            return self.bool_
        if self.string is not None:
            return self.string
        if self.version is not None:
            return parse_version(self.version)
        if self.ints is not None:
            return self.ints
        if self.bools is not None:
            return self.bools
        if self.strings is not None:
            return self.strings
        if self.versions is not None:
            return [parse_version(v) for v in self.versions]
        raise ValueError("device attribute has no value: set one of int, bool, string, version")

    def set_fields(self) -> list[str]:
        """JSON names of the value fields that are set (exactly one when valid)."""
        return [
            json_name
            for json_name, present in (
                ("int", self.int_ is not None),
                ("bool", self.bool_ is not None),
                ("string", self.string is not None),
                ("version", self.version is not None),
                ("ints", self.ints is not None),
                ("bools", self.bools is not None),
                ("strings", self.strings is not None),
                ("versions", self.versions is not None),
            )
            if present
        ]


class CapacityRequestPolicyRange(K8sModel):
    min: QuantityField
    max: QuantityField | None = None
    step: QuantityField | None = None


class CapacityRequestPolicy(K8sModel):
    default: QuantityField | None = None
    valid_values: list[QuantityField] | None = None
    valid_range: CapacityRequestPolicyRange | None = None


class DeviceCapacity(K8sModel):
    value: QuantityField
    request_policy: CapacityRequestPolicy | None = None


class Counter(K8sModel):
    value: QuantityField


class CounterSet(K8sModel):
    name: str
    counters: dict[str, Counter]


class DeviceCounterConsumption(K8sModel):
    counter_set: str
    counters: dict[str, Counter]


class DeviceTaint(K8sModel):
    key: str
    value: str | None = None
    effect: str
    time_added: Timestamp | None = None


class Device(K8sModel):
    name: str
    attributes: dict[str, DeviceAttribute] | None = None
    capacity: dict[str, DeviceCapacity] | None = None
    consumes_counters: list[DeviceCounterConsumption] | None = None
    node_name: str | None = None
    node_selector: NodeSelector | None = None
    all_nodes: bool | None = None
    taints: list[DeviceTaint] | None = None
    binds_to_node: bool | None = None
    binding_conditions: list[str] | None = None
    binding_failure_conditions: list[str] | None = None
    allow_multiple_allocations: bool | None = None


class ResourcePool(K8sModel):
    name: str
    generation: int
    resource_slice_count: int


class ResourceSliceSpec(K8sModel):
    driver: str
    pool: ResourcePool
    node_name: str | None = None
    node_selector: NodeSelector | None = None
    all_nodes: bool | None = None
    per_device_node_selection: bool | None = None
    devices: list[Device] | None = None
    shared_counters: list[CounterSet] | None = None


class ResourceSlice(K8sObject):
    kind: str = limits.KIND_RESOURCE_SLICE
    spec: ResourceSliceSpec
