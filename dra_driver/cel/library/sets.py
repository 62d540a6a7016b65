"""CEL's sets extension: ``sets.contains``, ``sets.intersects``, ``sets.equivalent``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dra_driver.cel import cost, runtime
from dra_driver.cel.cost import SCALAR, Shape
from dra_driver.cel.runtime import Frame, charge, no_such_overload
from dra_driver.cel.types import BOOL, A, list_of

if TYPE_CHECKING:
    from dra_driver.cel.library import Registry


def _lists(function: str, frame: Frame, a: Any, b: Any) -> None:
    if type(a) not in runtime.LIST_TYPES or type(b) not in runtime.LIST_TYPES:
        raise no_such_overload(function, a, b)
    charge(frame, len(a) * len(b))


def _member(items: Any, value: Any) -> bool:
    return any(runtime.cel_eq(item, value) for item in items)


def contains(frame: Frame, a: Any, b: Any) -> bool:
    """Whether every element of ``b`` is in ``a``."""
    _lists("sets.contains", frame, a, b)
    return all(_member(a, value) for value in b)


def intersects(frame: Frame, a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` share an element."""
    _lists("sets.intersects", frame, a, b)
    return any(_member(a, value) for value in b)


def equivalent(frame: Frame, a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` hold the same elements, ignoring order and repetition."""
    _lists("sets.equivalent", frame, a, b)
    return all(_member(a, value) for value in b) and all(_member(b, value) for value in a)


def _estimate(shapes: list[Shape]) -> tuple[int, Shape]:
    return cost.add(1, cost.multiply(shapes[0].max_size, shapes[1].max_size)), SCALAR


def register(registry: Registry) -> None:
    for name, impl in (
        ("sets.contains", contains),
        ("sets.intersects", intersects),
        ("sets.equivalent", equivalent),
    ):
        registry.define(
            name,
            [((list_of(A), list_of(A)), BOOL)],
            impl=impl,
            costed=True,
            estimate=_estimate,
        )
