"""CEL values at run time and the operations every compiled expression uses.

One module on purpose (about 500 lines): the value model and the equality,
ordering, selection and indexing rules over it are one contract, read together.

Value mapping: CEL ``int`` is Python ``int`` (bounded to int64 by the
operations), ``uint`` is :class:`UInt`, ``double`` is ``float``, ``string``
``str``, ``bytes`` ``bytes``, ``bool`` ``bool``, ``null`` ``None``, ``list`` a
``list`` or ``tuple`` (never mutated), ``map`` any ``Mapping`` (never mutated),
``optional_type`` :class:`CelOptional`, ``type`` :class:`TypeValue`, and the
Kubernetes types :class:`api.semver.Semver` and :class:`api.quantity.Quantity`.

Errors: a CEL error value is raised as :class:`EvalError`; ``&&``, ``||`` and
the ``all``/``exists`` macros catch it where CEL absorbs errors. Running over the
cost budget raises :class:`CostLimitExceeded`, which nothing absorbs.

A frame (the single argument of every compiled closure) is a list: ``[0]`` the
cost spent so far, ``[1]`` the device, then one slot per variable bound by a
macro.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from api.quantity import Quantity
from api.semver import Semver
from dra_driver.cel.cost import COST_LIMIT
from dra_driver.cel.device import CelDevice

UINT64_MAX: Final = 2**64 - 1

Frame = list[Any]


class EvalError(Exception):
    """A CEL error value (missing key, no overload, overflow...); ``reason`` is CEL's text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CostLimitExceeded(Exception):  # noqa: N818 - internal, becomes a CelEvaluationError
    """The evaluation spent more than :data:`COST_LIMIT`; never absorbed by ``&&``/``||``."""


def charge(frame: Frame, cost: int) -> None:
    """Add ``cost`` to the frame's budget; raise CostLimitExceeded past the limit."""
    total = frame[0] + cost
    frame[0] = total
    if total > COST_LIMIT:
        raise CostLimitExceeded("operation cancelled: actual cost limit exceeded")


class UInt(int):
    """A CEL ``uint`` (0..2**64-1). Arithmetic on it is done by :func:`add` & co."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


class CelOptional:
    """A CEL ``optional_type``: either a value or none (:data:`OPTIONAL_NONE`)."""

    __slots__ = ("present", "value")

    def __init__(self, value: Any = None, present: bool = True) -> None:
        self.value = value
        self.present = present

    def __repr__(self) -> str:
        return f"optional.of({self.value!r})" if self.present else "optional.none()"


OPTIONAL_NONE: Final = CelOptional(None, present=False)


class TypeValue:
    """A CEL type as a value (``type(1) == int``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TypeValue) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name


class DefaultingMap(Mapping[Any, Any]):
    """``device.attributes`` and ``device.capacity``: a lookup of an absent domain gives an
    empty map instead of an error, as upstream's wrapper does (its ``Find`` always
    succeeds). ``in``, ``size`` and iteration see the real domains only."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[Any, Any]) -> None:
        self._data = data

    def __getitem__(self, key: Any) -> Any:
        value = self._data.get(key) if type(key) is str else None
        return EMPTY_MAP if value is None else value

    def __contains__(self, key: object) -> bool:
        return type(key) is str and key in self._data

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


EMPTY_MAP: Final[Mapping[Any, Any]] = MappingProxyType({})

LIST_TYPES: Final = frozenset({list, tuple})
NUMBER_TYPES: Final = frozenset({int, UInt, float})
# Types whose equality is plain Python equality when both sides have that exact type.
_SAME_TYPE_EQ: Final = frozenset({str, int, float, bool, bytes, UInt, Semver, Quantity, TypeValue})
# Types with an ordering (<, <=, >, >=) between two values of that exact type.
_ORDERED: Final = frozenset({int, UInt, float, str, bytes, bool})


def type_name(value: Any) -> str:
    """The CEL type name of a runtime value, as error messages and ``type()`` spell it."""
    t = type(value)
    name = _TYPE_NAMES.get(t)
    if name is not None:
        return name
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return "list"
    return t.__name__


_TYPE_NAMES: Final[dict[type, str]] = {
    int: "int",
    UInt: "uint",
    float: "double",
    bool: "bool",
    str: "string",
    bytes: "bytes",
    type(None): "null_type",
    list: "list",
    tuple: "list",
    dict: "map",
    DefaultingMap: "map",
    CelOptional: "optional_type",
    TypeValue: "type",
    Semver: "kubernetes.Semver",
    Quantity: "kubernetes.Quantity",
    CelDevice: "kubernetes.DRADevice",
}


def no_such_overload(function: str, *args: Any) -> EvalError:
    """CEL's ``no such overload`` error for ``function`` applied to ``args``."""
    return EvalError(f"no such overload: {function}({', '.join(type_name(a) for a in args)})")


def no_such_key(key: Any) -> EvalError:
    return EvalError(f"no such key: {key}")


# -- equality and ordering --------------------------------------------------------------


