"""Static CEL types, as the checker infers them, and overload signature matching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class CelType:
    """A CEL type: a name with type parameters (``list(int)``, ``map(string, dyn)``).

    ``is_param`` marks a type parameter of an overload signature (``A`` in
    ``list(A).indexOf(A) -> int``), bound while matching arguments.
    """

    name: str
    params: tuple[CelType, ...] = ()
    is_param: bool = False

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}({', '.join(str(p) for p in self.params)})"


INT: Final = CelType("int")
UINT: Final = CelType("uint")
DOUBLE: Final = CelType("double")
BOOL: Final = CelType("bool")
STRING: Final = CelType("string")
BYTES: Final = CelType("bytes")
NULL: Final = CelType("null_type")
DYN: Final = CelType("dyn")
TYPE: Final = CelType("type")
QUANTITY: Final = CelType("kubernetes.Quantity")
SEMVER: Final = CelType("kubernetes.Semver")
DEVICE: Final = CelType("kubernetes.DRADevice")
A: Final = CelType("A", is_param=True)
B: Final = CelType("B", is_param=True)

SCALARS: Final = frozenset({INT, UINT, DOUBLE, BOOL, NULL, TYPE, QUANTITY, SEMVER})
"""Types whose values have no size worth estimating."""


def list_of(element: CelType) -> CelType:
    return CelType("list", (element,))


def map_of(key: CelType, value: CelType) -> CelType:
    return CelType("map", (key, value))


def optional_of(value: CelType) -> CelType:
    return CelType("optional_type", (value,))


DEVICE_FIELDS: Final[dict[str, CelType]] = {
    "driver": STRING,
    "attributes": map_of(STRING, map_of(STRING, DYN)),
    "capacity": map_of(STRING, map_of(STRING, QUANTITY)),
    "allowMultipleAllocations": BOOL,
}
"""Fields of ``kubernetes.DRADevice``. Attribute values are typed ``dyn``: whether an
attribute is an int, a string or a version is known only at run time."""

TYPE_NAMES: Final = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "null_type", "list", "map", "type"}
)
"""Identifiers that denote a type value (``type(x) == string``)."""


def is_dyn(t: CelType) -> bool:
    return t.name == "dyn"


def assignable(param: CelType, arg: CelType, bindings: dict[str, CelType]) -> bool:
    """Whether an argument of type ``arg`` fits ``param``; binds type parameters in
    ``bindings``. ``dyn`` fits everything and everything fits ``dyn``."""
    if param.is_param:
        bound = bindings.get(param.name)
        if bound is None:
            bindings[param.name] = arg
            return True
        if is_dyn(bound):
            return True
        if is_dyn(arg):
            return True
        return assignable(bound, arg, bindings)
    if is_dyn(param) or is_dyn(arg):
        # A parameterised parameter type may still bind its own parameters to dyn.
        for inner in param.params:
            _bind_dyn(inner, bindings)
        return True
    if param.name != arg.name or len(param.params) != len(arg.params):
        return False
    return all(assignable(p, a, bindings) for p, a in zip(param.params, arg.params, strict=True))


def _bind_dyn(t: CelType, bindings: dict[str, CelType]) -> None:
    if t.is_param:
        bindings.setdefault(t.name, DYN)
    for inner in t.params:
        _bind_dyn(inner, bindings)


def substitute(t: CelType, bindings: dict[str, CelType]) -> CelType:
    """``t`` with its type parameters replaced by their bindings (unbound ones by dyn)."""
    if t.is_param:
        return bindings.get(t.name, DYN)
    if not t.params:
        return t
    return CelType(t.name, tuple(substitute(p, bindings) for p in t.params))


def join(types: list[CelType]) -> CelType:
    """The common type of ``types`` (list elements, ternary branches): equal or dyn."""
    if not types:
        return DYN
    first = types[0]
    return first if all(t == first for t in types) else DYN
