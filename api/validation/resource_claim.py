"""ResourceClaim and ResourceClaimTemplate validation: the requests (exact and
firstAvailable), constraints, configs and tolerations of the spec, and the status
(allocation results, reservedFor, per-device status and network data).
"""

from __future__ import annotations

import json
import uuid
from ipaddress import ip_interface

from api import limits
from api.resource_v1 import (
    AllocatedDeviceStatus,
    AllocationResult,
    CapacityRequirements,
    DeviceClaim,
    DeviceSubRequest,
    DeviceToleration,
    ExactDeviceRequest,
    ResourceClaim,
    ResourceClaimSpec,
    ResourceClaimStatus,
    ResourceClaimTemplate,
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
from api.validation.device_class import _check_opaque, _check_selectors
from api.validation.metadata import _check_metadata
from api.validation.names import (
    _check_driver_name,
    _check_k8s_qualified_name,
    _check_label,
    _check_label_value,
    _check_pool_name,
    _check_qualified_attribute_name,
    _check_subdomain,
    is_dns1123_label,
)
from api.validation.node import _check_node_selector


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