def cel_eq(a: Any, b: Any) -> bool:
    """CEL ``==`` with heterogeneous equality.

    Numbers compare by value across int/uint/double; other values of different
    types are unequal, except that a Semver or Quantity on the left side rejects
    any other type with ``no such overload``, as the Kubernetes types' own
    equality does upstream (``semver('1.0.0') == '1.0.0'`` is an error,
    ``'1.0.0' == semver('1.0.0')`` is false).
    """
    if a is None or b is None:
        return a is None and b is None
    ta = type(a)
    tb = type(b)
    if ta is tb and ta in _SAME_TYPE_EQ:
        return bool(a == b)
    if ta in NUMBER_TYPES and tb in NUMBER_TYPES:
        return bool(a == b)
    if ta is Semver or ta is Quantity:
        raise no_such_overload("_==_", a, b)
    if ta in LIST_TYPES:
        return tb in LIST_TYPES and _list_eq(a, b)
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and _map_eq(a, b)
    if ta is CelOptional:
        if tb is not CelOptional or a.present != b.present:
            return False
        return not a.present or cel_eq(a.value, b.value)
    return a is b


def _list_eq(a: Sequence[Any], b: Sequence[Any]) -> bool:
    if len(a) != len(b):
        return False
    error: EvalError | None = None
    for x, y in zip(a, b, strict=True):
        try:
            if not cel_eq(x, y):
                return False
        except EvalError as exc:
            error = error or exc
    if error is not None:
        raise error
    return True


def _map_eq(a: Mapping[Any, Any], b: Mapping[Any, Any]) -> bool:
    if len(a) != len(b):
        return False
    for key, value in a.items():
        found, other = map_find(b, key)
        if not found or not cel_eq(value, other):
            return False
    return True


def cel_ne(a: Any, b: Any) -> bool:
    return not cel_eq(a, b)


def _comparable(a: Any, b: Any) -> bool:
    ta = type(a)
    tb = type(b)
    return (ta is tb and ta in _ORDERED) or (ta in NUMBER_TYPES and tb in NUMBER_TYPES)


def cel_lt(a: Any, b: Any) -> bool:
    if _comparable(a, b):
        return bool(a < b)
    raise no_such_overload("_<_", a, b)


def cel_le(a: Any, b: Any) -> bool:
    if _comparable(a, b):
        return bool(a <= b)
    raise no_such_overload("_<=_", a, b)


def cel_gt(a: Any, b: Any) -> bool:
    if _comparable(a, b):
        return bool(a > b)
    raise no_such_overload("_>_", a, b)


def cel_ge(a: Any, b: Any) -> bool:
    if _comparable(a, b):
        return bool(a >= b)
    raise no_such_overload("_>=_", a, b)


