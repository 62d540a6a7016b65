"""Semantic versions: strict parsing, CEL's normalising parse, precedence."""

import itertools

import pytest

from api.semver import Semver


@pytest.mark.parametrize(
    "text", ["1.2.3", "0.0.0", "550.54.15", "1.0.0-rc.1", "1.0.0+build.5", "1.0.0-0.a-b+x"]
)
def test_strict_accepts_semver(text: str) -> None:
    assert str(Semver.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    ["1.2", "v1.2.3", "01.2.3", "1.02.3", "1.2.3-01", "1.2.3.4", "", "a.b.c", "1.2.3-", "1.2.3\n"],
)
def test_strict_rejects_non_semver(text: str) -> None:
    with pytest.raises(ValueError, match="not a semantic version"):
        Semver.parse(text)


@pytest.mark.parametrize(
    ("text", "normal"),
    [("v1.2.3", "1.2.3"), ("1.0", "1.0.0"), ("9", "9.0.0"), ("01.02.03", "1.2.3")],
)
def test_normalize_repairs_loose_versions(text: str, normal: str) -> None:
    assert str(Semver.parse(text, normalize=True)) == normal


def test_precedence() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
        "2.0.0",
    ]
    versions = [Semver.parse(v) for v in ordered]
    assert sorted(reversed(versions)) == versions
    assert all(a.compare(b) == -1 for a, b in itertools.pairwise(versions))
    assert Semver.parse("1.0.0+a") == Semver.parse("1.0.0+b")
    assert Semver.parse("9.0.0").compare(Semver.parse("8.9.0")) == 1
