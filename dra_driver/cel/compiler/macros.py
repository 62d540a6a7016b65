"""Closures of the macros: ``cel.bind``, ``optMap``/``optFlatMap`` and the comprehension loops.

A macro's variables live in frame slots the checker assigned. Loops charge the
cost budget per iteration, one unit per node of their body (:func:`body_size`;
a nested macro charges its own iterations). ``all``/``exists`` are CEL's
commutative quantifiers: a decisive element wins over an error on another one.
"""

from __future__ import annotations

from typing import Any

from dra_driver.cel import ast
from dra_driver.cel.compiler.code import Code, Fn
from dra_driver.cel.runtime import (
    OPTIONAL_NONE,
    CelOptional,
    EvalError,
    Frame,
    charge,
    no_such_overload,
    range_items,
    range_pairs,
)


class Failed:
    """A ``cel.bind`` value that is an error, raised where the variable is read."""

    __slots__ = ("error",)

    def __init__(self, error: EvalError) -> None:
        self.error = error


def body_size(node: ast.Expr) -> int:
    """Nodes evaluated once per iteration of a loop over ``node`` (nested macros' own loops
    are charged by those macros)."""
    count = 0
    stack = [node]
    while stack:
        current = stack.pop()
        count += 1
        if isinstance(current, ast.Comprehension):
            stack.append(current.target)
        else:
            stack.extend(ast.children(current))
    return count


def bind(target: Fn, slot: int, body: Fn) -> Code:
    """``cel.bind(var, target, body)``: a failed ``target`` fails only where ``var`` is read."""

    def run(s: Frame) -> Any:
        try:
            s[slot] = target(s)
        except EvalError as error:
            s[slot] = Failed(error)
        return body(s)

    return Code(run)


def optional_macro(macro: str, target: Fn, slot: int, body: Fn) -> Code:
    """``opt.optMap(var, body)`` / ``opt.optFlatMap(var, body)``."""
    flat = macro == "optFlatMap"

    def apply(s: Frame) -> Any:
        optional = target(s)
        if type(optional) is not CelOptional:
            raise no_such_overload(macro, optional)
        if not optional.present:
            return OPTIONAL_NONE
        s[slot] = optional.value
        result = body(s)
        if not flat:
            return CelOptional(result)
        if type(result) is not CelOptional:
            raise no_such_overload(macro, result)
        return result

    return Code(apply)


def loop(macro: str, target: Fn, slot: int, bodies: list[Fn], step: int) -> Fn:
    """One-variable macros over a list's elements or a map's keys."""
    if macro in {"all", "exists"}:
        (predicate,) = bodies
        decisive = macro == "exists"  # the value that ends the loop

        def quantifier(s: Frame) -> bool:
            error: EvalError | None = None
            for item in range_items(target(s)):
                s[slot] = item
                charge(s, step)
                try:
                    value = predicate(s)
                except EvalError as exc:
                    error = error or exc
                    continue
                if value is decisive:
                    return value is True
                if value is not (not decisive):
                    error = error or no_such_overload(macro, value)
            if error is not None:
                raise error
            return not decisive

        return quantifier
    if macro == "exists_one":
        (predicate,) = bodies

        def exactly_one(s: Frame) -> bool:
            count = 0
            for item in range_items(target(s)):
                s[slot] = item
                charge(s, step)
                value = predicate(s)
                if value is True:
                    count += 1
                elif value is not False:
                    raise no_such_overload(macro, value)
            return count == 1

        return exactly_one
    if macro == "filter":
        (predicate,) = bodies

        def keep(s: Frame) -> list[Any]:
            out: list[Any] = []
            for item in range_items(target(s)):
                s[slot] = item
                charge(s, step)
                if _predicate(predicate, s, macro):
                    out.append(item)
            return out

        return keep
    # map, with an optional filter before the transform.
    if len(bodies) == 1:
        (transform,) = bodies

        def mapped(s: Frame) -> list[Any]:
            out: list[Any] = []
            for item in range_items(target(s)):
                s[slot] = item
                charge(s, step)
                out.append(transform(s))
            return out

        return mapped
    predicate, transform = bodies

    def filtered_map(s: Frame) -> list[Any]:
        out: list[Any] = []
        for item in range_items(target(s)):
            s[slot] = item
            charge(s, step)
            if _predicate(predicate, s, macro):
                out.append(transform(s))
        return out

    return filtered_map


def pair_loop(macro: str, target: Fn, slots: tuple[int, int], bodies: list[Fn], step: int) -> Fn:
    """Two-variable macros over (index, element) of a list or (key, value) of a map."""
    slot, slot2 = slots
    if macro in ("all", "exists"):
        (predicate,) = bodies
        decisive = macro == "exists"

        def quantifier(s: Frame) -> bool:
            error: EvalError | None = None
            for first, second in range_pairs(target(s)):
                s[slot] = first
                s[slot2] = second
                charge(s, step)
                try:
                    value = predicate(s)
                except EvalError as exc:
                    error = error or exc
                    continue
                if value is decisive:
                    return value is True
                if value is not (not decisive):
                    error = error or no_such_overload(macro, value)
            if error is not None:
                raise error
            return not decisive

        return quantifier
    if macro == "exists_one":
        (predicate,) = bodies

        def exactly_one(s: Frame) -> bool:
            count = 0
            for first, second in range_pairs(target(s)):
                s[slot] = first
                s[slot2] = second
                charge(s, step)
                if _predicate(predicate, s, macro):
                    count += 1
            return count == 1

        return exactly_one
    keep_if = bodies[0] if len(bodies) == 2 else None
    transform = bodies[-1]
    as_map = macro == "transformMap"

    def transformed(s: Frame) -> Any:
        out_list: list[Any] = []
        out_map: dict[Any, Any] = {}
        for first, second in range_pairs(target(s)):
            s[slot] = first
            s[slot2] = second
            charge(s, step)
            if keep_if is not None and not _predicate(keep_if, s, macro):
                continue
            if as_map:
                out_map[first] = transform(s)
            else:
                out_list.append(transform(s))
        return out_map if as_map else out_list

    return transformed


def _predicate(predicate: Fn, s: Frame, macro: str) -> bool:
    value = predicate(s)
    if value is True or value is False:
        return value
    raise no_such_overload(macro, value)
