"""Closures of the operators the compiler builds itself: ``==``/``!=``, the orderings
(with a constant: a type check and Python's own operator), ``!``, ``&&``, ``||`` and ``?:``.

``&&`` and ``||`` are CEL's commutative logic: ``false && error`` is false and
``true || error`` is true on either side, any other error stays an error.
Every other operator is a library function (:mod:`.calls`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from dra_driver.cel.compiler.code import Code, Fn
from dra_driver.cel.runtime import (
    EvalError,
    Frame,
    cel_eq,
    cel_ge,
    cel_gt,
    cel_le,
    cel_lt,
    no_such_overload,
)

_COMPARISONS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "_<_": cel_lt,
    "_<=_": cel_le,
    "_>_": cel_gt,
    "_>=_": cel_ge,
}


def specialised(function: str, operands: list[Code]) -> Code | None:
    """The dedicated closure of ``function`` over ``operands``; None: a library call."""
    if function in ("_==_", "_!=_"):
        code = equality(operands[0], operands[1])
        if function == "_!=_":
            equal = code.fn
            return Code(lambda s: not equal(s))
        return code
    generic = _COMPARISONS.get(function)
    if generic is not None:
        return comparison(function, generic, operands[0], operands[1])
    if function == "!_":
        return negation(operands[0].fn)
    return None


def equality(left: Code, right: Code) -> Code:
    """``left == right``; against a str, int or bool constant, a same-type fast path."""
    lfn, rfn = left.fn, right.fn
    if right.constant and type(right.value) in (str, int, bool):
        constant = right.value
        expected = type(constant)

        def equals_constant(s: Frame) -> bool:
            value = lfn(s)
            if type(value) is expected:
                return bool(value == constant)
            return cel_eq(value, constant)

        return Code(equals_constant)
    if left.constant and type(left.value) in (str, int, bool):
        constant = left.value
        expected = type(constant)

        def constant_equals(s: Frame) -> bool:
            value = rfn(s)
            if type(value) is expected:
                return bool(constant == value)
            return cel_eq(constant, value)

        return Code(constant_equals)
    return Code(lambda s: cel_eq(lfn(s), rfn(s)))


def comparison(function: str, generic: Callable[[Any, Any], bool], left: Code, right: Code) -> Code:
    """An ordering; ``x >= <int>`` and ``x < <int>`` compare ints directly."""
    lfn, rfn = left.fn, right.fn
    if right.constant and type(right.value) is int:
        constant = right.value
        if function == "_>=_":

            def at_least(s: Frame) -> bool:
                value = lfn(s)
                if type(value) is int:
                    return bool(value >= constant)
                return generic(value, constant)

            return Code(at_least)
        if function == "_<_":

            def below(s: Frame) -> bool:
                value = lfn(s)
                if type(value) is int:
                    return bool(value < constant)
                return generic(value, constant)

            return Code(below)
    return Code(lambda s: generic(lfn(s), rfn(s)))


def negation(operand: Fn) -> Code:
    """``!operand``: a bool, or no matching overload."""

    def negate(s: Frame) -> bool:
        value = operand(s)
        if value is True:
            return False
        if value is False:
            return True
        raise no_such_overload("!_", value)

    return Code(negate)


def logical_and(left: Fn, right: Fn) -> Code:
    """``left && right``."""

    def both(s: Frame) -> bool:
        # CEL's && is commutative over errors: false wins over an error on either side.
        try:
            a = left(s)
        except EvalError as error:
            return _absorb(right, s, error, False)
        if a is False:
            return False
        if a is True:
            b = right(s)
            if b is True or b is False:
                return b
            raise no_such_overload("_&&_", a, b)
        return _absorb(right, s, no_such_overload("_&&_", a), False)

    return Code(both)


def logical_or(left: Fn, right: Fn) -> Code:
    """``left || right``."""

    def either(s: Frame) -> bool:
        try:
            a = left(s)
        except EvalError as error:
            return _absorb(right, s, error, True)
        if a is True:
            return True
        if a is False:
            b = right(s)
            if b is True or b is False:
                return b
            raise no_such_overload("_||_", a, b)
        return _absorb(right, s, no_such_overload("_||_", a), True)

    return Code(either)


def conditional(condition: Fn, if_true: Fn, if_false: Fn) -> Code:
    """``condition ? if_true : if_false``; only the chosen branch runs."""

    def choose(s: Frame) -> Any:
        c = condition(s)
        if c is True:
            return if_true(s)
        if c is False:
            return if_false(s)
        raise no_such_overload("_?_:_", c)

    return Code(choose)


def _absorb(right: Fn, s: Frame, error: EvalError, absorbing: bool) -> bool:
    """The left side of ``&&`` (``||``) failed: the right side decides if it is false (true)."""
    try:
        b = right(s)
    except EvalError:
        raise error from None
    if b is absorbing:
        return b is True
    raise error