def cel_in(frame: Frame, element: Any, container: Any) -> bool:
    """CEL ``element in container``: list membership by ``==``, or map key presence."""
    if type(container) in LIST_TYPES:
        charge(frame, len(container) // 10)
        error: EvalError | None = None
        for item in container:
            # Upstream asks each list element whether it equals the value.
            try:
                if cel_eq(item, element):
                    return True
            except EvalError as exc:
                error = error or exc
        if error is not None:
            raise error
        return False
    if isinstance(container, Mapping):
        if type(container) is DefaultingMap:
            return element in container
        return map_find(container, element)[0]
    raise no_such_overload("@in", element, container)


def logical_not(a: Any) -> bool:
    if a is True:
        return False
    if a is False:
        return True
    raise no_such_overload("!_", a)


# -- field selection, indexing, presence ------------------------------------------------

_DEVICE_FIELDS: Final = frozenset({"driver", "attributes", "capacity", "allowMultipleAllocations"})


def device_field(device: CelDevice, name: str) -> Any:
    """A field of ``device``; the attribute and capacity maps default absent domains."""
    if name == "driver":
        return device.driver
    if name == "attributes":
        return DefaultingMap(device.attributes)
    if name == "capacity":
        return DefaultingMap(device.capacity)
    if name == "allowMultipleAllocations":
        return device.allow_multiple_allocations
    raise EvalError(f"no such field: {name}")


def map_find(m: Mapping[Any, Any], key: Any) -> tuple[bool, Any]:
    """Look ``key`` up as CEL does: numbers match across int/uint/double, bool only bool."""
    if type(m) is DefaultingMap:
        return True, m[key]
    tk = type(key)
    if tk is str:
        try:
            return True, m[key]
        except KeyError:
            return False, None
    if tk is bool or tk in NUMBER_TYPES:
        # Python equates True with 1; CEL does not, so compare types while scanning.
        for candidate, value in m.items():
            tc = type(candidate)
            if tk is bool:
                if tc is bool and candidate is key:
                    return True, value
            elif tc in NUMBER_TYPES and candidate == key:
                return True, value
        return False, None
    raise EvalError(f"unsupported key type: {type_name(key)}")


def select(value: Any, name: str) -> Any:
    """``value.name``: a map entry (``no such key`` when absent) or a device field."""
    if isinstance(value, Mapping):
        found, result = map_find(value, name)
        if found:
            return result
        raise no_such_key(name)
    if type(value) is CelDevice:
        return device_field(value, name)
    if type(value) is CelOptional:
        return select_optional(value, name)
    raise EvalError(f"no such overload: field selection '.{name}' on {type_name(value)}")


def has_field(value: Any, name: str) -> bool:
    """``has(value.name)``."""
    if isinstance(value, Mapping):
        if type(value) is DefaultingMap:
            return True
        return map_find(value, name)[0]
    if type(value) is CelDevice:
        return name in _DEVICE_FIELDS
    raise EvalError(f"no such overload: has() on {type_name(value)}")


def select_optional(value: Any, name: str) -> CelOptional:
    """``value.?name``; also a plain selection on an optional value (optional chaining)."""
    if type(value) is CelOptional:
        if not value.present:
            return OPTIONAL_NONE
        value = value.value
    if isinstance(value, Mapping):
        found, result = map_find(value, name)
        return CelOptional(result) if found else OPTIONAL_NONE
    if type(value) is CelDevice:
        return CelOptional(device_field(value, name)) if name in _DEVICE_FIELDS else OPTIONAL_NONE
    raise EvalError(f"no such overload: field selection '.?{name}' on {type_name(value)}")


def _list_position(lst: Sequence[Any], key: Any) -> int:
    tk = type(key)
    if tk is int or tk is UInt or (tk is float and key.is_integer()):
        position = int(key)
    else:
        raise no_such_overload("_[_]", lst, key)
    return position


def index(value: Any, key: Any) -> Any:
    """``value[key]`` on a list or a map."""
    if type(value) in LIST_TYPES:
        position = _list_position(value, key)
        if 0 <= position < len(value):
            return value[position]
        raise EvalError(f"index '{position}' out of range in list size '{len(value)}'")
    if isinstance(value, Mapping):
        found, result = map_find(value, key)
        if found:
            return result
        raise no_such_key(key)
    if type(value) is CelOptional:
        return index_optional(value, key)
    raise no_such_overload("_[_]", value, key)


def index_optional(value: Any, key: Any) -> CelOptional:
    """``value[?key]``; also a plain index on an optional value."""
    if type(value) is CelOptional:
        if not value.present:
            return OPTIONAL_NONE
        value = value.value
    if type(value) in LIST_TYPES:
        position = _list_position(value, key)
        return CelOptional(value[position]) if 0 <= position < len(value) else OPTIONAL_NONE
    if isinstance(value, Mapping):
        found, result = map_find(value, key)
        return CelOptional(result) if found else OPTIONAL_NONE
    raise no_such_overload("_[?_]", value, key)


def range_items(value: Any) -> Sequence[Any]:
    """What a one-variable macro iterates: a list's elements or a map's keys."""
    if type(value) in LIST_TYPES:
        return value  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        return list(value)
    raise EvalError(f"cannot iterate over a value of type {type_name(value)}")


def range_pairs(value: Any) -> list[tuple[Any, Any]]:
    """What a two-variable macro iterates: (index, element) of a list, (key, value) of a map."""
    if type(value) in LIST_TYPES:
        return list(enumerate(value))
    if isinstance(value, Mapping):
        return list(value.items())
    raise EvalError(f"cannot iterate over a value of type {type_name(value)}")


def build_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A map literal's value; repeated keys and invalid key types are errors."""
    result: dict[Any, Any] = {}
    for key, value in pairs:
        if type(key) not in (str, int, UInt, bool):
            raise EvalError(f"unsupported key type: {type_name(key)}")
        if map_find(result, key)[0]:
            raise EvalError(f"Failed with repeated key: {key!r}")
        if key in result:
            # Distinct in CEL, equal in Python (true and 1): a Python dict cannot hold both.
            raise EvalError("unsupported map literal: keys true/false together with 1/0")
        result[key] = value
    return result


# -- conversion to text -----------------------------------------------------------------


def format_double(value: float) -> str:
    """A double as CEL's ``string()`` writes it (shortest form, Go's ``%g`` rules)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0.0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign_, digits_t, exponent = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digits_t))
    assert isinstance(exponent, int)
    point = len(digits) + exponent  # position of the decimal point after the first digit run
    sign = "-" if sign_ else ""
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def to_text(value: Any) -> str:
    """``string(value)`` for the scalar types; raise ``no such overload`` otherwise."""
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is bool:
        return "true" if value else "false"
    if t is int or t is UInt:
        return str(int(value))
    if t is float:
        return format_double(value)
    if t is bytes:
        try:
            return value.decode("utf-8")  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            raise EvalError("invalid UTF-8 in bytes, cannot convert to string") from None
    if t is TypeValue:
        return value.name  # type: ignore[no-any-return]
    if t is Quantity:
        # Reachable through dyn only; upstream's Quantity converts to its canonical text.
        return str(value)
    raise no_such_overload("string", value)
