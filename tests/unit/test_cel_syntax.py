"""CEL grammar: literals, escapes, precedence, macros' syntax, and syntax errors."""

from __future__ import annotations

import math

import pytest
from cel_expressions import value_of

from api.errors import CelCompileError
from dra_driver.cel import ast, compile_selector
from dra_driver.cel.lexer import SyntaxProblem, tokenize
from dra_driver.cel.parser import parse
from dra_driver.cel.runtime import UInt


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("0", 0),
        ("123", 123),
        ("0x1F", 31),
        ("0XfF", 255),
        ("-42", -42),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("1.5e-3", 0.0015),
        ("2E+2", 200.0),
        ("-1.5", -1.5),
        ("true", True),
        ("false", False),
        ("null", None),
    ],
)
def test_scalar_literals(source: str, expected: object) -> None:
    value = value_of(source)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"), [("1u", 1), ("0x10U", 16), ("18446744073709551615u", 2**64 - 1)]
)
def test_uint_literals_are_uint(source: str, expected: int) -> None:
    value = value_of(source)
    assert type(value) is UInt
    assert value == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (r'"a\nb"', "a\nb"),
        (r"'tab\there'", "tab\there"),
        (r'"\a\b\f\r\v"', "\a\b\f\r\v"),
        (r'"q\"q"', 'q"q'),
        (r"'q\'q'", "q'q"),
        (r'"\\"', "\\"),
        (r'"\`\?"', "`?"),
        (r'"\x41\X42"', "AB"),
        (r'"\101"', "A"),
        (r'"\u00e9"', "é"),
        (r'"\U0001F600"', "\U0001f600"),
        ('"é"', "é"),
        (r'r"a\nb"', r"a\nb"),
        (r"R'\d+'", r"\d+"),
        ('"""line1\nline2"""', "line1\nline2"),
        ("'''it's'''", "it's"),
        ('""', ""),
    ],
)
def test_string_literals(source: str, expected: str) -> None:
    assert value_of(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (r'b"\xff"', b"\xff"),
        (r"b'\000\001'", b"\x00\x01"),
        ('b"é"', "é".encode()),
        (r'B"a\n"', b"a\n"),
        (r'rb"\x"', b"\\x"),
        (r'BR"\n"', b"\\n"),
    ],
)
def test_bytes_literals(source: str, expected: bytes) -> None:
    assert value_of(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("2 * 3 % 4", 2),
        ("100 / 10 / 5", 2),
        ("1 < 2 == true", True),
        ("true || false && false", True),
        ("(true || false) && false", False),
        ("false ? 1 : true ? 2 : 3", 2),
        ("true ? (false ? 1 : 2) : 3", 2),
        ("!true || true", True),
        ("!!true", True),
        ("!!!true", False),
        ("-(1)", -1),
        ("--1", 1),
        ("- -2", 2),
        ("-(-9223372036854775807)", 2**63 - 1),
        ("1 + // a comment\n 2", 3),
        ("1 in [1, 2] && 3 in [3]", True),
        ("2 + 3 in [5]", True),
    ],
)
def test_precedence_and_associativity(source: str, expected: object) -> None:
    assert value_of(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("[]", []),
        ("[1, 2, 3,]", [1, 2, 3]),
        ("[[1], [2, 3]][1][0]", 2),
        ('{"a": 1, "b": 2,}', {"a": 1, "b": 2}),
        ("{}", {}),
        ('{"a": {"b": [1, 2]}}.a.b[1]', 2),
        ('{"a": {"b": [1, 2]}}["a"]["b"][0]', 1),
        ("{1: 'x', 2u: 'y', 'k': 'z'}.size()", 3),
        ("{true: 'a', false: 'b'}[false]", "b"),
        ("{'a-b': 1}.`a-b`", 1),
        ("[1, ?optional.none(), ?optional.of(3)]", [1, 3]),
        ('{?"a": optional.none(), "b": 1, ?"c": optional.of(2)}', {"b": 1, "c": 2}),
    ],
)
def test_aggregate_literals_and_access(source: str, expected: object) -> None:
    assert value_of(source) == expected


def test_double_literal_nan_arithmetic() -> None:
    assert math.isnan(value_of("0.0 / 0.0"))


