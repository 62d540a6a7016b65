"""DeviceTaintRule validation, as the API server's ``ValidateDeviceTaintRule`` (1.37): the
name, the selector's driver, pool and device names, and the taint (the same rules as a
taint in a ResourceSlice).
"""

from __future__ import annotations

from api.resource_v1 import DeviceTaintRule
from api.validation._common import Errors
from api.validation.metadata import _check_metadata
from api.validation.names import _check_driver_name, _check_label, _check_pool_name
from api.validation.resource_slice import _check_taint


def validate_device_taint_rule(rule: DeviceTaintRule) -> Errors:
    """Errors the API server would report when this DeviceTaintRule is created."""
    errors: Errors = []
    _check_metadata(errors, rule.metadata, namespaced=False)
    selector = rule.spec.device_selector
    if selector is not None:
        path = ("spec", "deviceSelector")
        # A field that is set is checked, even when empty: "" names no driver.
        if selector.driver is not None:
            _check_driver_name(errors, (*path, "driver"), selector.driver)
        if selector.pool is not None:
            _check_pool_name(errors, (*path, "pool"), selector.pool)
        if selector.device is not None:
            _check_label(errors, (*path, "device"), selector.device, "device name")
    _check_taint(errors, ("spec", "taint"), rule.spec.taint)
    return errors
