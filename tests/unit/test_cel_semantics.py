"""CEL evaluation semantics: arithmetic, equality, ordering, errors and their absorption,
indexing, macros, optionals, conversions, static type errors.

One module on purpose (about 570 lines): one table of expression-to-result cases, read as one spec.
"""

from __future__ import annotations

import math

import pytest
from cel_expressions import REGISTRY, check_errors, error_of, value_of

from dra_driver.cel.checker import check
from dra_driver.cel.parser import parse
from dra_driver.cel.runtime import TypeValue, UInt


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("7 / -2", -3),
        ("-7 % 2", -1),
        ("7 % -2", 1),
        ("2 * 3 - 10", -4),
        ("7u / 2u", 3),
        ("7u % 4u", 3),
        ("2u * 3u + 1u", 7),
        ("1.5 * 2.0", 3.0),
        ("1.0 / 4.0", 0.25),
        ("1.0 / 0.0", math.inf),
        ("-1.0 / 0.0", -math.inf),
        ("'ab' + 'cd'", "abcd"),
        ("b'a' + b'b'", b"ab"),
        ("[1] + [2, 3]", [1, 2, 3]),
        ("-(-3)", 3),
        ("dyn(1) + 2", 3),
    ],
)
def test_arithmetic(expression: str, expected: object) -> None:
    assert value_of(expression) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("9223372036854775807 + 1", "integer overflow"),
        ("-9223372036854775808 - 1", "integer overflow"),
        ("4611686018427387904 * 2", "integer overflow"),
        ("-9223372036854775808 / -1", "integer overflow"),
        ("-9223372036854775808 % -1", "integer overflow"),
        ("-(-9223372036854775807 - 1)", "integer overflow"),
        ("5u - 6u", "unsigned integer overflow"),
        ("18446744073709551615u + 1u", "unsigned integer overflow"),
        ("1 / 0", "division by zero"),
        ("1u / 0u", "division by zero"),
        ("1 % 0", "modulus by zero"),
        ("dyn(1) + 1.0", "no such overload: _+_(int, double)"),
        ("dyn('a') - dyn('b')", "no such overload: _-_(string, string)"),
        ("-dyn('a')", "no such overload: -_(string)"),
    ],
)
def test_arithmetic_errors(expression: str, reason: str) -> None:
    assert error_of(expression) == reason


def test_uint_results_stay_uint() -> None:
    assert type(value_of("1u + 2u")) is UInt
    assert type(value_of("7u / 2u")) is UInt


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 == 1", True),
        ("dyn(1) == 1.0", True),
        ("dyn(1u) == 1", True),
        ("dyn(2) == 2u", True),
        ("dyn(1) == '1'", False),
        ("dyn(true) == 1", False),
        ("dyn(0) == false", False),
        ("null == null", True),
        ("dyn(null) == 0", False),
        ("dyn(0) == null", False),
        ("[1, 2] == [1, 2]", True),
        ("[1, 2] == [2, 1]", False),
        ("[1, dyn(2.0)] == [1, 2]", True),
        ("dyn([1]) == [1, 2]", False),
        ("{'a': 1, 'b': 2} == {'b': 2, 'a': 1}", True),
        ("{'a': 1} == {'a': 2}", False),
        ("{'a': 1} == {'b': 1}", False),
        ("dyn({'a': 1}) == ['a']", False),
        ("0.0 / 0.0 == 0.0 / 0.0", False),
        ("1 != 2", True),
        ("'a' != 'a'", False),
        ("b'x' == b'x'", True),
        ("optional.of(1) == optional.of(1)", True),
        ("optional.of(1) == optional.none()", False),
        ("type(1) == int", True),
        ("semver('1.0.0') == semver('1.0.0+build.5')", True),
        ("semver('1.0.0-rc.1') == semver('1.0.0')", False),
        ("quantity('1Gi') == quantity('1024Mi')", True),
        ("quantity('1k') == quantity('1000')", True),
        # A Semver or Quantity on the right of a plain type is simply unequal.
        ("dyn('1.0.0') == semver('1.0.0')", False),
        ("dyn(1) == quantity('1')", False),
    ],
)
def test_equality(expression: str, expected: bool) -> None:
    assert value_of(expression) is expected


