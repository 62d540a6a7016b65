"""What the checker hands the compiler: per-node annotations, errors and the cost estimate."""

from __future__ import annotations

from dataclasses import dataclass, field

from dra_driver.cel.cost import Shape
from dra_driver.cel.library import Function
from dra_driver.cel.types import CelType

FIRST_SLOT = 2
"""Frame slots 0 and 1 hold the cost and the device; macro variables follow."""


@dataclass(frozen=True, slots=True)
class Binding:
    """A variable in scope: its frame slot, static type and shape."""

    slot: int
    type: CelType
    shape: Shape
    holds_errors: bool = False
    """A ``cel.bind`` variable: its slot may hold the error its value raised, which reading
    the variable raises (CEL errors are values: an unused failed binding is harmless)."""


@dataclass(slots=True)
class CheckResult:
    """The checker's annotations, keyed by node id."""

    types: dict[int, CelType] = field(default_factory=dict)
    bindings: dict[int, Binding] = field(default_factory=dict)
    """Identifier node -> the macro variable it reads (absent: ``device`` or a type name)."""
    functions: dict[int, Function] = field(default_factory=dict)
    slots: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    """Comprehension node -> frame slots of its one or two variables."""
    errors: list[tuple[int, str]] = field(default_factory=list)
    cost: int = 0
    slot_count: int = FIRST_SLOT


@dataclass(frozen=True, slots=True)
class Info:
    """What checking one node found: its static type, worst-case cost and size shape."""

    type: CelType
    cost: int
    shape: Shape
