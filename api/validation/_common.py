"""Shared plumbing of the validation modules: the path and error-list types and the
helpers that append one :class:`FieldError` in the house wording (required, too many,
unsupported value, duplicates).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

from api.errors import FieldError
from api.resource_v1 import field_path

Path: TypeAlias = tuple[str | int, ...]
Errors: TypeAlias = list[FieldError]


def _error(errors: Errors, path: Path, message: str) -> None:
    errors.append(FieldError(field_path(path), message))


def _required(errors: Errors, path: Path, what: str = "") -> None:
    _error(errors, path, f"required{': ' + what if what else ''}")


def _too_many(
    errors: Errors, path: Path, count: int, limit: int, what: str, *, why: str = ""
) -> None:
    _error(errors, path, f"too many {what}: {count}, at most {limit} allowed{why}")


def unsupported_value(value: object, supported: Iterable[str]) -> str:
    """The message for an enumerated field with a value outside ``supported``."""
    shown = ", ".join(f'"{s}"' for s in supported)
    return f'unsupported value "{value}": supported values {shown}'


def _not_supported(errors: Errors, path: Path, value: object, supported: Iterable[str]) -> None:
    _error(errors, path, unsupported_value(value, supported))


def _duplicates(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for value in values:
        if value in seen and value not in dups:
            dups.append(value)
        seen.add(value)
    return dups
