"""A compiled node: its closure and, when the node is a constant, its value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from dra_driver.cel.runtime import Frame

Fn = Callable[[Frame], Any]
"""A compiled expression: the value of its node, computed from a frame."""

UNSET: Final = object()
"""No value: the node is not a constant (also: an absent optional element, in literals)."""


class Code:
    """A compiled node: its closure and, for constants, the value."""

    __slots__ = ("fn", "value")

    def __init__(self, fn: Fn, value: Any = UNSET) -> None:
        self.fn = fn
        self.value = value

    @property
    def constant(self) -> bool:
        return self.value is not UNSET


def constant(value: Any) -> Code:
    """The code of a constant: its closure returns ``value``, known at compile time."""
    return Code(lambda s: value, value)
