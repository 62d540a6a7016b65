"""The Kubernetes list library: ``isSorted sum min max indexOf lastIndexOf``."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from dra_driver.cel import arithmetic, cost, runtime
from dra_driver.cel.cost import SCALAR, Shape
from dra_driver.cel.library import LIST_RECEIVERS
from dra_driver.cel.runtime import EvalError, Frame, charge, no_such_overload
from dra_driver.cel.types import BOOL, INT, A, list_of

if TYPE_CHECKING:
    from dra_driver.cel.library import Registry


def _items(function: str, value: Any) -> Any:
    if type(value) not in runtime.LIST_TYPES:
        raise no_such_overload(function, value)
    return value


def is_sorted(frame: Frame, items: Any) -> bool:
    """Whether the elements are in non-decreasing order (they must be comparable)."""
    items = _items("isSorted", items)
    charge(frame, len(items))
    return all(runtime.cel_le(a, b) for a, b in itertools.pairwise(items))


def sum_of(frame: Frame, items: Any) -> Any:
    """The sum of an int, uint or double list; 0 for an empty list."""
    items = _items("sum", items)
    charge(frame, len(items))
    if not items:
        return 0
    total = items[0]
    if type(total) not in runtime.NUMBER_TYPES:
        raise no_such_overload("sum", items)
    for item in items[1:]:
        total = arithmetic.add(frame, total, item)
    return total


def _extreme(function: str, frame: Frame, items: Any, better: Any) -> Any:
    items = _items(function, items)
    charge(frame, len(items))
    if not items:
        raise EvalError(f"{function}(list) argument must not be empty")
    best = items[0]
    for item in items[1:]:
        if better(item, best):
            best = item
    if len(items) == 1:
        # A single element must still be of an orderable type.
        runtime.cel_le(best, best)
    return best


def min_of(frame: Frame, items: Any) -> Any:
    return _extreme("min", frame, items, runtime.cel_lt)


def max_of(frame: Frame, items: Any) -> Any:
    return _extreme("max", frame, items, runtime.cel_gt)


def index_of(frame: Frame, items: Any, value: Any) -> int:
    """The first position of an element equal to ``value``, or -1."""
    items = _items("indexOf", items)
    charge(frame, len(items))
    for position, item in enumerate(items):
        if runtime.cel_eq(item, value):
            return position
    return -1


def last_index_of(frame: Frame, items: Any, value: Any) -> int:
    items = _items("lastIndexOf", items)
    charge(frame, len(items))
    for position in range(len(items) - 1, -1, -1):
        if runtime.cel_eq(items[position], value):
            return position
    return -1


def _estimate_traversal(shapes: list[Shape]) -> tuple[int, Shape]:
    return cost.add(1, shapes[0].max_size), SCALAR


def _estimate_element(shapes: list[Shape]) -> tuple[int, Shape]:
    return cost.add(1, shapes[0].max_size), shapes[0].element


def register(registry: Registry) -> None:
    items = list_of(A)
    for name, impl, result, estimate in (
        ("isSorted", is_sorted, BOOL, _estimate_traversal),
        ("sum", sum_of, A, _estimate_element),
        ("min", min_of, A, _estimate_element),
        ("max", max_of, A, _estimate_element),
    ):
        registry.define(
            name,
            [((items,), result)],
            member=True,
            impl=impl,
            receivers=LIST_RECEIVERS,
            costed=True,
            estimate=estimate,
        )
    for name, position in (("indexOf", index_of), ("lastIndexOf", last_index_of)):
        registry.define(
            name,
            [((items, A), INT)],
            member=True,
            impl=position,
            receivers=LIST_RECEIVERS,
            costed=True,
        )
