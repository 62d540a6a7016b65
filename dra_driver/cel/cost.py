"""Size and cost estimation units, after upstream's cost estimator.

The checker estimates the worst-case cost of an expression from the maximum
size of each value (a string's length, a list's or map's number of entries).
Sizes reachable from ``device`` are bounded by the API's limits (the size hints
below); a value whose size cannot be bounded has an unbounded size, which makes
any traversal of it cost more than the limit, as upstream's estimator does.

Unit costs follow upstream: reading a variable or a field costs 1, a function
call 1, creating a list 10 and a map 30; string traversal costs 0.1 per
character, regular expressions 0.25 per pattern character on top of that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

UNBOUNDED: Final = 2**64 - 1
"""Cost or size that cannot be bounded (upstream's maximum uint64)."""

COST_LIMIT: Final = 1_000_000
"""``CELSelectorExpressionMaxCost``: both the estimated and the runtime limit."""

# Size hints, from the resource.k8s.io/v1 limits.
DRIVER_NAME_MAX: Final = 63
DOMAIN_MAX: Final = 63
ID_MAX: Final = 32
ATTRIBUTES_PER_DEVICE_MAX: Final = 32
ATTRIBUTE_VALUE_MAX: Final = 64

LIST_CREATE: Final = 10
MAP_CREATE: Final = 30
STRING_TRAVERSAL: Final = 0.1
REGEX_LENGTH: Final = 0.25


@dataclass(frozen=True, slots=True)
class Shape:
    """What the estimator knows about a value: its maximum size and, for lists and maps,
    the shapes of its keys and elements. ``size`` None means unbounded."""

    size: int | None = None
    key: Shape | None = None
    elem: Shape | None = None

    @property
    def max_size(self) -> int:
        return UNBOUNDED if self.size is None else self.size

    @property
    def element(self) -> Shape:
        """The shape of an element; without better knowledge, elements are assumed no
        larger than the hint of the whole (a list-typed attribute holds at most 64
        strings of at most 64 characters)."""
        if self.elem is not None:
            return self.elem
        return UNKNOWN if self.size is None else Shape(self.size)

    @property
    def keys(self) -> Shape:
        if self.key is not None:
            return self.key
        return UNKNOWN if self.size is None else Shape(self.size)


UNKNOWN: Final = Shape()
SCALAR: Final = Shape(1)

DEVICE_SHAPES: Final[dict[str, Shape]] = {
    "driver": Shape(DRIVER_NAME_MAX),
    "attributes": Shape(
        ATTRIBUTES_PER_DEVICE_MAX,
        key=Shape(DOMAIN_MAX),
        elem=Shape(ATTRIBUTES_PER_DEVICE_MAX, key=Shape(ID_MAX), elem=Shape(ATTRIBUTE_VALUE_MAX)),
    ),
    "capacity": Shape(
        ATTRIBUTES_PER_DEVICE_MAX,
        key=Shape(DOMAIN_MAX),
        elem=Shape(ATTRIBUTES_PER_DEVICE_MAX, key=Shape(ID_MAX), elem=SCALAR),
    ),
    "allowMultipleAllocations": SCALAR,
}
"""Size hints of the fields of ``device``: an attribute value (a string, or a list with
the alpha list attributes) is at most 64 long, a domain has at most 32 entries."""


def add(*costs: int) -> int:
    """Saturating sum."""
    return min(sum(costs), UNBOUNDED)


def multiply(a: int, b: int) -> int:
    """Saturating product."""
    return min(a * b, UNBOUNDED)


def factor(size: int, per_unit: float) -> int:
    """Cost of touching ``size`` units at ``per_unit`` each, rounded up; saturating."""
    if size >= UNBOUNDED:
        return UNBOUNDED
    return min(math.ceil(size * per_unit), UNBOUNDED)


def join(shapes: list[Shape]) -> Shape:
    """A shape covering every one of ``shapes`` (list literal elements, branches)."""
    if not shapes:
        return Shape(0)
    sizes = [s.size for s in shapes]
    size = None if any(s is None for s in sizes) else max(s for s in sizes if s is not None)
    keys = [s.key for s in shapes if s.key is not None]
    elems = [s.elem for s in shapes if s.elem is not None]
    return Shape(
        size,
        key=join(keys) if len(keys) == len(shapes) else None,
        elem=join(elems) if len(elems) == len(shapes) else None,
    )
