"""Semantic versions (semver 2.0.0), as ResourceSlice ``version`` attributes and CEL use them.

Strict parsing is what the API server applies to ``version`` attributes:
``MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]``, no leading zeros, no ``v`` prefix.
``normalize=True`` is CEL's ``semver(s, true)``: it strips a leading ``v``, pads
``1`` and ``1.2`` with zeros and drops leading zeros of the numbers.

Equality and ordering follow semver precedence: build metadata is ignored and a
pre-release sorts before its release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering
from typing import Final

_IDENT: Final = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
_STRICT_RE: Final = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_LOOSE_CORE_RE: Final = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(.*)$")


@total_ordering
@dataclass(frozen=True, slots=True, eq=False)
class Semver:
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()
    build: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str, normalize: bool = False) -> Semver:
        """Parse ``text``; raise ValueError saying why it is not a semantic version."""
        if not isinstance(text, str):
            raise ValueError(f"version must be a string, not {type(text).__name__}")
        if normalize:
            text = _normalize(text)
        match = _STRICT_RE.fullmatch(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], "
                "no leading zeros, no 'v' prefix)"
            )
        major, minor, patch, pre, build = match.groups()
        prerelease = tuple(int(p) if p.isdigit() else p for p in pre.split(".")) if pre else ()
        return cls(
            int(major),
            int(minor),
            int(patch),
            prerelease,
            tuple(build.split(".")) if build else (),
        )

    def compare(self, other: Semver) -> int:
        """-1, 0 or 1 by semver precedence (build metadata ignored)."""
        mine = (self.major, self.minor, self.patch)
        theirs = (other.major, other.minor, other.patch)
        if mine != theirs:
            return -1 if mine < theirs else 1
        return _compare_prerelease(self.prerelease, other.prerelease)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Semver):
            return self.compare(other) == 0
        return NotImplemented

    def __lt__(self, other: Semver) -> bool:
        if isinstance(other, Semver):
            return self.compare(other) < 0
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.major, self.minor, self.patch, self.prerelease))

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(p) for p in self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text


def _normalize(text: str) -> str:
    match = _LOOSE_CORE_RE.fullmatch(text)
    if match is None:
        return text
    major, minor, patch, rest = match.groups()
    return f"{int(major)}.{int(minor or 0)}.{int(patch or 0)}{rest}"


def _compare_prerelease(a: tuple[int | str, ...], b: tuple[int | str, ...]) -> int:
    if a == b:
        return 0
    if not a:
        return 1  # a release ranks above any of its pre-releases
    if not b:
        return -1
    for x, y in zip(a, b, strict=False):
        if x == y:
            continue
        if isinstance(x, int) and isinstance(y, int):
            return -1 if x < y else 1
        if isinstance(x, int):
            return -1  # numeric identifiers rank below alphanumeric ones
        if isinstance(y, int):
            return 1
        return -1 if x < y else 1
    return -1 if len(a) < len(b) else 1
