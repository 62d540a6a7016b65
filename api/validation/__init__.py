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

Layout: one module per object kind (:mod:`.resource_slice`, :mod:`.device_class`,
:mod:`.resource_claim`, :mod:`.device_taint_rule`, :mod:`.node`, :mod:`.pod`), the rules
they share in :mod:`.names`, :mod:`.metadata` and :mod:`._common`. The public surface is
what this package exports; the underscore helpers are shared between its modules only.
"""

from __future__ import annotations

from api.errors import InvalidInputError
from api.resource_v1 import (
    DeviceClass,
    DeviceTaintRule,
    K8sObject,
    Node,
    Pod,
    ResourceClaim,
    ResourceClaimTemplate,
    ResourceSlice,
    describe,
)
from api.validation._common import Errors, unsupported_value
from api.validation.device_class import validate_device_class
from api.validation.device_taint_rule import validate_device_taint_rule
from api.validation.names import is_dns1123_label, is_dns1123_subdomain
from api.validation.node import validate_node
from api.validation.pod import (
    is_dra_extended_resource_name,
    is_extended_resource_name,
    is_native_resource_name,
    is_sidecar,
    validate_pod,
)
from api.validation.resource_claim import (
    validate_resource_claim,
    validate_resource_claim_template,
)
from api.validation.resource_slice import validate_resource_slice

__all__ = [
    "ensure_valid",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_dra_extended_resource_name",
    "is_extended_resource_name",
    "is_native_resource_name",
    "is_sidecar",
    "unsupported_value",
    "validate",
    "validate_device_class",
    "validate_device_taint_rule",
    "validate_node",
    "validate_pod",
    "validate_resource_claim",
    "validate_resource_claim_template",
    "validate_resource_slice",
]


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
    if isinstance(obj, DeviceTaintRule):
        return validate_device_taint_rule(obj)
    if isinstance(obj, Node):
        return validate_node(obj)
    if isinstance(obj, Pod):
        return validate_pod(obj)
    raise TypeError(f"cannot validate {type(obj).__name__}")


def ensure_valid(obj: K8sObject, *, source: str = "") -> None:
    """Raise InvalidInputError naming ``obj`` and every offending field, if any."""
    errors = validate(obj)
    if errors:
        raise InvalidInputError(source=source, obj=describe(obj), errors=errors)
