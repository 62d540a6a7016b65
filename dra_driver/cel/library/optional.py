"""CEL optional values: ``optional.of/none/ofNonZeroValue`` and the optional methods
``hasValue value orValue or``. (The ``.?`` and ``[?]`` syntax and the ``optMap``/
``optFlatMap`` macros are in the compiler.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from api.quantity import Quantity
from dra_driver.cel import runtime
from dra_driver.cel.runtime import OPTIONAL_NONE, CelOptional, EvalError, no_such_overload
from dra_driver.cel.types import BOOL, A, optional_of

if TYPE_CHECKING:
    from dra_driver.cel.library import Registry


def of(value: Any) -> CelOptional:
    return CelOptional(value)


def none() -> CelOptional:
    return OPTIONAL_NONE


def of_non_zero_value(value: Any) -> CelOptional:
    """``optional.of(value)`` unless ``value`` is its type's zero value (0, "", [], {},
    false, null...)."""
    t = type(value)
    if value is None:
        return OPTIONAL_NONE
    zero = (
        (t in (int, float, runtime.UInt, bool) and not value)
        or (t in (str, bytes) and not value)
        or (t in runtime.LIST_TYPES and not value)
        or (isinstance(value, Mapping) and not value)
        or (t is Quantity and value.sign() == 0)
    )
    return OPTIONAL_NONE if zero else CelOptional(value)


def _optional(function: str, value: Any, *others: Any) -> CelOptional:
    if type(value) is not CelOptional:
        raise no_such_overload(function, value, *others)
    return value


def has_value(value: Any) -> bool:
    return _optional("hasValue", value).present


def get_value(value: Any) -> Any:
    optional = _optional("value", value)
    if not optional.present:
        raise EvalError("optional.none() dereference")
    return optional.value


def or_value(value: Any, default: Any) -> Any:
    optional = _optional("orValue", value, default)
    return optional.value if optional.present else default


def or_optional(value: Any, other: Any) -> Any:
    optional = _optional("or", value, other)
    if optional.present:
        return optional
    if type(other) is not CelOptional:
        raise no_such_overload("or", value, other)
    return other


def register(registry: Registry) -> None:
    registry.define("optional.of", [((A,), optional_of(A))], impl=of)
    registry.define("optional.none", [((), optional_of(A))], impl=none)
    registry.define("optional.ofNonZeroValue", [((A,), optional_of(A))], impl=of_non_zero_value)
    opt = optional_of(A)
    for name, impl, signatures in (
        ("hasValue", has_value, [((opt,), BOOL)]),
        ("value", get_value, [((opt,), A)]),
        ("orValue", or_value, [((opt, A), A)]),
        ("or", or_optional, [((opt, opt), opt)]),
    ):
        registry.define(name, signatures, member=True, impl=impl, receivers=(CelOptional,))
