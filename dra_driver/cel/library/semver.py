"""The Kubernetes semver library: ``semver()``, ``isSemver()`` and the methods of
``kubernetes.Semver``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.semver import Semver
from dra_driver.cel.runtime import EvalError, no_such_overload
from dra_driver.cel.types import BOOL, INT, SEMVER, STRING

if TYPE_CHECKING:
    from dra_driver.cel.library import Registry


def semver(text: Any, normalize: Any = False) -> Semver:
    """``semver("1.2.3")``, ``semver("v1.2", true)`` (normalising); invalid text is an error."""
    if type(text) is not str or type(normalize) is not bool:
        raise no_such_overload("semver", text, normalize)
    try:
        return Semver.parse(text, normalize=normalize)
    except ValueError as exc:
        raise EvalError(str(exc)) from None


def is_semver(text: Any, normalize: Any = False) -> bool:
    if type(text) is not str or type(normalize) is not bool:
        raise no_such_overload("isSemver", text, normalize)
    try:
        Semver.parse(text, normalize=normalize)
    except ValueError:
        return False
    return True


def _version(function: str, value: Any) -> Semver:
    if type(value) is not Semver:
        raise no_such_overload(function, value)
    return value


def major(value: Any) -> int:
    return _version("major", value).major


def minor(value: Any) -> int:
    return _version("minor", value).minor


def patch(value: Any) -> int:
    return _version("patch", value).patch


def _pair(function: str, value: Any, other: Any) -> tuple[Semver, Semver]:
    if type(value) is not Semver or type(other) is not Semver:
        raise no_such_overload(function, value, other)
    return value, other


def is_greater_than(value: Any, other: Any) -> bool:
    a, b = _pair("isGreaterThan", value, other)
    return a.compare(b) > 0


def is_less_than(value: Any, other: Any) -> bool:
    a, b = _pair("isLessThan", value, other)
    return a.compare(b) < 0


def compare_to(value: Any, other: Any) -> int:
    a, b = _pair("compareTo", value, other)
    return a.compare(b)


def register(registry: Registry) -> None:
    registry.define("semver", [((STRING,), SEMVER), ((STRING, BOOL), SEMVER)], impl=semver)
    registry.define("isSemver", [((STRING,), BOOL), ((STRING, BOOL), BOOL)], impl=is_semver)
    for name, impl, signatures in (
        ("major", major, [((SEMVER,), INT)]),
        ("minor", minor, [((SEMVER,), INT)]),
        ("patch", patch, [((SEMVER,), INT)]),
        ("isGreaterThan", is_greater_than, [((SEMVER, SEMVER), BOOL)]),
        ("isLessThan", is_less_than, [((SEMVER, SEMVER), BOOL)]),
        ("compareTo", compare_to, [((SEMVER, SEMVER), INT)]),
    ):
        registry.define(name, signatures, member=True, impl=impl, receivers=(Semver,))
