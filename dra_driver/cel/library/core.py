"""CEL's standard functions: operators, ``size``, string predicates, type conversions."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from api.limits import INT64_MAX, INT64_MIN
from api.quantity import Quantity
from dra_driver.cel import arithmetic, cost, runtime
from dra_driver.cel.cost import SCALAR, Shape
from dra_driver.cel.library import LIST_RECEIVERS, MAP_RECEIVERS
from dra_driver.cel.library.regex import estimate_regex, matches
from dra_driver.cel.runtime import (
    UINT64_MAX,
    EvalError,
    Frame,
    TypeValue,
    UInt,
    charge,
    no_such_overload,
    type_name,
)
from dra_driver.cel.types import (
    BOOL,
    BYTES,
    DOUBLE,
    DYN,
    INT,
    STRING,
    TYPE,
    UINT,
    A,
    B,
    CelType,
    list_of,
    map_of,
)

if TYPE_CHECKING:
    from dra_driver.cel.library import Registry

_INT_TEXT: Final = re.compile(r"[+-]?[0-9]+")
_UINT_TEXT: Final = re.compile(r"\+?[0-9]+")
_DOUBLE_TEXT: Final = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])"
)
_BOOL_TEXT: Final = {
    "1": True,
    "t": True,
    "T": True,
    "true": True,
    "TRUE": True,
    "True": True,
    "0": False,
    "f": False,
    "F": False,
    "false": False,
    "FALSE": False,
    "False": False,
}
_NUMERIC: Final = (INT, UINT, DOUBLE)


# -- size and string predicates ---------------------------------------------------------


def size(value: Any) -> int:
    """``size(x)``: characters (code points) of a string, bytes, entries of a list or map."""
    t = type(value)
    if t is str or t is bytes or t in runtime.LIST_TYPES or isinstance(value, Mapping):
        return len(value)
    raise no_such_overload("size", value)


def _strings(function: str, a: Any, b: Any) -> None:
    if type(a) is not str or type(b) is not str:
        raise no_such_overload(function, a, b)


def starts_with(frame: Frame, text: Any, prefix: Any) -> bool:
    _strings("startsWith", text, prefix)
    charge(frame, len(prefix) // 10)
    return bool(text.startswith(prefix))


def ends_with(frame: Frame, text: Any, suffix: Any) -> bool:
    _strings("endsWith", text, suffix)
    charge(frame, len(suffix) // 10)
    return bool(text.endswith(suffix))


def contains(frame: Frame, text: Any, part: Any) -> bool:
    _strings("contains", text, part)
    charge(frame, (len(text) * max(len(part), 1)) // 100)
    return part in text


# -- conversions ------------------------------------------------------------------------


def _conversion_error(target: str, value: Any) -> EvalError:
    return EvalError(f"type conversion error from '{type_name(value)}' to '{target}'")


def to_int(value: Any) -> int:
    t = type(value)
    if t is int:
        return value  # type: ignore[no-any-return]
    if t is UInt:
        if value > INT64_MAX:
            raise EvalError("range error converting uint to int")
        return int(value)
    if t is float:
        # Doubles convert by truncation; the bounds are those of int64 as doubles.
        if math.isnan(value) or not -9.223372036854775808e18 <= value < 9.223372036854775808e18:
            raise EvalError("range error converting double to int")
        return int(value)
    if t is str:
        if not _INT_TEXT.fullmatch(value):
            raise _conversion_error("int", value)
        number = int(value)
        if not INT64_MIN <= number <= INT64_MAX:
            raise EvalError(f"range error converting string {value!r} to int")
        return number
    raise no_such_overload("int", value)


def to_uint(value: Any) -> UInt:
    t = type(value)
    if t is UInt:
        return value  # type: ignore[no-any-return]
    if t is int:
        if value < 0:
            raise EvalError("range error converting int to uint")
        return UInt(value)
    if t is float:
        if math.isnan(value) or not 0 <= value < 1.8446744073709552e19:
            raise EvalError("range error converting double to uint")
        return UInt(int(value))
    if t is str:
        if not _UINT_TEXT.fullmatch(value):
            raise _conversion_error("uint", value)
        number = int(value)
        if number > UINT64_MAX:
            raise EvalError(f"range error converting string {value!r} to uint")
        return UInt(number)
    raise no_such_overload("uint", value)


def to_double(value: Any) -> float:
    t = type(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is int or t is UInt:
        return float(value)
    if t is Quantity:
        # Reachable through dyn only, as upstream's Quantity converts to double.
        return value.as_approximate_float()  # type: ignore[no-any-return]
    if t is str:
        if not _DOUBLE_TEXT.fullmatch(value):
            raise _conversion_error("double", value)
        try:
            return float(value)
        except (ValueError, OverflowError):
            raise _conversion_error("double", value) from None
    raise no_such_overload("double", value)


def to_string(value: Any) -> str:
    return runtime.to_text(value)


def to_bool(value: Any) -> bool:
    t = type(value)
    if t is bool:
        return value  # type: ignore[no-any-return]
    if t is str:
        parsed = _BOOL_TEXT.get(value)
        if parsed is None:
            raise _conversion_error("bool", value)
        return parsed
    raise no_such_overload("bool", value)


def to_bytes(value: Any) -> bytes:
    t = type(value)
    if t is bytes:
        return value  # type: ignore[no-any-return]
    if t is str:
        return value.encode("utf-8")  # type: ignore[no-any-return]
    raise no_such_overload("bytes", value)


def to_dyn(value: Any) -> Any:
    return value


def type_of(value: Any) -> TypeValue:
    """``type(x)``: the type of a value, comparable with ``int``, ``string``, ``list``..."""
    return TypeValue(type_name(value))


# -- estimates ------------------------------------------------------------------------------


def _estimate_equality(shapes: list[Shape]) -> tuple[int, Shape]:
    smaller = min(shapes[0].max_size, shapes[1].max_size)
    if smaller >= cost.UNBOUNDED:
        # Two values of unknown size: upstream treats scalar equality as unit cost.
        return 1, SCALAR
    return cost.add(1, cost.factor(smaller, cost.STRING_TRAVERSAL)), SCALAR


def _estimate_concat(shapes: list[Shape]) -> tuple[int, Shape]:
    left, right = shapes
    total = cost.add(left.max_size, right.max_size)
    elem = cost.join([left.element, right.element]) if left.elem or right.elem else None
    if total >= cost.UNBOUNDED:
        # Operands of unknown size (numbers typed dyn, mostly): a unit cost, as upstream
        # gives arithmetic; concatenations are charged by their length at run time.
        return 1, Shape(None, elem=elem)
    return cost.add(1, cost.factor(total, cost.STRING_TRAVERSAL)), Shape(total, elem=elem)


def _estimate_in(shapes: list[Shape]) -> tuple[int, Shape]:
    return cost.add(1, shapes[1].max_size), SCALAR


def _estimate_prefix(shapes: list[Shape]) -> tuple[int, Shape]:
    return cost.add(1, cost.factor(shapes[1].max_size, cost.STRING_TRAVERSAL)), SCALAR


def _estimate_contains(shapes: list[Shape]) -> tuple[int, Shape]:
    work = cost.factor(cost.multiply(shapes[0].max_size, shapes[1].max_size), cost.STRING_TRAVERSAL)
    return cost.add(1, work), SCALAR


def _estimate_text_conversion(shapes: list[Shape]) -> tuple[int, Shape]:
    arg = shapes[0]
    return 1, Shape(None if arg.size is None else max(arg.size, 24))


def _estimate_scalar(shapes: list[Shape]) -> tuple[int, Shape]:
    return 1, SCALAR


def _estimate_identity(shapes: list[Shape]) -> tuple[int, Shape]:
    return 1, shapes[0]


def register(registry: Registry) -> None:
    _register_operators(registry)
    sized = (STRING, BYTES, list_of(A), map_of(A, B))
    registry.define("size", [((t,), INT) for t in sized], impl=size, estimate=_estimate_scalar)
    registry.define(
        "size",
        [((t,), INT) for t in sized],
        member=True,
        impl=size,
        receivers=(str, bytes, *LIST_RECEIVERS, *MAP_RECEIVERS),
    )
    registry.define(
        "matches", [((STRING, STRING), BOOL)], impl=matches, costed=True, estimate=estimate_regex
    )
    registry.define(
        "matches",
        [((STRING, STRING), BOOL)],
        member=True,
        impl=matches,
        receivers=(str,),
        costed=True,
    )
    for name, impl, estimate in (
        ("startsWith", starts_with, _estimate_prefix),
        ("endsWith", ends_with, _estimate_prefix),
        ("contains", contains, _estimate_contains),
    ):
        registry.define(
            name,
            [((STRING, STRING), BOOL)],
            member=True,
            impl=impl,
            receivers=(str,),
            costed=True,
            estimate=estimate,
        )
    registry.define(
        "int",
        [((t,), INT) for t in (INT, UINT, DOUBLE, STRING)],
        impl=to_int,
        estimate=_estimate_scalar,
    )
    registry.define(
        "uint",
        [((t,), UINT) for t in (INT, UINT, DOUBLE, STRING)],
        impl=to_uint,
        estimate=_estimate_scalar,
    )
    registry.define(
        "double",
        [((t,), DOUBLE) for t in (INT, UINT, DOUBLE, STRING)],
        impl=to_double,
        estimate=_estimate_scalar,
    )
    registry.define(
        "string",
        [((t,), STRING) for t in (INT, UINT, DOUBLE, STRING, BYTES, BOOL)],
        impl=to_string,
        estimate=_estimate_text_conversion,
    )
    registry.define(
        "bool", [((t,), BOOL) for t in (BOOL, STRING)], impl=to_bool, estimate=_estimate_scalar
    )
    registry.define(
        "bytes",
        [((t,), BYTES) for t in (BYTES, STRING)],
        impl=to_bytes,
        estimate=_estimate_text_conversion,
    )
    registry.define("dyn", [((A,), DYN)], impl=to_dyn, estimate=_estimate_identity)
    registry.define("type", [((A,), TYPE)], impl=type_of, estimate=_estimate_scalar)


def _register_operators(registry: Registry) -> None:
    registry.define("_==_", [((A, A), BOOL)], impl=runtime.cel_eq, estimate=_estimate_equality)
    registry.define("_!=_", [((A, A), BOOL)], impl=runtime.cel_ne, estimate=_estimate_equality)
    ordered = [(INT,), (UINT,), (DOUBLE,), (STRING,), (BYTES,), (BOOL,)]
    comparisons: list[tuple[tuple[CelType, ...], CelType]] = [((t[0], t[0]), BOOL) for t in ordered]
    # Kubernetes enables cross-type numeric comparisons (1 < 1.5, 2u >= 1).
    comparisons += [((a, b), BOOL) for a in _NUMERIC for b in _NUMERIC if a != b]
    for name, impl in (
        ("_<_", runtime.cel_lt),
        ("_<=_", runtime.cel_le),
        ("_>_", runtime.cel_gt),
        ("_>=_", runtime.cel_ge),
    ):
        registry.define(name, comparisons, impl=impl, estimate=_estimate_scalar)
    registry.define(
        "_+_",
        [
            ((INT, INT), INT),
            ((UINT, UINT), UINT),
            ((DOUBLE, DOUBLE), DOUBLE),
            ((STRING, STRING), STRING),
            ((BYTES, BYTES), BYTES),
            ((list_of(A), list_of(A)), list_of(A)),
        ],
        impl=arithmetic.add,
        costed=True,
        estimate=_estimate_concat,
    )
    numeric = [((t, t), t) for t in _NUMERIC]
    registry.define("_-_", numeric, impl=arithmetic.sub, estimate=_estimate_scalar)
    registry.define("_*_", numeric, impl=arithmetic.mul, estimate=_estimate_scalar)
    registry.define("_/_", numeric, impl=arithmetic.div, estimate=_estimate_scalar)
    registry.define(
        "_%_",
        [((INT, INT), INT), ((UINT, UINT), UINT)],
        impl=arithmetic.mod,
        estimate=_estimate_scalar,
    )
    registry.define(
        "-_", [((INT,), INT), ((DOUBLE,), DOUBLE)], impl=arithmetic.neg, estimate=_estimate_scalar
    )
    registry.define("!_", [((BOOL,), BOOL)], impl=runtime.logical_not, estimate=_estimate_scalar)
    registry.define(
        "@in",
        [((A, list_of(A)), BOOL), ((A, map_of(A, B)), BOOL)],
        impl=runtime.cel_in,
        costed=True,
        estimate=_estimate_in,
    )
