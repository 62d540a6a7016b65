"""Evaluating bare CEL expressions in tests: any result type, errors as their reasons."""

from __future__ import annotations

from typing import Any

import pytest

from dra_driver.cel.checker import check
from dra_driver.cel.compiler import compile_tree
from dra_driver.cel.library import build_registry
from dra_driver.cel.parser import parse
from dra_driver.cel.runtime import EvalError

REGISTRY = build_registry()


def value_of(expression: str) -> Any:
    """The value of an expression of any type (selectors must be bool; this need not)."""
    tree = parse(expression)
    checked = check(tree, REGISTRY)
    assert not checked.errors, checked.errors
    frame: list[Any] = [0, None, *([None] * (checked.slot_count - 2))]
    return compile_tree(tree, checked)(frame)


def error_of(expression: str) -> str:
    """The reason of the runtime error the expression raises (it must raise one)."""
    with pytest.raises(EvalError) as info:
        value_of(expression)
    return info.value.reason


def check_errors(expression: str) -> list[str]:
    """The checker's messages for the expression."""
    return [message for _, message in check(parse(expression), REGISTRY).errors]
