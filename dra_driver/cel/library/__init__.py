"""The functions of the Kubernetes CEL environment, as one registry.

Each function has static signatures (for the checker: overload resolution and
result types), a run-time implementation, and optionally a cost estimator.

Implementations check the types of their arguments themselves (arguments
typed ``dyn`` reach them unchecked) and raise :class:`EvalError` (CEL's error
value). A member function has one implementation per receiver type; a global
function one implementation. A *costed* function takes the evaluation frame as
its first argument and charges its work to the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from dra_driver.cel.cost import UNKNOWN, Shape
from dra_driver.cel.runtime import DefaultingMap
from dra_driver.cel.types import CelType

Impl = Callable[..., Any]
Estimator = Callable[[list[Shape]], tuple[int, Shape]]
"""Given the shapes of the receiver (member calls) and the arguments, the cost of the call
itself (not counting its arguments) and the shape of its result."""


@dataclass(frozen=True, slots=True)
class Signature:
    """One overload: ``params`` includes the receiver first for a member overload."""

    member: bool
    params: tuple[CelType, ...]
    result: CelType


@dataclass(slots=True)
class Function:
    """Everything known about one function name."""

    name: str
    signatures: list[Signature] = field(default_factory=list)
    global_impl: Impl | None = None
    member_impls: dict[type, Impl] = field(default_factory=dict)
    costed: bool = False
    estimate: Estimator | None = None

    def member_impl(self, receiver: Any) -> Impl | None:
        """The implementation for a receiver value, or None (no such overload)."""
        impl = self.member_impls.get(type(receiver))
        if impl is None and isinstance(receiver, Mapping):
            impl = self.member_impls.get(dict)
        return impl


LIST_RECEIVERS: Final = (list, tuple)
MAP_RECEIVERS: Final = (dict, DefaultingMap, MappingProxyType)


def default_estimate(shapes: list[Shape]) -> tuple[int, Shape]:
    return 1, UNKNOWN


class Registry:
    """Function name -> :class:`Function`; libraries add to it with :meth:`define`."""

    def __init__(self) -> None:
        self.functions: dict[str, Function] = {}

    def define(
        self,
        name: str,
        signatures: Sequence[tuple[tuple[CelType, ...], CelType]],
        *,
        member: bool = False,
        impl: Impl,
        receivers: tuple[type, ...] = (),
        costed: bool = False,
        estimate: Estimator | None = None,
    ) -> None:
        """Add overloads of ``name``.

        ``signatures`` are ``(params, result)``; for a member function the first
        param is the receiver type and ``receivers`` the Python types ``impl``
        serves. ``costed`` must agree across all definitions of one name.
        """
        function = self.functions.get(name)
        if function is None:
            function = self.functions[name] = Function(name, costed=costed)
        if function.costed != costed:
            raise ValueError(f"function {name}: costed and uncosted implementations mixed")
        function.signatures.extend(
            Signature(member, params, result) for params, result in signatures
        )
        if member:
            for receiver in receivers:
                function.member_impls[receiver] = impl
        else:
            function.global_impl = impl
        if estimate is not None:
            function.estimate = estimate

    def get(self, name: str) -> Function | None:
        return self.functions.get(name)


def build_registry() -> Registry:
    """The registry of the Kubernetes 1.36 CEL base environment's functions that selectors
    can use (no URL, IP, CIDR, timestamp or duration functions)."""
    from dra_driver.cel.library import (
        core,
        lists,
        optional,
        quantity,
        regex,
        semver,
        sets,
        strings,
    )

    registry = Registry()
    for library in (core, strings, lists, regex, sets, quantity, semver, optional):
        library.register(registry)
    return registry
