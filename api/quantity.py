"""Kubernetes resource quantities (``80Gi``, ``500m``, ``1e3``), exact and canonical.

A quantity is a signed decimal number with an optional suffix:

- binary SI: ``Ki Mi Gi Ti Pi Ei`` (powers of 1024),
- decimal SI: ``n u m "" k M G T P E`` (powers of 1000),
- decimal exponent: ``e<int>`` / ``E<int>``.

Values are kept exactly as fractions, so ``50M < 50Mi`` and ``1024Mi == 1Gi`` hold.
``str(q)`` gives the canonical form the API server stores: the suffix family of
the input is kept, the mantissa is the smallest integer, and precision below
one nano-unit is rounded up, as upstream does.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import total_ordering
from typing import Final, Literal

from api import limits

Format = Literal["BinarySI", "DecimalSI", "DecimalExponent"]

_BINARY: Final[dict[str, int]] = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL: Final[dict[str, int]] = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_DECIMAL_BY_EXP: Final[dict[int, str]] = {v: k for k, v in _DECIMAL.items()}
_BINARY_BY_EXP: Final[dict[int, str]] = {v: k for k, v in _BINARY.items()}

# sign, digits with an optional fraction, then a suffix (validated separately).
_QUANTITY_RE: Final = re.compile(r"^([+-]?)(\d+\.?\d*|\.\d+)(.*)$")
_EXPONENT_RE: Final = re.compile(r"^[eE]([+-]?\d+)$")

_NANO: Final = Fraction(1, 10**9)
# Upstream refuses exponents this large: they cannot be represented.
_MAX_EXPONENT: Final = 10**4


@total_ordering
class Quantity:
    """An exact, immutable quantity; ordered and compared by value, hashable."""

    __slots__ = ("_format", "_value")

    def __init__(self, value: Fraction | int, fmt: Format = "DecimalSI") -> None:
        self._value = Fraction(value)
        self._format: Format = fmt

    @classmethod
    def parse(cls, text: str | int) -> Quantity:
        """Parse ``text`` as the API server does; raise ValueError naming the problem."""
        if isinstance(text, bool):
            raise ValueError(f"quantity must be a string or an integer, not {text!r}")
        if isinstance(text, int):
            return cls(text, "DecimalSI")
        if not isinstance(text, str):
            raise ValueError(f"quantity must be a string or an integer, not {type(text).__name__}")
        s = text.strip()
        match = _QUANTITY_RE.match(s)
        if not s or match is None:
            raise ValueError(
                f"quantity {text!r} must match the regular expression "
                r"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            )
        sign, number, suffix = match.groups()
        magnitude = Fraction(number)
        fmt: Format
        if suffix in _BINARY:
            fmt = "BinarySI"
            magnitude *= 2 ** _BINARY[suffix]
        elif suffix in _DECIMAL:
            fmt = "DecimalSI"
            magnitude *= Fraction(10) ** _DECIMAL[suffix]
        else:
            exp = _EXPONENT_RE.match(suffix)
            if exp is None:
                raise ValueError(f"quantity {text!r} has an unknown suffix {suffix!r}")
            power = int(exp.group(1))
            if abs(power) > _MAX_EXPONENT:
                raise ValueError(f"quantity {text!r} has an exponent out of range")
            fmt = "DecimalExponent"
            magnitude *= Fraction(10) ** power
        value = -magnitude if sign == "-" else magnitude
        return cls(_round_up_to_nano(value), fmt)

    # -- value access -------------------------------------------------------------

    @property
    def value(self) -> Fraction:
        return self._value

    @property
    def format(self) -> Format:
        return self._format

    def sign(self) -> int:
        return (self._value > 0) - (self._value < 0)

    def is_integer(self) -> bool:
        """True when the value is a whole number that fits in int64 (CEL's ``isInteger``)."""
        return self._value.denominator == 1 and limits.INT64_MIN <= self._value <= limits.INT64_MAX

    def as_integer(self) -> int:
        """The value as int64; raise OverflowError when it is fractional or out of range."""
        if not self.is_integer():
            raise OverflowError(f"cannot convert value {self} to an int64")
        return int(self._value)

    def as_approximate_float(self) -> float:
        return float(self._value)

    # -- arithmetic and comparison ------------------------------------------------

    def __add__(self, other: Quantity | int) -> Quantity:
        other_value = other._value if isinstance(other, Quantity) else Fraction(other)
        return Quantity(self._value + other_value, self._format)

    def __sub__(self, other: Quantity | int) -> Quantity:
        other_value = other._value if isinstance(other, Quantity) else Fraction(other)
        return Quantity(self._value - other_value, self._format)

    def __neg__(self) -> Quantity:
        return Quantity(-self._value, self._format)

    def compare(self, other: Quantity) -> int:
        """-1, 0 or 1, as CEL's ``compareTo``."""
        return (self._value > other._value) - (self._value < other._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Quantity):
            return self._value == other._value
        return NotImplemented

    def __lt__(self, other: Quantity) -> bool:
        if isinstance(other, Quantity):
            return self._value < other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return self._value != 0

    # -- text ---------------------------------------------------------------------

    def __str__(self) -> str:
        return _canonical(self._value, self._format)

    def __repr__(self) -> str:
        return f"Quantity({str(self)!r})"


def _round_up_to_nano(value: Fraction) -> Fraction:
    """Values are kept at nano precision; finer digits round away from zero (upstream)."""
    if (value / _NANO).denominator == 1:
        return value
    scaled = value / _NANO
    whole = (
        -((-scaled.numerator) // scaled.denominator)
        if value > 0
        else scaled.numerator // scaled.denominator
    )
    return whole * _NANO


def _canonical(value: Fraction, fmt: Format) -> str:
    if value == 0:
        return "0"
    if fmt == "BinarySI" and (abs(value) < 1024 or value.denominator != 1):
        # Upstream: small or fractional binary amounts are written in decimal SI.
        fmt = "DecimalSI"
    if fmt == "BinarySI":
        integer = int(value)
        exp = 0
        while exp < 60 and integer % 1024 == 0:
            integer //= 1024
            exp += 10
        return f"{integer}{_BINARY_BY_EXP[exp]}" if exp else str(integer)
    # Decimal: the largest exponent (multiple of 3, within the suffix range for
    # DecimalSI) that leaves an integer mantissa.
    exp = -9
    mantissa = value * 10**9
    while True:
        nxt = mantissa / 1000
        if nxt.denominator != 1 or (fmt == "DecimalSI" and exp + 3 > 18):
            break
        mantissa = nxt
        exp += 3
    digits = int(mantissa)
    if fmt == "DecimalExponent":
        return f"{digits}e{exp}" if exp else str(digits)
    return f"{digits}{_DECIMAL_BY_EXP[exp]}"


def parse_quantity(text: str | int) -> Quantity:
    """Shorthand for :meth:`Quantity.parse`."""
    return Quantity.parse(text)
