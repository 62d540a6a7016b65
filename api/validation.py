"""What the API server would reject: validation of decoded resource.k8s.io/v1 objects.

:func:`validate` returns every problem it finds as a :class:`FieldError` with a
JSON-name path (``spec.devices[3].attributes.index``) and a message that says
what is wrong and what is allowed. It does not stop at the first problem.

Out of scope, because the API server cannot see it in one object either:
cross-slice pool consistency (duplicate device names, counter sets named by
``consumesCounters``), whether a DeviceClass exists, and CEL compilation (the
caller compiles selectors; only emptiness and length are checked here).
Structural problems (wrong JSON types, a ``version`` that is not semver, a
malformed quantity) are reported earlier, by :func:`api.resource_v1.parse_object`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from ipaddress import ip_interface
from typing import Final, TypeAlias

from api import limits
from api.errors import FieldError, InvalidInputError
from api.quantity import Quantity
from api.resource_v1 import (
    AllocatedDeviceStatus,
    AllocationResult,
    CapacityRequirements,
    Counter,
    CounterSet,
    Device,
    DeviceAttribute,
    DeviceCapacity,
    DeviceClaim,
    DeviceClass,
    DeviceCounterConsumption,
    DeviceSelector,
    DeviceSubRequest,
    DeviceTaint,
    DeviceToleration,
    ExactDeviceRequest,
    K8sObject,
    Node,
    NodeSelector,
    NodeSelectorRequirement,
    ObjectMeta,
    OpaqueDeviceConfiguration,
    ResourceClaim,
    ResourceClaimSpec,
    ResourceClaimStatus,
    ResourceClaimTemplate,
    ResourceSlice,
    ResourceSliceSpec,
    describe,
    field_path,
    parse_version,
)

__all__ = [
    "ensure_valid",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "unsupported_value",
    "validate",
    "validate_device_class",
    "validate_node",
    "validate_resource_claim",
    "validate_resource_claim_template",
    "validate_resource_slice",
]

Path: TypeAlias = tuple[str | int, ...]
Errors: TypeAlias = list[FieldError]

_DNS1123_LABEL_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN_RE: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_C_IDENTIFIER_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Kubernetes "qualified name" (label keys, taint keys): [prefix/]name.
_QUALIFIED_NAME_PART_RE: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_LABEL_RULE: Final = (
    "a lowercase RFC 1123 label: at most 63 characters, lowercase alphanumerics "
    "or '-', starting and ending with an alphanumeric"
)
_DNS1123_SUBDOMAIN_RULE: Final = (
    "a lowercase RFC 1123 subdomain: at most 253 characters, dot-separated labels of "
    "lowercase alphanumerics or '-', each starting and ending with an alphanumeric"
)


# --- Errors --------------------------------------------------------------------------


def _error(errors: Errors, path: Path, message: str) -> None:
    errors.append(FieldError(field_path(path), message))


def _required(errors: Errors, path: Path, what: str = "") -> None:
    _error(errors, path, f"required{': ' + what if what else ''}")


def _too_many(
    errors: Errors, path: Path, count: int, limit: int, what: str, *, why: str = ""
) -> None:
    _error(errors, path, f"too many {what}: {count}, at most {limit} allowed{why}")


def unsupported_value(value: object, supported: Iterable[str]) -> str:
    """The message for an enumerated field with a value outside ``supported``."""
    shown = ", ".join(f'"{s}"' for s in supported)
    return f'unsupported value "{value}": supported values {shown}'


def _not_supported(errors: Errors, path: Path, value: object, supported: Iterable[str]) -> None:
    _error(errors, path, unsupported_value(value, supported))


def _duplicates(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for value in values:
        if value in seen and value not in dups:
            dups.append(value)
        seen.add(value)
    return dups


# --- Name rules ---------------------------------------------------------------------


def is_dns1123_label(value: str) -> bool:
    """RFC 1123 label: ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63 characters."""
    return len(value) <= limits.DNS1123_LABEL_MAX_LENGTH and bool(_DNS1123_LABEL_RE.match(value))


def is_dns1123_subdomain(value: str) -> bool:
    """RFC 1123 subdomain: dot-separated labels, at most 253 characters."""
    return len(value) <= limits.DNS1123_SUBDOMAIN_MAX_LENGTH and bool(
        _DNS1123_SUBDOMAIN_RE.match(value)
    )


def _check_label(errors: Errors, path: Path, value: str | None, what: str) -> None:
    if not value:
        _required(errors, path, f"{what}, {_DNS1123_LABEL_RULE}")
    elif not is_dns1123_label(value):
        _error(errors, path, f'invalid {what} "{value}": must be {_DNS1123_LABEL_RULE}')


def _check_subdomain(errors: Errors, path: Path, value: str | None, what: str) -> None:
    if not value:
        _required(errors, path, f"{what}, {_DNS1123_SUBDOMAIN_RULE}")
    elif not is_dns1123_subdomain(value):
        _error(errors, path, f'invalid {what} "{value}": must be {_DNS1123_SUBDOMAIN_RULE}')


def _driver_name_problem(value: str) -> str | None:
    if len(value) > limits.DRIVER_NAME_MAX_LENGTH:
        return f"must be at most {limits.DRIVER_NAME_MAX_LENGTH} characters, not {len(value)}"
    # Same rule as CSI driver names: a DNS subdomain once lower-cased.
    if not _DNS1123_SUBDOMAIN_RE.match(value.lower()):
        return "must be a DNS subdomain such as gpu.example.com"
    return None


def _check_driver_name(errors: Errors, path: Path, value: str | None) -> None:
    if not value:
        _required(errors, path, "driver name, a DNS subdomain such as gpu.example.com")
        return
    problem = _driver_name_problem(value)
    if problem:
        _error(errors, path, f'invalid driver name "{value}": {problem}')


def _check_pool_name(errors: Errors, path: Path, value: str | None) -> None:
    if not value:
        _required(errors, path, "pool name, one or more DNS subdomains separated by '/'")
        return
    if len(value) > limits.POOL_NAME_MAX_LENGTH:
        _error(
            errors,
            path,
            f"pool name too long: {len(value)} characters, at most "
            f"{limits.POOL_NAME_MAX_LENGTH} allowed",
        )
    elif not all(is_dns1123_subdomain(part) for part in value.split("/")):
        _error(
            errors,
            path,
            f'invalid pool name "{value}": must be one or more DNS subdomains separated by "/"',
        )


def _check_qualified_attribute_name(
    errors: Errors, path: Path, name: str, *, fully_qualified: bool = False
) -> None:
    """Attribute/capacity names: ``<C identifier>`` or ``<domain>/<C identifier>``."""
    for problem in _qualified_attribute_name_problems(name, fully_qualified):
        _error(errors, path, f'invalid name "{name}": {problem}')


@lru_cache(maxsize=1024)
def _qualified_attribute_name_problems(name: str, fully_qualified: bool) -> tuple[str, ...]:
    # Memoised: every device of a slice repeats the same few names.
    parts = name.split("/")
    if len(parts) > 2:
        return ('at most one "/" allowed (<domain>/<identifier>)',)
    problems: list[str] = []
    if len(parts) == 2:
        domain, ident = parts
        if not domain:
            problems.append('the domain before "/" is empty')
        elif len(domain) > limits.DEVICE_MAX_DOMAIN_LENGTH:
            problems.append(
                f"domain must be at most {limits.DEVICE_MAX_DOMAIN_LENGTH} characters, "
                f"not {len(domain)}"
            )
        elif (problem := _driver_name_problem(domain)) is not None:
            problems.append(f"domain {problem}")
    else:
        ident = name
        if fully_qualified:
            problems.append(
                f'must include the domain, e.g. "{limits.STANDARD_DOMAIN}/{name or "pcieRoot"}"'
            )
    if not ident:
        problems.append("the identifier is empty")
    elif len(ident) > limits.DEVICE_MAX_ID_LENGTH:
        problems.append(
            f"identifier must be at most {limits.DEVICE_MAX_ID_LENGTH} characters, not {len(ident)}"
        )
    elif not _C_IDENTIFIER_RE.match(ident):
        problems.append(
            "identifier must be a C identifier (letters, digits and '_', not starting with a digit)"
        )
    return tuple(problems)


def _k8s_qualified_name_problem(value: str) -> str | None:
    """Kubernetes label-key rule: ``[DNS subdomain/]name``, name at most 63 characters."""
    prefix, slash, name = value.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):
        return "the prefix before '/' must be a DNS subdomain"
    if not name or len(name) > limits.QUALIFIED_NAME_MAX_LENGTH:
        return f"the name part must be 1 to {limits.QUALIFIED_NAME_MAX_LENGTH} characters"
    if not _QUALIFIED_NAME_PART_RE.match(name):
        return (
            "the name part must consist of alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric"
        )
    return None


def _check_k8s_qualified_name(errors: Errors, path: Path, value: str | None, what: str) -> None:
    if not value:
        _required(errors, path, what)
    elif (problem := _k8s_qualified_name_problem(value)) is not None:
        _error(errors, path, f'invalid {what} "{value}": {problem}')


def _check_label_value(errors: Errors, path: Path, value: str | None) -> None:
    if not value:
        return
    if len(value) > limits.LABEL_VALUE_MAX_LENGTH or not _QUALIFIED_NAME_PART_RE.match(value):
        _error(
            errors,
            path,
            f'invalid value "{value}": must be at most {limits.LABEL_VALUE_MAX_LENGTH} '
            "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
        )


# --- Metadata -----------------------------------------------------------------------


def _check_metadata(errors: Errors, meta: ObjectMeta, *, namespaced: bool) -> None:
    path: Path = ("metadata",)
    if meta.name:
        _check_subdomain(errors, (*path, "name"), meta.name, "name")
    elif not meta.generate_name:
        _required(errors, (*path, "name"), "name or generateName")
    if namespaced and meta.namespace:
        _check_label(errors, (*path, "namespace"), meta.namespace, "namespace")
    elif not namespaced and meta.namespace:
        _error(errors, (*path, "namespace"), "not allowed: the object is cluster-scoped")


# --- Node selectors -------------------------------------------------------------------


def _check_requirement(
    errors: Errors, path: Path, req: NodeSelectorRequirement, *, field: bool
) -> None:
    values = req.values or []
    if not req.key:
        _required(errors, (*path, "key"))
    elif field and req.key != "metadata.name":
        _not_supported(errors, (*path, "key"), req.key, ["metadata.name"])
    elif not field and (problem := _k8s_qualified_name_problem(req.key)) is not None:
        _error(errors, (*path, "key"), f'invalid label key "{req.key}": {problem}')
    supported = ("In", "NotIn") if field else limits.NODE_SELECTOR_OPERATORS
    if req.operator not in supported:
        _not_supported(errors, (*path, "operator"), req.operator, supported)
    elif req.operator in ("In", "NotIn"):
        if not values:
            _required(errors, (*path, "values"), f"at least one value for operator {req.operator}")
        elif field and len(values) != 1:
            _error(errors, (*path, "values"), "must have exactly one value for a field selector")
    elif req.operator in ("Exists", "DoesNotExist"):
        if values:
            _error(errors, (*path, "values"), f"must be empty for operator {req.operator}")
    elif len(values) != 1 or not values[0].lstrip("-").isdigit():
        _error(errors, (*path, "values"), f"must be a single integer for operator {req.operator}")


def _check_node_selector(
    errors: Errors, path: Path, selector: NodeSelector, *, one_term: bool
) -> None:
    terms = selector.node_selector_terms
    if one_term and len(terms) != 1:
        _error(
            errors,
            (*path, "nodeSelectorTerms"),
            f"must have exactly one term, not {len(terms)}",
        )
    elif not terms:
        _required(errors, (*path, "nodeSelectorTerms"), "at least one term")
    for i, term in enumerate(terms):
        term_path = (*path, "nodeSelectorTerms", i)
        if not term.match_expressions and not term.match_fields:
            _required(errors, term_path, "matchExpressions or matchFields")
        for j, req in enumerate(term.match_expressions or []):
            _check_requirement(errors, (*term_path, "matchExpressions", j), req, field=False)
        for j, req in enumerate(term.match_fields or []):
            _check_requirement(errors, (*term_path, "matchFields", j), req, field=True)


def _check_node_selection(errors: Errors, path: Path, target: ResourceSliceSpec | Device) -> None:
    """Exactly one of nodeName, nodeSelector, allNodes (for a slice: or perDeviceNodeSelection)."""
    node_name, node_selector, all_nodes = target.node_name, target.node_selector, target.all_nodes
    names = ["nodeName", "nodeSelector", "allNodes"]
    chosen: list[str] = []
    if node_name is not None:
        chosen.append("nodeName")
        if not is_dns1123_subdomain(node_name):
            _error(
                errors,
                (*path, "nodeName"),
                f'invalid node name "{node_name}": must be a non-empty DNS subdomain',
            )
    if node_selector is not None:
        chosen.append("nodeSelector")
        _check_node_selector(errors, (*path, "nodeSelector"), node_selector, one_term=True)
    if all_nodes is not None:
        chosen.append("allNodes")
        if all_nodes is not True:
            _error(errors, (*path, "allNodes"), "must be true when set (or leave it unset)")
    if isinstance(target, ResourceSliceSpec):
        names.append("perDeviceNodeSelection")
        per_device = target.per_device_node_selection
        if per_device is not None:
            chosen.append("perDeviceNodeSelection")
            if per_device is not True:
                _error(
                    errors,
                    (*path, "perDeviceNodeSelection"),
                    "must be true when set (or leave it unset)",
                )
    if len(chosen) != 1:
        listed = ", ".join(f"`{n}`" for n in names)
        found = f"; found {', '.join(chosen)}" if chosen else ""
        _error(errors, path, f"exactly one of {listed} is required{found}")


# --- ResourceSlice ----------------------------------------------------------------------


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
    if taint.effect not in limits.TAINT_EFFECTS:
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


# --- DeviceClass ------------------------------------------------------------------------


def validate_device_class(device_class: DeviceClass) -> Errors:
    """Errors the API server would report for this DeviceClass."""
    errors: Errors = []
    _check_metadata(errors, device_class.metadata, namespaced=False)
    spec = device_class.spec
    _check_selectors(errors, ("spec", "selectors"), spec.selectors)
    configs = spec.config or []
    if len(configs) > limits.DEVICE_CLASS_CONFIG_MAX:
        _too_many(
            errors, ("spec", "config"), len(configs), limits.DEVICE_CLASS_CONFIG_MAX, "configs"
        )
    for i, config in enumerate(configs):
        _check_opaque(errors, ("spec", "config", i, "opaque"), config.opaque)
    if spec.extended_resource_name is not None:
        _check_extended_resource_name(
            errors, ("spec", "extendedResourceName"), spec.extended_resource_name
        )
    return errors


def _check_selectors(errors: Errors, path: Path, selectors: list[DeviceSelector] | None) -> None:
    selectors = selectors or []
    if len(selectors) > limits.DEVICE_SELECTORS_MAX:
        _too_many(errors, path, len(selectors), limits.DEVICE_SELECTORS_MAX, "selectors")
    for i, selector in enumerate(selectors):
        if selector.cel is None:
            _required(errors, (*path, i, "cel"), "a selector needs a CEL expression")
            continue
        expression = selector.cel.expression
        epath = (*path, i, "cel", "expression")
        if not expression.strip():
            _required(errors, epath, "a non-empty CEL expression")
        size = len(expression.encode())
        if size > limits.CEL_SELECTOR_EXPRESSION_MAX_LENGTH:
            _error(
                errors,
                epath,
                f"too long: {size} bytes, at most "
                f"{limits.CEL_SELECTOR_EXPRESSION_MAX_LENGTH} allowed",
            )


def _check_opaque(errors: Errors, path: Path, opaque: OpaqueDeviceConfiguration | None) -> None:
    if opaque is None:
        _required(errors, path, "an opaque configuration {driver, parameters}")
        return
    _check_driver_name(errors, (*path, "driver"), opaque.driver)
    # Raw size as the API server sees it: the compact JSON text.
    size = len(json.dumps(opaque.parameters, separators=(",", ":")).encode())
    if size > limits.OPAQUE_PARAMETERS_MAX_LENGTH:
        _error(
            errors,
            (*path, "parameters"),
            f"too large: {size} bytes, at most {limits.OPAQUE_PARAMETERS_MAX_LENGTH} allowed",
        )


def _check_extended_resource_name(errors: Errors, path: Path, name: str) -> None:
    domain, slash, _ = name.partition("/")
    problem = _k8s_qualified_name_problem(name)
    if problem is None and not slash:
        problem = "must have a domain prefix, e.g. example.com/gpu"
    if problem is None and (domain == "kubernetes.io" or domain.endswith(".kubernetes.io")):
        problem = "the kubernetes.io domains are reserved for native resources"
    if problem is not None:
        _error(errors, path, f'invalid extended resource name "{name}": {problem}')


# --- ResourceClaim ----------------------------------------------------------------------


def validate_resource_claim(claim: ResourceClaim) -> Errors:
    """Errors the API server would report for this ResourceClaim (spec and status)."""
    errors: Errors = []
    _check_metadata(errors, claim.metadata, namespaced=True)
    _check_claim_spec(errors, ("spec",), claim.spec)
    if claim.status is not None:
        _check_claim_status(errors, ("status",), claim.status)
    return errors


def validate_resource_claim_template(template: ResourceClaimTemplate) -> Errors:
    """Errors the API server would report for this ResourceClaimTemplate."""
    errors: Errors = []
    _check_metadata(errors, template.metadata, namespaced=True)
    meta = template.spec.metadata
    if meta is not None:
        allowed = {"labels", "annotations"}
        given = set(meta.model_dump(exclude_none=True, by_alias=True))
        for name in sorted(given - allowed):
            _error(
                errors,
                ("spec", "metadata", name),
                "not allowed: only labels and annotations may be set in a template",
            )
    _check_claim_spec(errors, ("spec", "spec"), template.spec.spec)
    return errors


def _request_refs(claim: DeviceClaim) -> tuple[set[str], set[str]]:
    """Valid references: request names, and ``request/subrequest`` pairs."""
    names: set[str] = set()
    pairs: set[str] = set()
    for request in claim.requests or []:
        names.add(request.name)
        for sub in request.first_available or []:
            pairs.add(f"{request.name}/{sub.name}")
    return names, pairs


def _check_refs(
    errors: Errors,
    path: Path,
    refs: list[str] | None,
    claim: DeviceClaim,
) -> None:
    refs = refs or []
    if len(refs) > limits.DEVICE_REQUESTS_MAX:
        _too_many(errors, path, len(refs), limits.DEVICE_REQUESTS_MAX, "request references")
    names, pairs = _request_refs(claim)
    for i, ref in enumerate(refs):
        if ref not in names and ref not in pairs:
            _error(
                errors,
                (*path, i),
                f'"{ref}" does not name a request of this claim '
                '(use "<request>" or "<request>/<subrequest>")',
            )
    for dup in _duplicates(refs):
        _error(errors, path, f'duplicate request reference "{dup}"')


def _check_claim_spec(errors: Errors, path: Path, spec: ResourceClaimSpec) -> None:
    claim = spec.devices
    if claim is None:
        return
    dpath = (*path, "devices")
    requests = claim.requests or []
    if len(requests) > limits.DEVICE_REQUESTS_MAX:
        _too_many(
            errors, (*dpath, "requests"), len(requests), limits.DEVICE_REQUESTS_MAX, "requests"
        )
    for i, request in enumerate(requests):
        rpath = (*dpath, "requests", i)
        _check_label(errors, (*rpath, "name"), request.name, "request name")
        if (request.exactly is None) == (request.first_available is None):
            _error(errors, rpath, "exactly one of `exactly` or `firstAvailable` is required")
        if request.exactly is not None:
            _check_exact_request(errors, (*rpath, "exactly"), request.exactly, subrequest=False)
        if request.first_available is not None:
            subs = request.first_available
            spath = (*rpath, "firstAvailable")
            if not subs:
                _required(errors, spath, "at least one subrequest")
            if len(subs) > limits.FIRST_AVAILABLE_DEVICE_REQUESTS_MAX:
                _too_many(
                    errors,
                    spath,
                    len(subs),
                    limits.FIRST_AVAILABLE_DEVICE_REQUESTS_MAX,
                    "subrequests",
                )
            for j, sub in enumerate(subs):
                _check_label(errors, (*spath, j, "name"), sub.name, "subrequest name")
                _check_exact_request(errors, (*spath, j), sub, subrequest=True)
            for dup in _duplicates(s.name for s in subs):
                _error(errors, spath, f'duplicate subrequest name "{dup}"')
    for dup in _duplicates(r.name for r in requests):
        _error(errors, (*dpath, "requests"), f'duplicate request name "{dup}"')

    constraints = claim.constraints or []
    if len(constraints) > limits.DEVICE_CONSTRAINTS_MAX:
        _too_many(
            errors,
            (*dpath, "constraints"),
            len(constraints),
            limits.DEVICE_CONSTRAINTS_MAX,
            "constraints",
        )
    for i, constraint in enumerate(constraints):
        cpath = (*dpath, "constraints", i)
        _check_refs(errors, (*cpath, "requests"), constraint.requests, claim)
        attrs = [
            (json_name, value)
            for json_name, value in (
                ("matchAttribute", constraint.match_attribute),
                ("distinctAttribute", constraint.distinct_attribute),
            )
            if value is not None
        ]
        if len(attrs) != 1:
            _error(
                errors,
                cpath,
                "exactly one of `matchAttribute` or `distinctAttribute` is required",
            )
        for json_name, value in attrs:
            _check_qualified_attribute_name(
                errors, (*cpath, json_name), value, fully_qualified=True
            )

    configs = claim.config or []
    if len(configs) > limits.DEVICE_CONFIG_MAX:
        _too_many(errors, (*dpath, "config"), len(configs), limits.DEVICE_CONFIG_MAX, "configs")
    for i, config in enumerate(configs):
        cpath = (*dpath, "config", i)
        _check_refs(errors, (*cpath, "requests"), config.requests, claim)
        _check_opaque(errors, (*cpath, "opaque"), config.opaque)


def _check_exact_request(
    errors: Errors, path: Path, request: ExactDeviceRequest | DeviceSubRequest, *, subrequest: bool
) -> None:
    """Fields shared by ExactDeviceRequest and DeviceSubRequest."""
    _check_subdomain(
        errors, (*path, "deviceClassName"), request.device_class_name, "device class name"
    )
    _check_selectors(errors, (*path, "selectors"), request.selectors)
    mode = request.allocation_mode or limits.ALLOCATION_MODE_EXACT_COUNT
    if mode not in limits.ALLOCATION_MODES:
        _not_supported(errors, (*path, "allocationMode"), mode, limits.ALLOCATION_MODES)
    elif mode == limits.ALLOCATION_MODE_EXACT_COUNT:
        if request.count is not None and request.count <= 0:
            _error(errors, (*path, "count"), f"must be greater than zero, not {request.count}")
    elif request.count is not None and request.count != 0:
        _error(errors, (*path, "count"), "must not be set when allocationMode is All")
    if subrequest:
        extra = request.model_extra or {}
        if "adminAccess" in extra:
            _error(errors, (*path, "adminAccess"), "not allowed on a firstAvailable subrequest")
    tolerations = request.tolerations or []
    if len(tolerations) > limits.DEVICE_TOLERATIONS_MAX:
        _too_many(
            errors,
            (*path, "tolerations"),
            len(tolerations),
            limits.DEVICE_TOLERATIONS_MAX,
            "tolerations",
        )
    for i, toleration in enumerate(tolerations):
        _check_toleration(errors, (*path, "tolerations", i), toleration)
    if request.capacity is not None:
        _check_capacity_requests(errors, (*path, "capacity"), request.capacity)


def _check_capacity_requests(errors: Errors, path: Path, capacity: CapacityRequirements) -> None:
    for name, amount in (capacity.requests or {}).items():
        _check_qualified_attribute_name(errors, (*path, "requests", name), name)
        if amount.sign() < 0:
            _error(errors, (*path, "requests", name), f"must not be negative, not {amount}")


def _check_toleration(errors: Errors, path: Path, toleration: DeviceToleration) -> None:
    operator = toleration.operator or limits.TOLERATION_OPERATOR_EQUAL
    if toleration.key:
        _check_k8s_qualified_name(errors, (*path, "key"), toleration.key, "toleration key")
    elif operator != limits.TOLERATION_OPERATOR_EXISTS:
        _error(
            errors,
            (*path, "operator"),
            'must be "Exists" when the key is empty (an empty key with Exists tolerates all)',
        )
    if operator not in limits.TOLERATION_OPERATORS:
        _not_supported(errors, (*path, "operator"), operator, limits.TOLERATION_OPERATORS)
    elif operator == limits.TOLERATION_OPERATOR_EXISTS and toleration.value:
        _error(errors, (*path, "value"), 'must be empty when the operator is "Exists"')
    else:
        _check_label_value(errors, (*path, "value"), toleration.value)
    effect = toleration.effect or ""
    if effect not in limits.TOLERATION_EFFECTS:
        _not_supported(errors, (*path, "effect"), effect, limits.TOLERATION_EFFECTS)
    if toleration.toleration_seconds is not None and effect != limits.TAINT_EFFECT_NO_EXECUTE:
        _error(
            errors,
            (*path, "tolerationSeconds"),
            'only allowed when the effect is "NoExecute"',
        )


def _check_claim_status(errors: Errors, path: Path, status: ResourceClaimStatus) -> None:
    allocation = status.allocation
    if allocation is not None:
        _check_allocation(errors, (*path, "allocation"), allocation)
    reserved = status.reserved_for or []
    if reserved and allocation is None:
        _error(errors, (*path, "reservedFor"), "may not be set while the claim is not allocated")
    if len(reserved) > limits.RESERVED_FOR_MAX:
        _too_many(
            errors, (*path, "reservedFor"), len(reserved), limits.RESERVED_FOR_MAX, "consumers"
        )
    for dup in _duplicates(r.uid for r in reserved):
        _error(errors, (*path, "reservedFor"), f'duplicate consumer uid "{dup}"')
    allocated = {
        (r.driver, r.pool, r.device, r.share_id)
        for r in ((allocation.devices.results or []) if allocation and allocation.devices else [])
    }
    for i, device in enumerate(status.devices or []):
        _check_device_status(errors, (*path, "devices", i), device, allocated)


def _check_allocation(errors: Errors, path: Path, allocation: AllocationResult) -> None:
    devices = allocation.devices
    results = (devices.results if devices else None) or []
    configs = (devices.config if devices else None) or []
    dpath = (*path, "devices")
    if len(results) > limits.ALLOCATION_RESULTS_MAX:
        _too_many(
            errors, (*dpath, "results"), len(results), limits.ALLOCATION_RESULTS_MAX, "results"
        )
    for i, result in enumerate(results):
        rpath = (*dpath, "results", i)
        request, _, sub = result.request.partition("/")
        if not is_dns1123_label(request) or (sub and not is_dns1123_label(sub)):
            _error(
                errors,
                (*rpath, "request"),
                f'invalid request reference "{result.request}": must be "<request>" or '
                '"<request>/<subrequest>", each a DNS label',
            )
        _check_driver_name(errors, (*rpath, "driver"), result.driver)
        _check_pool_name(errors, (*rpath, "pool"), result.pool)
        _check_label(errors, (*rpath, "device"), result.device, "device name")
        if result.share_id is not None and not _is_lowercase_uuid(result.share_id):
            _error(
                errors,
                (*rpath, "shareID"),
                f'invalid share ID "{result.share_id}": must be a lowercase RFC 4122 UUID',
            )
        for j, toleration in enumerate(result.tolerations or []):
            _check_toleration(errors, (*rpath, "tolerations", j), toleration)
    if len(configs) > limits.ALLOCATION_CONFIG_MAX:
        _too_many(errors, (*dpath, "config"), len(configs), limits.ALLOCATION_CONFIG_MAX, "configs")
    for i, config in enumerate(configs):
        cpath = (*dpath, "config", i)
        if config.source not in limits.CONFIG_SOURCES:
            _not_supported(errors, (*cpath, "source"), config.source, limits.CONFIG_SOURCES)
        _check_opaque(errors, (*cpath, "opaque"), config.opaque)
    if allocation.node_selector is not None:
        _check_node_selector(
            errors, (*path, "nodeSelector"), allocation.node_selector, one_term=False
        )


def _is_lowercase_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _check_device_status(
    errors: Errors,
    path: Path,
    device: AllocatedDeviceStatus,
    allocated: set[tuple[str, str, str, str | None]],
) -> None:
    if (device.driver, device.pool, device.device, device.share_id) not in allocated:
        _error(
            errors,
            path,
            f'device "{device.driver}/{device.pool}/{device.device}" is not in the '
            "allocation: status.devices may only describe allocated devices",
        )
    conditions = device.conditions or []
    if len(conditions) > limits.ALLOCATED_DEVICE_STATUS_MAX_CONDITIONS:
        _too_many(
            errors,
            (*path, "conditions"),
            len(conditions),
            limits.ALLOCATED_DEVICE_STATUS_MAX_CONDITIONS,
            "conditions",
        )
    if device.data is not None:
        size = len(json.dumps(device.data, separators=(",", ":")).encode())
        if size > limits.ALLOCATED_DEVICE_STATUS_DATA_MAX_LENGTH:
            _error(
                errors,
                (*path, "data"),
                f"too large: {size} bytes, at most "
                f"{limits.ALLOCATED_DEVICE_STATUS_DATA_MAX_LENGTH} allowed",
            )
    network = device.network_data
    if network is None:
        return
    npath = (*path, "networkData")
    for json_name, text, limit in (
        (
            "interfaceName",
            network.interface_name,
            limits.NETWORK_DEVICE_DATA_INTERFACE_NAME_MAX_LENGTH,
        ),
        (
            "hardwareAddress",
            network.hardware_address,
            limits.NETWORK_DEVICE_DATA_HARDWARE_ADDRESS_MAX_LENGTH,
        ),
    ):
        if text is not None and len(text.encode()) > limit:
            _error(errors, (*npath, json_name), f"too long: at most {limit} bytes allowed")
    ips = network.ips or []
    if len(ips) > limits.NETWORK_DEVICE_DATA_MAX_IPS:
        _too_many(errors, (*npath, "ips"), len(ips), limits.NETWORK_DEVICE_DATA_MAX_IPS, "IPs")
    for i, ip in enumerate(ips):
        try:
            valid = "/" in ip and ip_interface(ip) is not None
        except ValueError:
            valid = False
        if not valid:
            _error(
                errors,
                (*npath, "ips", i),
                f'invalid IP "{ip}": must be in CIDR form, e.g. 192.0.2.5/24',
            )
    for dup in _duplicates(ips):
        _error(errors, (*npath, "ips"), f'duplicate IP "{dup}"')


# --- Node and dispatch ----------------------------------------------------------------


def validate_node(node: Node) -> Errors:
    """A Node only needs a valid name here; the driver reads, never writes, nodes."""
    errors: Errors = []
    _check_subdomain(errors, ("metadata", "name"), node.metadata.name, "node name")
    return errors


def validate(obj: K8sObject) -> Errors:
    """Every error the API server would report for ``obj``; empty when it is valid."""
    if isinstance(obj, ResourceSlice):
        return validate_resource_slice(obj)
    if isinstance(obj, DeviceClass):
        return validate_device_class(obj)
    if isinstance(obj, ResourceClaim):
        return validate_resource_claim(obj)
    if isinstance(obj, ResourceClaimTemplate):
        return validate_resource_claim_template(obj)
    if isinstance(obj, Node):
        return validate_node(obj)
    raise TypeError(f"cannot validate {type(obj).__name__}")


def ensure_valid(obj: K8sObject, *, source: str = "") -> None:
    """Raise InvalidInputError naming ``obj`` and every offending field, if any."""
    errors = validate(obj)
    if errors:
        raise InvalidInputError(source=source, obj=describe(obj), errors=errors)
