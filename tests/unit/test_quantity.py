"""Quantities parse, compare and print as the API server does."""

from fractions import Fraction

import pytest

from api.quantity import Quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("80Gi", 80 * 2**30),
        ("1Ki", 1024),
        ("500m", Fraction(1, 2)),
        ("1.5", Fraction(3, 2)),
        ("1e3", 1000),
        ("1E-3", Fraction(1, 1000)),
        ("-2k", -2000),
        ("+7", 7),
        (".5Gi", 2**29),
        ("1n", Fraction(1, 10**9)),
        ("0", 0),
    ],
)
def test_parse_gives_exact_values(text: str, value: Fraction | int) -> None:
    assert Quantity.parse(text).value == value


@pytest.mark.parametrize("text", ["", "Gi", "1Xi", "1.2.3", "1 Gi", "abc", "1e", "--1", "1ee3"])
def test_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        Quantity.parse(text)


def test_binary_and_decimal_suffixes_compare_by_value() -> None:
    assert Quantity.parse("50M") < Quantity.parse("50Mi")
    assert Quantity.parse("1024Mi") == Quantity.parse("1Gi")
    assert Quantity.parse("1000m") == Quantity.parse("1")
    assert Quantity.parse("40Gi").compare(Quantity.parse("80Gi")) == -1
    assert Quantity.parse("80Gi").compare(Quantity.parse("80Gi")) == 0


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("80Gi", "80Gi"),
        ("1024Mi", "1Gi"),
        ("1536Mi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1000m", "1"),
        ("1500", "1500"),
        ("1000", "1k"),
        ("0.1", "100m"),
        ("100Mi", "100Mi"),
        ("512", "512"),
        ("1e3", "1e3"),
        ("1500e3", "1500e3"),
        ("0.0000000001", "1n"),
        ("0", "0"),
        ("-1Gi", "-1Gi"),
    ],
)
def test_str_is_the_canonical_form(text: str, canonical: str) -> None:
    assert str(Quantity.parse(text)) == canonical


def test_arithmetic_and_integer_views() -> None:
    q = Quantity.parse("10Gi")
    assert str(q + Quantity.parse("10Gi")) == "20Gi"
    assert (q - 10 * 2**30).sign() == 0
    assert Quantity.parse("-3").sign() == -1
    assert Quantity.parse("1.5").is_integer() is False
    assert Quantity.parse("2k").as_integer() == 2000
    assert Quantity.parse("250m").as_approximate_float() == 0.25
    with pytest.raises(OverflowError):
        Quantity.parse("1.5").as_integer()
    with pytest.raises(OverflowError):
        Quantity.parse("100E").as_integer()


def test_equal_quantities_hash_alike() -> None:
    assert len({Quantity.parse("1Gi"), Quantity.parse("1024Mi"), Quantity.parse("1G")}) == 2