@pytest.mark.parametrize(
    "expression",
    [
        "semver('1.0.0') == dyn('1.0.0')",
        "semver('1.0.0') != dyn('1.0.0')",
        "quantity('1') == dyn(1)",
        "quantity('1') == dyn(semver('1.0.0'))",
    ],
)
def test_kubernetes_types_reject_equality_with_other_types(expression: str) -> None:
    assert error_of(expression).startswith("no such overload")


def test_equality_of_different_static_types_does_not_compile() -> None:
    assert check_errors("1 == 1.0") == [
        "found no matching overload for '_==_' applied to '(int, double)'"
    ]
    assert check_errors("'a' == 1") == [
        "found no matching overload for '_==_' applied to '(string, int)'"
    ]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 4", False),
        ("4 >= 5", False),
        ("1 < 1.5", True),
        ("2u > 1", True),
        ("1.0 >= 1u", True),
        ("-1 < 0u", True),
        ("'a' < 'b'", True),
        ("'B' < 'a'", True),
        ("b'a' < b'b'", True),
        ("false < true", True),
        ("0.0 / 0.0 < 1.0", False),
        ("0.0 / 0.0 >= 1.0", False),
    ],
)
def test_ordering(expression: str, expected: bool) -> None:
    assert value_of(expression) is expected


@pytest.mark.parametrize(
    "expression",
    [
        "dyn(1) < 'a'",
        "dyn(true) < 1",
        "dyn([1]) < dyn([2])",
        "dyn(semver('1.0.0')) < dyn(semver('2.0.0'))",
    ],
)
def test_ordering_of_unordered_values_is_an_error(expression: str) -> None:
    assert error_of(expression).startswith("no such overload: _<_(")


