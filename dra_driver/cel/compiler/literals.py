"""Closures building list and map literals, with CEL's optional entries (``[?x]``, ``{?k: v}``).

A list of constants is itself a constant. An optional entry is added only when
its optional value is set; a value that is not an optional there is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dra_driver.cel.compiler.code import UNSET, Code, Fn, constant
from dra_driver.cel.runtime import CelOptional, EvalError, Frame, build_map


def list_literal(elements: Sequence[Code], optional: frozenset[int]) -> Code:
    """``[e0, ?e1, ...]``: elements at the ``optional`` positions are optionals."""
    fns = [e.fn for e in elements]
    if not optional:
        if all(e.constant for e in elements):
            return constant([e.value for e in elements])
        return Code(lambda s: [f(s) for f in fns])
    flags = [i in optional for i in range(len(fns))]

    def build(s: Frame) -> list[Any]:
        out: list[Any] = []
        for f, is_optional in zip(fns, flags, strict=True):
            value = f(s)
            if is_optional:
                value = _optional_value(value)
                if value is UNSET:
                    continue
            out.append(value)
        return out

    return Code(build)


def map_literal(entries: Sequence[tuple[Fn, Fn, bool]]) -> Code:
    """``{k: v, ?k2: v2, ...}`` from (key, value, optional) entries; duplicate keys are
    errors (:func:`~dra_driver.cel.runtime.build_map`)."""

    def build(s: Frame) -> dict[Any, Any]:
        pairs: list[tuple[Any, Any]] = []
        for key, value_fn, is_optional in entries:
            k = key(s)
            value = value_fn(s)
            if is_optional:
                value = _optional_value(value)
                if value is UNSET:
                    continue
            pairs.append((k, value))
        return build_map(pairs)

    return Code(build)


def _optional_value(value: Any) -> Any:
    if type(value) is not CelOptional:
        raise EvalError(f"expected an optional value, got {value!r}")
    return value.value if value.present else UNSET