def test_logical_chains_are_balanced_trees() -> None:
    # Upstream balances long && / || runs, so that a long generated selector does not
    # nest deeply.
    tree = parse(" || ".join(["x"] * 64))
    assert ast.depth(tree) == 7


def test_macros_are_recognised_by_name_and_arity() -> None:
    tree = parse("l.all(x, x > 0)")
    assert isinstance(tree, ast.Comprehension)
    assert (tree.macro, tree.var, tree.var2) == ("all", "x", None)
    two = parse("m.exists(k, v, v > 0)")
    assert isinstance(two, ast.Comprehension)
    assert (two.var, two.var2) == ("k", "v")
    # Wrong arity: a plain call of a function named "all".
    assert isinstance(parse("l.all(x)"), ast.Call)
    bind = parse("cel.bind(v, 1, v)")
    assert isinstance(bind, ast.Comprehension)
    assert bind.macro == "bind"
    has = parse("has(a.b)")
    assert isinstance(has, ast.Select)
    assert has.test_only


def test_tokens_carry_offsets() -> None:
    tokens = tokenize("a  == 'x'")
    assert [(t.kind, t.offset) for t in tokens] == [
        ("ident", 0),
        ("==", 3),
        ("string", 6),
        ("eof", 9),
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "mismatched input '<EOF>'"),
        ("1 +", "mismatched input '<EOF>'"),
        ("(1", "expecting ')'"),
        ("[1, 2", "expecting ',' or ']'"),
        ("{1: }", "mismatched input '}'"),
        ("a.", "expecting IDENTIFIER"),
        ("1 = 1", "token recognition error at: '='"),
        ("1 & 2", "token recognition error at: '&'"),
        ("'abc", "unterminated string literal"),
        ("'a\nb'", "newline in string literal"),
        (r"'\q'", "invalid escape sequence"),
        (r"'\x4'", "invalid \\x escape sequence"),
        (r"'\ud800'", "invalid unicode code point"),
        (r"b'\u0041'", "unicode escape in a bytes literal"),
        ("if", "reserved identifier: if"),
        ("x.all(1, true)", "argument must be a simple name"),
        ("m.exists(k, k, true)", "duplicate variable name: k"),
        ("has(a)", "invalid argument to has() macro"),
        ("has(a.?b)", "invalid argument to has() macro"),
        ("9223372036854775808", "invalid int literal"),
        ("--9223372036854775808", "invalid int literal"),
        ("18446744073709551616u", "invalid uint literal"),
        ("a.?b(1)", "mismatched input '('"),
        ("1 2", "expecting <EOF>"),
        ("true ? 1", "expecting ':'"),
        ("true ? false ? 1 : 2 : 3", "expecting ':'"),
    ],
)
def test_syntax_errors(source: str, message: str) -> None:
    with pytest.raises(SyntaxProblem) as info:
        parse(source)
    assert message in info.value.message


def test_syntax_errors_surface_as_compile_errors_with_position() -> None:
    with pytest.raises(CelCompileError) as info:
        compile_selector("device.driver == 'x' &&")
    error = info.value
    assert error.expression == "device.driver == 'x' &&"
    assert error.reason.startswith("compilation failed: ERROR: <input>:1:24: Syntax error")
    assert error.reason.endswith(" | device.driver == 'x' &&\n | .......................^")


def test_error_position_on_a_later_line() -> None:
    with pytest.raises(CelCompileError) as info:
        compile_selector("device.driver == 'x' &&\n  nope")
    assert "ERROR: <input>:2:3: undeclared reference to 'nope'" in info.value.reason
    assert info.value.reason.endswith(" |   nope\n | ..^")


def test_deep_nesting_is_rejected_not_a_crash() -> None:
    deep = "(" * 150 + "true" + ")" * 150
    with pytest.raises(CelCompileError, match="recursion limit exceeded"):
        compile_selector(deep)
    long_chain = "1" + " + 1" * 300 + " > 0"
    with pytest.raises(CelCompileError, match="recursion limit exceeded"):
        compile_selector(long_chain)


def test_moderate_nesting_compiles() -> None:
    assert compile_selector("(" * 40 + "true" + ")" * 40).evaluate(None) is True  # type: ignore[arg-type]
