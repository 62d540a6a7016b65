"""CEL arithmetic on the runtime's values: ``+ - * / %`` and unary ``-``.

Operands are of one type (CEL has no implicit conversions): ``int`` results
outside int64 and ``uint`` results outside uint64 are ``integer overflow``
errors, integer division truncates toward zero and by zero is an error, while
``double`` follows IEEE 754 (``x / 0.0`` is an infinity or NaN). ``+`` also
concatenates strings, bytes and lists, charging the frame for the copy.
"""

from __future__ import annotations

import math
from typing import Any

from api.limits import INT64_MAX, INT64_MIN
from dra_driver.cel.runtime import (
    LIST_TYPES,
    UINT64_MAX,
    EvalError,
    Frame,
    UInt,
    charge,
    no_such_overload,
)


def _int_result(value: int) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise EvalError("integer overflow")


def _uint_result(value: int) -> UInt:
    if 0 <= value <= UINT64_MAX:
        return UInt(value)
    raise EvalError("unsigned integer overflow")


def add(frame: Frame, a: Any, b: Any) -> Any:
    """CEL ``+``: numbers of one type, string, bytes and list concatenation."""
    ta = type(a)
    tb = type(b)
    if ta is int and tb is int:
        return _int_result(a + b)
    if ta is float and tb is float:
        return a + b
    if (ta is str and tb is str) or (ta is bytes and tb is bytes):
        charge(frame, (len(a) + len(b)) // 10)
        return a + b
    if ta is UInt and tb is UInt:
        return _uint_result(a + b)
    if ta in LIST_TYPES and tb in LIST_TYPES:
        charge(frame, (len(a) + len(b)) // 10)
        return [*a, *b]
    raise no_such_overload("_+_", a, b)


def sub(a: Any, b: Any) -> Any:
    ta = type(a)
    tb = type(b)
    if ta is int and tb is int:
        return _int_result(a - b)
    if ta is float and tb is float:
        return a - b
    if ta is UInt and tb is UInt:
        return _uint_result(a - b)
    raise no_such_overload("_-_", a, b)


def mul(a: Any, b: Any) -> Any:
    ta = type(a)
    tb = type(b)
    if ta is int and tb is int:
        return _int_result(a * b)
    if ta is float and tb is float:
        return a * b
    if ta is UInt and tb is UInt:
        return _uint_result(a * b)
    raise no_such_overload("_*_", a, b)


def _truncated_div(a: int, b: int) -> int:
    quotient = abs(a) // abs(b)
    return -quotient if (a < 0) != (b < 0) else quotient


def div(a: Any, b: Any) -> Any:
    ta = type(a)
    tb = type(b)
    if ta is int and tb is int:
        if b == 0:
            raise EvalError("division by zero")
        return _int_result(_truncated_div(a, b))
    if ta is float and tb is float:
        if b == 0.0:
            if a == 0.0 or math.isnan(a):
                return math.nan
            return math.copysign(math.inf, a) * math.copysign(1.0, b)
        return a / b
    if ta is UInt and tb is UInt:
        if b == 0:
            raise EvalError("division by zero")
        return UInt(a // b)
    raise no_such_overload("_/_", a, b)


def mod(a: Any, b: Any) -> Any:
    ta = type(a)
    tb = type(b)
    if ta is int and tb is int:
        if b == 0:
            raise EvalError("modulus by zero")
        if a == INT64_MIN and b == -1:
            raise EvalError("integer overflow")
        return a - b * _truncated_div(a, b)
    if ta is UInt and tb is UInt:
        if b == 0:
            raise EvalError("modulus by zero")
        return UInt(a % b)
    raise no_such_overload("_%_", a, b)


def neg(a: Any) -> Any:
    ta = type(a)
    if ta is int:
        return _int_result(-a)
    if ta is float:
        return -a
    raise no_such_overload("-_", a)