def test_ordering_semver_or_quantity_does_not_compile() -> None:
    # Even against a dyn operand: no ordering overload takes a Semver or a Quantity.
    assert check_errors("dyn(1) < semver('2.0.0')") == [
        "found no matching overload for '_<_' applied to '(dyn, kubernetes.Semver)'"
    ]
    assert check_errors("semver('1.0.0') < semver('2.0.0')") == [
        "found no matching overload for '_<_' applied to '(kubernetes.Semver, kubernetes.Semver)'"
    ]
    assert check_errors("quantity('1') > quantity('2')") == [
        "found no matching overload for '_>_' applied to "
        "'(kubernetes.Quantity, kubernetes.Quantity)'"
    ]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # An error on one side is absorbed when the other side decides the result,
        # whichever side it is on (CEL's commutative && and ||).
        ("false && 1 / 0 == 1", False),
        ("1 / 0 == 1 && false", False),
        ("true || 1 / 0 == 1", True),
        ("1 / 0 == 1 || true", True),
        ("dyn(1) && false", False),
        ("false && dyn(1)", False),
        ("dyn('x') || true", True),
        ("true ? 1 : 1 / 0", 1),
        ("false ? 1 / 0 : 2", 2),
        ("true && true", True),
        ("false || false", False),
    ],
)
def test_logical_operators_absorb_errors(expression: str, expected: object) -> None:
    assert value_of(expression) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("1 / 0 == 1 && true", "division by zero"),
        ("true && 1 / 0 == 1", "division by zero"),
        ("1 / 0 == 1 || false", "division by zero"),
        ("false || 1 / 0 == 1", "division by zero"),
        ("1 / 0 == 1 && 2 % 0 == 1", "division by zero"),
        ("dyn(1) && true", "no such overload: _&&_(int)"),
        ("true && dyn(1)", "no such overload: _&&_(bool, int)"),
        ("dyn(1) || false", "no such overload: _||_(int)"),
        ("dyn(1) ? 1 : 2", "no such overload: _?_:_(int)"),
        ("!dyn(1)", "no such overload: !_(int)"),
    ],
)
def test_logical_operators_propagate_undecided_errors(expression: str, reason: str) -> None:
    assert error_of(expression) == reason


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 in [1, 2]", True),
        ("3 in [1, 2]", False),
        ("dyn(1.0) in [1]", True),
        ("'a' in ['b', 'a']", True),
        ("'a' in {'a': 1}", True),
        ("'b' in {'a': 1}", False),
        ("1 in {1: 'x'}", True),
        ("dyn(1u) in {1: 'x'}", True),
        ("dyn(true) in {1: 'x'}", False),
        ("1 in []", False),
    ],
)
def test_membership(expression: str, expected: bool) -> None:
    assert value_of(expression) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("[1, 2, 3][1]", 2),
        ("[1, 2][1u]", 2),
        ("[1, 2][dyn(1.0)]", 2),
        ("{'a': 1}['a']", 1),
        ("{'a': 1}.a", 1),
        ("{1: 'a', 2: 'b'}[2]", "b"),
        ("{1: 'a'}[dyn(1u)]", "a"),
        ("{1: 'a'}[dyn(1.0)]", "a"),
        ("{true: 'yes'}[true]", "yes"),
        ("has({'a': 1}.a)", True),
        ("has({'a': 1}.b)", False),
        ("has({'a': {'b': 1}}.a.b)", True),
    ],
)
def test_indexing_and_selection(expression: str, expected: object) -> None:
    assert value_of(expression) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("[1, 2, 3][3]", "index '3' out of range in list size '3'"),
        ("[1, 2, 3][-1]", "index '-1' out of range in list size '3'"),
        ("{'a': 1}['b']", "no such key: b"),
        ("{'a': 1}.b", "no such key: b"),
        ("{1: 'a'}[2]", "no such key: 2"),
        ("{1: 'a'}[dyn(true)]", "no such key: True"),
        ("{'a': 1, 'a': 2}", "Failed with repeated key: 'a'"),
        ("{1: 'a', dyn(1u): 'b'}", "Failed with repeated key: 1u"),
        ("dyn(1).a", "no such overload: field selection '.a' on int"),
        ("has(dyn(1).a)", "no such overload: has() on int"),
        ("dyn([1])['a']", "no such overload: _[_](list, string)"),
        ("{dyn([1]): 1}", "unsupported key type: list"),
    ],
)
def test_indexing_errors(expression: str, reason: str) -> None:
    assert error_of(expression) == reason


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("[1, 2, 3].all(x, x > 0)", True),
        ("[1, 2, 3].all(x, x > 1)", False),
        ("[].all(x, x > 0)", True),
        ("[1, 2, 3].exists(x, x == 2)", True),
        ("[].exists(x, true)", False),
        ("[1, 2, 3].exists_one(x, x > 1)", False),
        ("[1, 2, 3].exists_one(x, x > 2)", True),
        ("[1, 2, 3].existsOne(x, x > 2)", True),
        ("[1, 2, 3].map(x, x * 2)", [2, 4, 6]),
        ("[1, 2, 3].map(x, x > 1, x * 10)", [20, 30]),
        ("[1, 2, 3, 4].filter(x, x % 2 == 1)", [1, 3]),
        ("{'a': 1, 'bb': 2}.all(k, k.size() >= 1)", True),
        ("{'a': 1, 'bb': 2}.filter(k, k.size() == 2)", ["bb"]),
        ("{'a': 1}.map(k, k + '!')", ["a!"]),
        ("[1, 2].all(x, [3, 4].all(x, x > 2))", True),
        ("[1, 2].exists(x, [3, 4].exists(y, x + y == 6))", True),
        # Errors in all/exists are absorbed when another element decides.
        ("[0, 1].all(x, 1 / x > 5)", False),
        ("[0, 1].exists(x, 1 / x == 1)", True),
        ("[10, 20].all(i, v, v == (i + 1) * 10)", True),
        ("{'a': 1, 'b': 2}.exists(k, v, k == 'b' && v == 2)", True),
        ("{'a': 1, 'b': 2}.all(k, v, v > 1)", False),
        ("[1, 2].exists_one(i, v, v == 2)", True),
        ("[1, 2].transformList(i, v, v * i)", [0, 2]),
        ("[1, 2, 3].transformList(i, v, i > 0, v)", [2, 3]),
        ("{'a': 1}.transformList(k, v, k + string(v))", ["a1"]),
        ("{'a': 1, 'b': 2}.transformMap(k, v, v + 1)", {"a": 2, "b": 3}),
        ("{'a': 1, 'b': 2}.transformMap(k, v, v > 1, v)", {"b": 2}),
        ("[5, 6].transformMap(i, v, v * 2)", {0: 10, 1: 12}),
        ("cel.bind(x, 2, x * x)", 4),
        ("cel.bind(x, 1, cel.bind(x, 2, x) + x)", 3),
        ("cel.bind(l, [1, 2, 3], l.size() + l[0])", 4),
        # A binding whose value is an error fails only where it is read.
        ("cel.bind(x, 1 / 0, true)", True),
        ("cel.bind(x, 1 / 0, x == 1 || true)", True),
    ],
)
def test_macros(expression: str, expected: object) -> None:
    assert value_of(expression) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("[0, 1].all(x, 1 / x > 0)", "division by zero"),
        ("[0].exists(x, 1 / x == 1)", "division by zero"),
        ("[0, 1].exists_one(x, 1 / x == 1)", "division by zero"),
        ("[1].all(x, dyn(x))", "no such overload: all(int)"),
        ("[1].filter(x, dyn(x))", "no such overload: filter(int)"),
        ("[0].map(x, 1 / x)", "division by zero"),
        ("cel.bind(x, 1 / 0, x == 1)", "division by zero"),
        ("dyn(1).all(x, true)", "cannot iterate over a value of type int"),
    ],
)
def test_macro_errors(expression: str, reason: str) -> None:
    assert error_of(expression) == reason


