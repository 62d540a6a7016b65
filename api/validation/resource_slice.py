"""ResourceSlice validation: the pool and node selection of the spec, each device
(attributes, capacity and its request policy, counter consumption, taints, binding
conditions) and the shared counter sets, with the per-slice limits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from api import limits
from api.quantity import Quantity
from api.resource_v1 import (
    Counter,
    CounterSet,
    Device,
    DeviceAttribute,
    DeviceCapacity,
    DeviceCounterConsumption,
    DeviceTaint,
    ResourceSlice,
    ResourceSliceSpec,
    parse_version,
)
from api.validation._common import (
    Errors,
    Path,
    _duplicates,
    _error,
    _not_supported,
    _required,
    _too_many,
)
from api.validation.metadata import _check_metadata
from api.validation.names import (
    _check_driver_name,
    _check_k8s_qualified_name,
    _check_label,
    _check_label_value,
    _check_pool_name,
    _check_qualified_attribute_name,
)
from api.validation.node import _check_node_selection


def validate_resource_slice(slice_: ResourceSlice) -> Errors:
    """Errors the API server would report for this ResourceSlice."""
    errors: Errors = []
    _check_metadata(errors, slice_.metadata, namespaced=False)
    _check_slice_spec(errors, ("spec",), slice_.spec)
    return errors


def _uses_advanced_features(device: Device) -> bool:
    if device.taints or device.consumes_counters:
        return True
    return any(
        a.ints is not None or a.bools is not None or a.strings is not None or a.versions is not None
        for a in (device.attributes or {}).values()
    )


def _check_slice_spec(errors: Errors, path: Path, spec: ResourceSliceSpec) -> None:
    _check_driver_name(errors, (*path, "driver"), spec.driver)
    _check_pool_name(errors, (*path, "pool", "name"), spec.pool.name)
    if spec.pool.generation < 0:
        _error(errors, (*path, "pool", "generation"), "must be greater than or equal to 0")
    if spec.pool.resource_slice_count <= 0:
        _error(errors, (*path, "pool", "resourceSliceCount"), "must be greater than zero")
    _check_node_selection(errors, path, spec)
    devices = spec.devices or []
    counter_sets = spec.shared_counters or []
    if devices and counter_sets:
        _error(errors, path, "only one of `sharedCounters` or `devices` is allowed")

    limit = limits.MAX_DEVICES_PER_SLICE
    if any(_uses_advanced_features(d) for d in devices):
        limit = limits.MAX_DEVICES_PER_SLICE_WITH_ADVANCED
    if len(devices) > limit:
        why = (
            " when any device uses taints, consumesCounters or list-typed attributes"
            if limit == limits.MAX_DEVICES_PER_SLICE_WITH_ADVANCED
            else ""
        )
        _too_many(errors, (*path, "devices"), len(devices), limit, "devices", why=why)
    per_device = spec.per_device_node_selection is True
    for i, device in enumerate(devices):
        _check_device(errors, (*path, "devices", i), device, per_device_node_selection=per_device)
    for name in _duplicates(d.name for d in devices):
        _error(errors, (*path, "devices"), f'duplicate device name "{name}"')

    if len(counter_sets) > limits.MAX_COUNTER_SETS_PER_SLICE:
        _too_many(
            errors,
            (*path, "sharedCounters"),
            len(counter_sets),
            limits.MAX_COUNTER_SETS_PER_SLICE,
            "counter sets",
        )
    for i, counter_set in enumerate(counter_sets):
        _check_counter_set(errors, (*path, "sharedCounters", i), counter_set)
    for name in _duplicates(c.name for c in counter_sets):
        _error(errors, (*path, "sharedCounters"), f'duplicate counter set name "{name}"')


def _check_counters(
    errors: Errors, path: Path, counters: Mapping[str, Counter], limit: int
) -> None:
    if not counters:
        _required(errors, path, "at least one counter")
    if len(counters) > limit:
        _too_many(errors, path, len(counters), limit, "counters")
    for name, counter in counters.items():
        _check_label(errors, (*path, name), name, "counter name")
        if counter.value.sign() < 0:
            _error(errors, (*path, name, "value"), f"must not be negative, not {counter.value}")


def _check_counter_set(errors: Errors, path: Path, counter_set: CounterSet) -> None:
    _check_label(errors, (*path, "name"), counter_set.name, "counter set name")
    _check_counters(
        errors, (*path, "counters"), counter_set.counters, limits.MAX_COUNTERS_PER_COUNTER_SET
    )


def _check_consumption(errors: Errors, path: Path, consumption: DeviceCounterConsumption) -> None:
    _check_label(errors, (*path, "counterSet"), consumption.counter_set, "counter set name")
    _check_counters(
        errors, (*path, "counters"), consumption.counters, limits.MAX_COUNTERS_PER_CONSUMPTION
    )


def _check_device(
    errors: Errors, path: Path, device: Device, *, per_device_node_selection: bool
) -> None:
    _check_label(errors, (*path, "name"), device.name, "device name")
    attributes = device.attributes or {}
    capacity = device.capacity or {}

    if len(attributes) + len(capacity) > limits.MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE:
        _too_many(
            errors,
            path,
            len(attributes) + len(capacity),
            limits.MAX_ATTRIBUTES_AND_CAPACITIES_PER_DEVICE,
            "attributes and capacities (combined)",
        )
    values = 0
    for name, attribute in attributes.items():
        _check_qualified_attribute_name(errors, (*path, "attributes", name), name)
        values += _check_attribute(errors, (*path, "attributes", name), attribute)
    if values > limits.MAX_ATTRIBUTE_VALUES_PER_DEVICE:
        _too_many(
            errors,
            (*path, "attributes"),
            values,
            limits.MAX_ATTRIBUTE_VALUES_PER_DEVICE,
            "attribute values (list items count one each)",
        )
    for name, cap in capacity.items():
        _check_qualified_attribute_name(errors, (*path, "capacity", name), name)
        _check_capacity(
            errors,
            (*path, "capacity", name),
            cap,
            multiple=device.allow_multiple_allocations is True,
        )

    consumptions = device.consumes_counters or []
    if len(consumptions) > limits.MAX_COUNTER_CONSUMPTIONS_PER_DEVICE:
        _too_many(
            errors,
            (*path, "consumesCounters"),
            len(consumptions),
            limits.MAX_COUNTER_CONSUMPTIONS_PER_DEVICE,
            "counter consumptions",
        )
    for i, consumption in enumerate(consumptions):
        _check_consumption(errors, (*path, "consumesCounters", i), consumption)
    for name in _duplicates(c.counter_set for c in consumptions):
        _error(
            errors,
            (*path, "consumesCounters"),
            f'duplicate counter set "{name}": use one entry per counter set',
        )

    if per_device_node_selection:
        _check_node_selection(errors, path, device)
    else:
        for json_name, value in (
            ("nodeName", device.node_name),
            ("nodeSelector", device.node_selector),
            ("allNodes", device.all_nodes),
        ):
            if value is not None:
                _error(
                    errors,
                    (*path, json_name),
                    "only allowed when the slice sets perDeviceNodeSelection: true",
                )

    taints = device.taints or []
    if len(taints) > limits.DEVICE_TAINTS_MAX:
        _too_many(errors, (*path, "taints"), len(taints), limits.DEVICE_TAINTS_MAX, "taints")
    for i, taint in enumerate(taints):
        _check_taint(errors, (*path, "taints", i), taint)

    _check_binding_conditions(errors, path, device)


def _check_attribute(errors: Errors, path: Path, attribute: DeviceAttribute) -> int:
    """Check one attribute value; return how many values it counts for."""
    a = attribute
    scalars = (a.int_, a.bool_, a.string, a.version)
    lists = (a.ints, a.bools, a.strings, a.versions)
    scalar_count = 4 - scalars.count(None)
    list_count = 4 - lists.count(None)
    if scalar_count + list_count != 1:
        fields = a.set_fields()
        found = f"; found {', '.join(fields)}" if fields else ""
        _error(
            errors,
            path,
            "exactly one value is required: one of int, bool, string, version "
            f"(or ints, bools, strings, versions){found}",
        )
    if a.string is not None:
        _check_attribute_text(errors, (*path, "string"), a.string, version=False)
    if a.version is not None:
        _check_attribute_text(errors, (*path, "version"), a.version, version=True)
    if not list_count:
        return scalar_count
    count = scalar_count
    for json_name, items in zip(("ints", "bools", "strings", "versions"), lists, strict=True):
        if items is None:
            continue
        count += len(items)
        if not items:
            _required(errors, (*path, json_name), "a list attribute needs at least one value")
    for json_name, texts in (("strings", a.strings), ("versions", a.versions)):
        for i, item in enumerate(texts or []):
            _check_attribute_text(
                errors, (*path, json_name, i), item, version=json_name == "versions"
            )
    return count


def _check_attribute_text(errors: Errors, path: Path, text: str, *, version: bool) -> None:
    if len(text) > limits.DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH:
        _error(
            errors,
            path,
            f"too long: {len(text)} characters, at most "
            f"{limits.DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH} allowed",
        )
    if version:
        # Decoding checks this already; objects built in Python skip decoding.
        try:
            parse_version(text)
        except ValueError as err:
            _error(errors, path, str(err))


def _check_capacity(errors: Errors, path: Path, cap: DeviceCapacity, *, multiple: bool) -> None:
    if cap.value.sign() < 0:
        _error(errors, (*path, "value"), f"must not be negative, not {cap.value}")
    policy = cap.request_policy
    if policy is None:
        return
    ppath = (*path, "requestPolicy")
    if not multiple:
        _error(
            errors,
            ppath,
            "only allowed when the device sets allowMultipleAllocations: true",
        )
    value, default = cap.value, policy.default
    if default is not None and default > value:
        _error(errors, (*ppath, "default"), f"must not exceed the capacity value {value}")
    if policy.valid_values is not None and policy.valid_range is not None:
        _error(errors, ppath, "only one of `validValues` or `validRange` is allowed")
    if (policy.valid_values is not None or policy.valid_range is not None) and default is None:
        _required(errors, (*ppath, "default"), "when validValues or validRange is set")
    if policy.valid_values is not None:
        _check_valid_values(errors, (*ppath, "validValues"), policy.valid_values, value, default)
    if policy.valid_range is not None:
        rpath = (*ppath, "validRange")
        low, high, step = policy.valid_range.min, policy.valid_range.max, policy.valid_range.step
        if low.sign() < 0:
            _error(errors, (*rpath, "min"), f"must not be negative, not {low}")
        if low > value:
            _error(errors, (*rpath, "min"), f"must not exceed the capacity value {value}")
        if high is not None and high < low:
            _error(errors, (*rpath, "max"), f"must be at least min ({low})")
        if high is not None and high > value:
            _error(errors, (*rpath, "max"), f"must not exceed the capacity value {value}")
        if step is not None:
            if step.sign() <= 0:
                _error(errors, (*rpath, "step"), "must be greater than zero")
            elif low + step > value:
                _error(
                    errors,
                    (*rpath, "step"),
                    f"min + step ({low + step}) must not exceed the capacity value {value}",
                )
        if default is not None:
            if default < low or (high is not None and default > high):
                _error(errors, (*ppath, "default"), "must lie within validRange (min..max)")
            elif step is not None and step.sign() > 0 and (default.value - low.value) % step.value:
                _error(errors, (*ppath, "default"), "must be min plus a multiple of step")


def _check_valid_values(
    errors: Errors,
    path: Path,
    options: Sequence[Quantity],
    value: Quantity,
    default: Quantity | None,
) -> None:
    if not options:
        _required(errors, path, "at least one value")
    if len(options) > limits.CAPACITY_REQUEST_POLICY_DISCRETE_MAX_OPTIONS:
        _too_many(
            errors,
            path,
            len(options),
            limits.CAPACITY_REQUEST_POLICY_DISCRETE_MAX_OPTIONS,
            "valid values",
        )
    for i, option in enumerate(options):
        if i and option <= options[i - 1]:
            _error(errors, (*path, i), "values must be unique and in ascending order")
        if option > value:
            _error(errors, (*path, i), f"must not exceed the capacity value {value}")
    if default is not None and options and default not in options:
        _error(errors, path, f"must contain the default value {default}")


def _check_taint(errors: Errors, path: Path, taint: DeviceTaint) -> None:
    _check_k8s_qualified_name(errors, (*path, "key"), taint.key, "taint key")
    _check_label_value(errors, (*path, "value"), taint.value)
    if not taint.effect:
        _required(errors, (*path, "effect"), "one of " + ", ".join(limits.TAINT_EFFECTS))
    elif taint.effect not in limits.TAINT_EFFECTS:
        _not_supported(errors, (*path, "effect"), taint.effect, limits.TAINT_EFFECTS)


def _check_binding_conditions(errors: Errors, path: Path, device: Device) -> None:
    lists = (
        ("bindingConditions", device.binding_conditions, limits.BINDING_CONDITIONS_MAX),
        (
            "bindingFailureConditions",
            device.binding_failure_conditions,
            limits.BINDING_FAILURE_CONDITIONS_MAX,
        ),
    )
    for json_name, items, limit in lists:
        if not items:
            continue
        if len(items) > limit:
            _too_many(errors, (*path, json_name), len(items), limit, "conditions")
        for i, item in enumerate(items):
            _check_k8s_qualified_name(errors, (*path, json_name, i), item, "condition type")
        for dup in _duplicates(items):
            _error(errors, (*path, json_name), f'duplicate condition "{dup}"')
    conditions = device.binding_conditions or []
    failures = device.binding_failure_conditions or []
    if conditions and not failures:
        _required(errors, (*path, "bindingFailureConditions"), "when bindingConditions is set")
    if failures and not conditions:
        _required(errors, (*path, "bindingConditions"), "when bindingFailureConditions is set")
    for overlap in sorted(set(conditions) & set(failures)):
        _error(
            errors,
            (*path, "bindingFailureConditions"),
            f'"{overlap}" may not be both a binding condition and a binding failure condition',
        )
