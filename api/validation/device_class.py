"""DeviceClass validation, and the two pieces claims share with it: CEL device
selectors (emptiness and size only, no compilation) and opaque driver configuration.
"""

from __future__ import annotations

import json

from api import limits
from api.resource_v1 import DeviceClass, DeviceSelector, OpaqueDeviceConfiguration
from api.validation._common import Errors, Path, _error, _required, _too_many
from api.validation.metadata import _check_metadata
from api.validation.names import _check_driver_name, _k8s_qualified_name_problem


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