def test_macro_ranges_must_be_lists_or_maps() -> None:
    assert check_errors("1.all(x, true)") == [
        "expression of type 'int' cannot be range of a comprehension "
        "(must be list, map, or dynamic)"
    ]
    assert check_errors("[1].all(x, x)") == ["all() predicate must be bool, not 'int'"]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("optional.of(1).value()", 1),
        ("optional.of(1).hasValue()", True),
        ("optional.none().hasValue()", False),
        ("optional.none().orValue(5)", 5),
        ("optional.of(1).orValue(5)", 1),
        ("optional.of(1).or(optional.of(2)).value()", 1),
        ("optional.none().or(optional.of(2)).value()", 2),
        ("optional.ofNonZeroValue(0).hasValue()", False),
        ("optional.ofNonZeroValue('').hasValue()", False),
        ("optional.ofNonZeroValue([]).hasValue()", False),
        ("optional.ofNonZeroValue(null).hasValue()", False),
        ("optional.ofNonZeroValue('x').value()", "x"),
        ("optional.ofNonZeroValue(quantity('0')).hasValue()", False),
        ("optional.ofNonZeroValue(quantity('1m')).hasValue()", True),
        ("{'a': 1}.?a.value()", 1),
        ("{'a': 1}.?b.hasValue()", False),
        ("{'a': 1}.?b.orValue(7)", 7),
        ("{'a': {'b': 1}}.?a.b.value()", 1),
        ("{'a': {'b': 1}}.?a.c.hasValue()", False),
        ("{'a': {'b': 1}}.?x.b.hasValue()", False),
        ("{'a': 1}[?'a'].value()", 1),
        ("{'a': 1}[?'z'].hasValue()", False),
        ("[1, 2][?1].value()", 2),
        ("[1, 2][?5].hasValue()", False),
        ("optional.of([1, 2])[1].value()", 2),
        ("optional.of(2).optMap(x, x * 2).value()", 4),
        ("optional.none().optMap(x, x * 2).hasValue()", False),
        ("optional.of(2).optFlatMap(x, optional.of(x + 1)).value()", 3),
        ("optional.of(2).optFlatMap(x, optional.none()).hasValue()", False),
    ],
)
def test_optionals(expression: str, expected: object) -> None:
    assert value_of(expression) == expected


