"""Closures calling library functions, and the folding of calls whose arguments are constants.

A global function gets its arguments; a member function is looked up on the
receiver's type at run time (the overloads a library registers per Python type),
falling back to the function's own resolution. A *costed* function also gets the
frame, to charge what it traverses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dra_driver.cel.compiler.code import Code, constant
from dra_driver.cel.library import Function
from dra_driver.cel.runtime import CostLimitExceeded, EvalError, Frame, no_such_overload


def fold(code: Code) -> Code:
    """Evaluate a call of constants now; leave it to run time when it fails."""
    try:
        value = code.fn([0, None])
    except (EvalError, CostLimitExceeded):
        return code
    return constant(value)


def global_call(function: Function, operands: list[Code]) -> Code:
    """``f(a, b...)``."""
    impl = function.global_impl
    if impl is None:  # pragma: no cover - the checker resolved a global overload
        raise TypeError(f"{function.name} has no global implementation")
    fns = [op.fn for op in operands]
    costed = function.costed
    if len(fns) == 0:
        if costed:
            return Code(impl)
        return Code(lambda s: impl())
    if len(fns) == 1:
        (a,) = fns
        if costed:
            return Code(lambda s: impl(s, a(s)))
        return Code(lambda s: impl(a(s)))
    if len(fns) == 2:
        a, b = fns
        if costed:
            return Code(lambda s: impl(s, a(s), b(s)))
        return Code(lambda s: impl(a(s), b(s)))
    if costed:
        return Code(lambda s: impl(s, *[f(s) for f in fns]))
    return Code(lambda s: impl(*[f(s) for f in fns]))


def member_call(function: Function, operands: list[Code]) -> Code:
    """``receiver.f(args...)``; ``operands`` are the receiver, then the arguments."""
    table = function.member_impls
    name = function.name
    costed = function.costed
    receiver, *rest = (op.fn for op in operands)

    def resolve(value: Any, args: Sequence[Any]) -> Callable[..., Any]:
        impl = table.get(type(value)) or function.member_impl(value)
        if impl is None:
            raise no_such_overload(name, value, *args)
        return impl

    if not rest:
        if costed:

            def call0c(s: Frame) -> Any:
                value = receiver(s)
                return resolve(value, ())(s, value)

            return Code(call0c)

        def call0(s: Frame) -> Any:
            value = receiver(s)
            return resolve(value, ())(value)

        return Code(call0)
    if len(rest) == 1:
        (a,) = rest
        if costed:

            def call1c(s: Frame) -> Any:
                value = receiver(s)
                arg = a(s)
                return resolve(value, (arg,))(s, value, arg)

            return Code(call1c)

        def call1(s: Frame) -> Any:
            value = receiver(s)
            arg = a(s)
            impl = table.get(type(value))
            if impl is None:
                impl = resolve(value, (arg,))
            return impl(value, arg)

        return Code(call1)

    def call_n(s: Frame) -> Any:
        value = receiver(s)
        args = [f(s) for f in rest]
        impl = resolve(value, args)
        return impl(s, value, *args) if costed else impl(value, *args)

    return Code(call_n)