def test_empty_optional_dereference_is_an_error() -> None:
    assert error_of("optional.none().value()") == "optional.none() dereference"
    assert error_of("{'a': 1}.?b.value()") == "optional.none() dereference"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("int('42')", 42),
        ("int('-42')", -42),
        ("int('+7')", 7),
        ("int(3.9)", 3),
        ("int(-3.9)", -3),
        ("int(5u)", 5),
        ("uint(7)", 7),
        ("uint('7')", 7),
        ("uint(2.5)", 2),
        ("double('1.5')", 1.5),
        ("double('1e3')", 1000.0),
        ("double(-2)", -2.0),
        ("double(3u)", 3.0),
        ("string(1)", "1"),
        ("string(-1)", "-1"),
        ("string(5u)", "5"),
        ("string(1.5)", "1.5"),
        ("string(1.0)", "1"),
        ("string(1e6)", "1e+06"),
        ("string(123456.0)", "123456"),
        ("string(0.0001)", "0.0001"),
        ("string(0.00001)", "1e-05"),
        ("string(true)", "true"),
        ("string(b'abc')", "abc"),
        ("string('s')", "s"),
        ("bool('true')", True),
        ("bool('FALSE')", False),
        ("bool('t')", True),
        ("bytes('é')", "é".encode()),
        ("size('héllo')", 5),
        ("'héllo'.size()", 5),
        ("size(b'ab')", 2),
        ("size([1, 2])", 2),
        ("size({'a': 1})", 1),
        ("dyn([1, 2, 3]).size()", 3),
        ("string(dyn(quantity('1024Mi')))", "1Gi"),
        ("double(dyn(quantity('1500m')))", 1.5),
    ],
)
def test_conversions_and_size(expression: str, expected: object) -> None:
    value = value_of(expression)
    assert value == expected
    assert type(value) is type(expected) or type(value) is UInt


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("int(' 42')", "type conversion error from 'string' to 'int'"),
        ("int('4_2')", "type conversion error from 'string' to 'int'"),
        ("int('0x10')", "type conversion error from 'string' to 'int'"),
        ("int('9223372036854775808')", "range error converting string"),
        ("int(1e19)", "range error converting double to int"),
        ("int(0.0 / 0.0)", "range error converting double to int"),
        ("int(18446744073709551615u)", "range error converting uint to int"),
        ("uint(-1)", "range error converting int to uint"),
        ("uint('-1')", "type conversion error from 'string' to 'uint'"),
        ("uint(-1.0)", "range error converting double to uint"),
        ("double('abc')", "type conversion error from 'string' to 'double'"),
        ("double('1_0')", "type conversion error from 'string' to 'double'"),
        ("bool('yes')", "type conversion error from 'string' to 'bool'"),
        ("string(b'\\xff')", "invalid UTF-8"),
        ("int(dyn([1]))", "no such overload: int(list)"),
        ("size(dyn(1))", "no such overload: size(int)"),
    ],
)
def test_conversion_errors(expression: str, reason: str) -> None:
    assert error_of(expression).startswith(reason)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("type(1)", "int"),
        ("type(1u)", "uint"),
        ("type(1.5)", "double"),
        ("type('a')", "string"),
        ("type(b'a')", "bytes"),
        ("type(true)", "bool"),
        ("type(null)", "null_type"),
        ("type([1])", "list"),
        ("type({'a': 1})", "map"),
        ("type(type(1))", "type"),
        ("type(semver('1.0.0'))", "kubernetes.Semver"),
        ("type(quantity('1'))", "kubernetes.Quantity"),
        ("type(optional.none())", "optional_type"),
    ],
)
def test_type_values(expression: str, expected: str) -> None:
    assert value_of(expression) == TypeValue(expected)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("type(1) == int", True),
        ("type('a') == string", True),
        ("type([]) == list && type({}) == map", True),
        ("type(1) == type(2)", True),
        ("type(1) == uint", False),
        ("type(type(1)) == type", True),
        ("type(null) == null_type", True),
    ],
)
def test_type_identifiers(expression: str, expected: bool) -> None:
    assert value_of(expression) is expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("nope", "undeclared reference to 'nope' (in container '')"),
        ("nope(1)", "undeclared reference to 'nope' (in container '')"),
        ("'a'.nope()", "undeclared reference to 'nope' (in container '')"),
        ("sets.nope([1], [1])", "undeclared reference to 'sets.nope' (in container '')"),
        ("optional", "undeclared reference to 'optional' (in container '')"),
        ("[1].all(x, y > 0)", "undeclared reference to 'y' (in container '')"),
        ("1 + 1.0", "found no matching overload for '_+_' applied to '(int, double)'"),
        ("1u + 1", "found no matching overload for '_+_' applied to '(uint, int)'"),
        ("-1u", "found no matching overload for '-_' applied to '(uint)'"),
        ("!1", "found no matching overload for '!_' applied to '(int)'"),
        ("1 && true", "found no matching overload for '_&&_' applied to '(int, bool)'"),
        ("1 ? 2 : 3", "found no matching overload for '_?_:_' applied to '(int, int, int)'"),
        (
            "'a'.startsWith(1)",
            "found no matching overload for 'startsWith' applied to 'string.(int)'",
        ),
        (
            "1.startsWith('a')",
            "found no matching overload for 'startsWith' applied to 'int.(string)'",
        ),
        ("size(1)", "found no matching overload for 'size' applied to '(int)'"),
        ("int([1])", "found no matching overload for 'int' applied to '(list(int))'"),
        ("[1]['a']", "found no matching overload for '_[_]' applied to '(list(int), string)'"),
        (
            "{'a': 1}[1]",
            "found no matching overload for '_[_]' applied to '(map(string, int), int)'",
        ),
        ("1.a", "type 'int' does not support field selection"),
        ("has('a'.b)", "type 'string' does not support field selection"),
        ("[?1]", "expected type 'optional_type' but found 'int'"),
        ("{[1]: 2}", "unsupported map key type: list(int)"),
        ("'a'.matches('(')", "invalid regular expression '(': missing )"),
    ],
)
def test_static_errors(expression: str, message: str) -> None:
    assert message in check_errors(expression)


def test_static_types_of_results() -> None:
    def type_of(expression: str) -> str:
        tree = parse(expression)
        return str(check(tree, REGISTRY).types[tree.id])

    assert type_of("1 + 2") == "int"
    assert type_of("[1, 2]") == "list(int)"
    assert type_of("[1, 'a']") == "list(dyn)"
    assert type_of("{'a': 1}") == "map(string, int)"
    assert type_of("[1].map(x, string(x))") == "list(string)"
    assert type_of("optional.of(1)") == "optional_type(int)"
    assert type_of("{'a': 1}.?a") == "optional_type(int)"
    assert type_of("'a,b'.split(',')") == "list(string)"
    assert type_of("semver('1.0.0').compareTo(semver('1.0.0'))") == "int"
    assert type_of("dyn(1).compareTo(quantity('1'))") == "int"
    assert type_of("[1, 2].sum()") == "int"
    assert type_of("{'a': 1}.transformMap(k, v, v > 0)") == "map(string, bool)"
    assert type_of("cel.bind(x, 'a', x + 'b')") == "string"
