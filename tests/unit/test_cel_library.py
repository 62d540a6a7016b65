"""The CEL libraries of the Kubernetes environment: strings v2, lists, regex, sets,
quantity, semver."""

from __future__ import annotations

import pytest
from cel_expressions import check_errors, error_of, value_of

from api.quantity import Quantity
from api.semver import Semver
from dra_driver.cel.library.regex import RegexError, compile_re2

# -- strings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'NVIDIA H100'.startsWith('NVIDIA')", True),
        ("'NVIDIA H100'.startsWith('H100')", False),
        ("'NVIDIA H100'.endsWith('H100')", True),
        ("'NVIDIA H100'.contains('IA H')", True),
        ("'abc'.contains('')", True),
        ("'hello'.charAt(1)", "e"),
        ("'héllo'.charAt(1)", "é"),
        ("'hello'.charAt(5)", ""),
        ("'hello'.indexOf('l')", 2),
        ("'hello'.indexOf('l', 3)", 3),
        ("'hello'.indexOf('')", 0),
        ("'hello'.indexOf('z')", -1),
        ("'héllo'.indexOf('l')", 2),
        ("'hello'.lastIndexOf('l')", 3),
        ("'hello'.lastIndexOf('l', 2)", 2),
        ("'hello'.lastIndexOf('ll', 2)", 2),
        ("'hello'.lastIndexOf('')", 5),
        ("'hello'.lastIndexOf('z')", -1),
        ("'TacoCat'.lowerAscii()", "tacocat"),
        ("'TacoCÀt'.lowerAscii()", "tacocÀt"),
        ("'TacoCàt'.upperAscii()", "TACOCàT"),
        ("'a-b-c'.replace('-', '+')", "a+b+c"),
        ("'a-b-c'.replace('-', '+', 1)", "a+b-c"),
        ("'a-b-c'.replace('-', '+', 0)", "a-b-c"),
        ("'a-b-c'.replace('-', '+', -1)", "a+b+c"),
        ("'abc'.replace('', '.')", ".a.b.c."),
        ("'a,b,c'.split(',')", ["a", "b", "c"]),
        ("'a,b,c'.split(',', 2)", ["a", "b,c"]),
        ("'a,b,c'.split(',', 0)", []),
        ("'a,b,c'.split(',', -1)", ["a", "b", "c"]),
        ("'abc'.split('')", ["a", "b", "c"]),
        ("'abc'.split('', 2)", ["a", "bc"]),
        ("''.split(',')", [""]),
        ("'hello'.substring(1)", "ello"),
        ("'hello'.substring(1, 3)", "el"),
        ("'hello'.substring(5)", ""),
        ("'  hi \\n\\t'.trim()", "hi"),
        ("'\\u00a0x\\u3000'.trim()", "x"),
        ("['a', 'b'].join()", "ab"),
        ("['a', 'b'].join('-')", "a-b"),
        ("[].join('-')", ""),
        ("'abc'.reverse()", "cba"),
        ("'héllo'.reverse()", "olléh"),
        ("strings.quote('a\"b\\n')", '"a\\"b\\n"'),
        ("strings.quote('tab\\there\\\\')", '"tab\\there\\\\"'),
    ],
)
def test_string_functions(expression: str, expected: object) -> None:
    assert value_of(expression) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("'hello'.charAt(6)", "index out of range: 6"),
        ("'hello'.charAt(-1)", "index out of range: -1"),
        ("'hello'.indexOf('l', 9)", "index out of range: 9"),
        ("'hello'.lastIndexOf('l', -1)", "index out of range: -1"),
        ("'hello'.substring(3, 1)", "invalid substring range. start: 3, end: 1"),
        ("'hello'.substring(0, 9)", "index out of range: 9"),
        ("'hello'.substring(-1)", "index out of range: -1"),
        ("dyn(['a', 1]).join()", "no such overload: join(list, string)"),
        ("dyn(1).startsWith('a')", "no such overload: startsWith(int, string)"),
    ],
)
def test_string_function_errors(expression: str, reason: str) -> None:
    assert error_of(expression) == reason


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'%s is %d years'.format(['Ann', 42])", "Ann is 42 years"),
        ("'%s'.format([true])", "true"),
        ("'%s'.format([1.5])", "1.5"),
        ("'%s'.format([null])", "null"),
        ("'%s'.format([[1, 'a']])", "[1, a]"),
        ("'%s'.format([{'b': 2, 'a': 1}])", "{a: 1, b: 2}"),
        ("'%s'.format([5u])", "5"),
        ("'%d'.format([5u])", "5"),
        ("'%.2f'.format([3.14159])", "3.14"),
        ("'%f'.format([1.0])", "1.000000"),
        ("'%.0f'.format([2.5])", "2"),
        ("'%f'.format([2])", "2.000000"),
        ("'%e'.format([1234.5])", "1.234500e+03"),
        ("'%.1e'.format([0.000123])", "1.2e-04"),
        ("'%x'.format([255])", "ff"),
        ("'%X'.format([255])", "FF"),
        ("'%x'.format(['hi'])", "6869"),
        ("'%x'.format([b'\\x01\\xff'])", "01ff"),
        ("'%o'.format([8])", "10"),
        ("'%b'.format([5])", "101"),
        ("'%b'.format([true])", "1"),
        ("'100%%'.format([])", "100%"),
        ("'no clauses'.format([1])", "no clauses"),
    ],
)
def test_format(expression: str, expected: str) -> None:
    assert value_of(expression) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        (
            "'%d'.format(['x'])",
            "error during formatting: decimal clause can only be used on integers",
        ),
        ("'%d'.format([1.5])", "error during formatting: decimal clause"),
        ("'%f'.format(['x'])", "error during formatting: fixed-point clause"),
        ("'%x'.format([1.5])", "error during formatting: hex clause"),
        ("'%o'.format(['x'])", "error during formatting: octal clause"),
        ("'%b'.format(['x'])", "error during formatting: binary clause"),
        ("'%s %s'.format(['a'])", "index 1 out of range"),
        ("'%q'.format(['a'])", "could not parse formatting clause"),
    ],
)
def test_format_errors(expression: str, reason: str) -> None:
    assert error_of(expression).startswith(reason)


# -- regular expressions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'abc'.matches('^a.c$')", True),
        ("matches('abc', 'b')", True),
        ("'abc'.matches('^b')", False),
        ("'NVIDIA H100 80GB'.matches('H1[0-9]{2}')", True),
        ("'ABC'.matches('(?i)abc')", True),
        ("'xABC'.matches('x(?i)abc')", True),
        ("'XABC'.matches('x(?i)abc')", False),
        ("'a\\nb'.matches('a.b')", False),
        ("'a\\nb'.matches('(?s)a.b')", True),
        # RE2's $ is the end of the text: a trailing newline does not match.
        ("'abc\\n'.matches('abc$')", False),
        ("'abc\\nx'.matches('(?m)abc$')", True),
        ("'x1'.matches('\\\\d')", True),
        ("'\u0663'.matches('\\\\d')", False),
        ("'a1'.matches('^[[:alpha:]][[:digit:]]$')", True),
        ("'a.b'.matches('^\\\\Qa.b\\\\E$')", True),
        ("'axb'.matches('^\\\\Qa.b\\\\E$')", False),
        ("'A'.matches('\\\\x{41}')", True),
        ("'A'.matches('\\\\x41')", True),
        ("'\\n'.matches('\\\\012')", True),
        ("'a&b'.matches('[&]')", True),
        ("'ab'.matches('(?P<first>a)(?<second>b)')", True),
        ("'abc'.matches('\\\\Aabc\\\\z')", True),
        ("'ab'.matches('a{1,1000}')", True),
    ],
)
def test_matches(expression: str, expected: bool) -> None:
    assert value_of(expression) is expected


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a)\\1", "backreferences are not supported by RE2"),
        ("(?=a)", "lookaround is not supported by RE2"),
        ("(?!a)", "lookaround is not supported by RE2"),
        ("(?<=a)b", "lookaround is not supported by RE2"),
        ("(?<!a)b", "lookaround is not supported by RE2"),
        ("(?>a)", "(?> is not supported by RE2"),
        ("(?P=n)", "(?P= is not supported by RE2"),
        ("a++", "bad repetition operator"),
        ("a**", "bad repetition operator"),
        ("a{1001}", "bad repetition operator (at most 1000)"),
        ("\\p{L}", "Unicode classes are not supported"),
        ("\\Z", "invalid escape sequence \\Z"),
        ("\\C", "invalid escape sequence \\C"),
        ("(?U)a*", "the ungreedy flag U is not supported"),
        ("[a", "missing closing ]"),
        ("(a", "missing )"),
        ("a)", "unexpected )"),
        ("[[:nope:]]", "invalid character class range"),
        ("*a", "nothing to repeat"),
    ],
)
def test_regex_constructs_re2_lacks_are_rejected(pattern: str, reason: str) -> None:
    with pytest.raises(RegexError, match=None) as info:
        compile_re2(pattern)
    assert reason in str(info.value)


def test_invalid_literal_pattern_is_a_compile_error() -> None:
    errors = check_errors("'aa'.matches('(a)\\\\1')")
    assert errors == [
        "invalid regular expression '(a)\\\\1': backreferences are not supported by RE2"
    ]
    assert check_errors("'a'.find('(?=x)')") != []


def test_invalid_computed_pattern_is_a_runtime_error() -> None:
    assert "missing )" in error_of("'a'.matches('(' + '')")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'abc123def456'.find('[0-9]+')", "123"),
        ("'abc'.find('x')", ""),
        ("'abc123def456'.findAll('[0-9]+')", ["123", "456"]),
        ("'abc123def456'.findAll('[0-9]+', 1)", ["123"]),
        ("'abc123def456'.findAll('[0-9]+', 0)", []),
        ("'abc123def456'.findAll('[0-9]+', -1)", ["123", "456"]),
        ("'abc'.findAll('x')", []),
        # Go's rule: an empty match right after a match is not reported.
        ("'baaa'.findAll('a*')", ["", "aaa"]),
        ("'k1=v1,k2=v2'.findAll('(k[0-9])=')", ["k1=", "k2="]),
    ],
)
def test_find(expression: str, expected: object) -> None:
    assert value_of(expression) == expected


# -- lists --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("[1, 2, 3].isSorted()", True),
        ("[1, 1, 2].isSorted()", True),
        ("[3, 1].isSorted()", False),
        ("['a', 'b'].isSorted()", True),
        ("[].isSorted()", True),
        ("[1, 2, 3].sum()", 6),
        ("[1.5, 2.5].sum()", 4.0),
        ("[1u, 2u].sum()", 3),
        ("[].sum()", 0),
        ("[3, 1, 2].min()", 1),
        ("[3, 1, 2].max()", 3),
        ("['b', 'a', 'c'].min()", "a"),
        ("[2.5].max()", 2.5),
        ("[1, 2, 1].indexOf(1)", 0),
        ("[1, 2, 1].lastIndexOf(1)", 2),
        ("[1, 2, 1].indexOf(5)", -1),
        ("['a', 'b'].indexOf('b')", 1),
        ("[[1], [2]].indexOf([2])", 1),
    ],
)
def test_list_functions(expression: str, expected: object) -> None:
    assert value_of(expression) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("[].min()", "min(list) argument must not be empty"),
        ("[].max()", "max(list) argument must not be empty"),
        ("[9223372036854775807, 1].sum()", "integer overflow"),
        ("dyn([1, 'a']).isSorted()", "no such overload: _<=_(int, string)"),
        ("dyn(['a']).sum()", "no such overload: sum(list)"),
    ],
)
def test_list_function_errors(expression: str, reason: str) -> None:
    assert error_of(expression) == reason


# -- sets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("sets.contains([1, 2, 3], [1, 2])", True),
        ("sets.contains([1], [1, 2])", False),
        ("sets.contains([1], [])", True),
        ("sets.contains([1], [dyn(1.0)])", True),
        ("sets.intersects([1, 2], [2, 3])", True),
        ("sets.intersects([1], [2])", False),
        ("sets.intersects([], [])", False),
        ("sets.equivalent([1, 2, 2], [2, 1])", True),
        ("sets.equivalent([1], [1, 2])", False),
        ("sets.equivalent(['a'], ['a'])", True),
    ],
)
def test_sets(expression: str, expected: bool) -> None:
    assert value_of(expression) is expected


# -- quantity -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("quantity('1Gi').compareTo(quantity('1024Mi'))", 0),
        ("quantity('80Gi').compareTo(quantity('40Gi'))", 1),
        ("quantity('4Gi').compareTo(quantity('40Gi'))", -1),
        ("quantity('500m').compareTo(quantity('0.5'))", 0),
        ("quantity('1.001').compareTo(quantity('1'))", 1),
        ("quantity('-1.5').compareTo(quantity('-1'))", -1),
        ("quantity('1n').compareTo(quantity('0'))", 1),
        ("quantity('1e3').compareTo(quantity('1k'))", 0),
        ("quantity('50M').isLessThan(quantity('50Mi'))", True),
        ("quantity('1').isGreaterThan(quantity('500m'))", True),
        ("quantity('1').isGreaterThan(quantity('1000m'))", False),
        ("quantity('-1').sign()", -1),
        ("quantity('0').sign()", 0),
        ("quantity('3').sign()", 1),
        ("quantity('1.5').isInteger()", False),
        ("quantity('2k').isInteger()", True),
        ("quantity('2k').asInteger()", 2000),
        ("quantity('1Mi').asApproximateFloat()", 1048576.0),
        ("quantity('1Gi').add(quantity('1Gi')) == quantity('2Gi')", True),
        ("quantity('1').add(1) == quantity('2')", True),
        ("quantity('1').sub(quantity('500m')) == quantity('500m')", True),
        ("quantity('1').sub(3).sign()", -1),
        ("isQuantity('1Gi')", True),
        ("isQuantity('1.5e3')", True),
        ("isQuantity('1Gb')", False),
        ("isQuantity('')", False),
    ],
)
def test_quantity(expression: str, expected: object) -> None:
    value = value_of(expression)
    assert value == expected
    assert type(value) is type(expected)


def test_quantity_values() -> None:
    assert value_of("quantity('40Gi')") == Quantity.parse("40Gi")


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("quantity('1.5').asInteger()", "cannot convert value to integer"),
        ("quantity('abc')", "quantity 'abc' must match the regular expression"),
        (
            "quantity('1Gi').compareTo(dyn(1))",
            "no such overload: compareTo(kubernetes.Quantity, int)",
        ),
        ("quantity('1Gi').add(dyn('x'))", "no such overload: add(kubernetes.Quantity, string)"),
    ],
)
def test_quantity_errors(expression: str, reason: str) -> None:
    assert error_of(expression).startswith(reason)


# -- semver -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("semver('1.2.3').major()", 1),
        ("semver('1.2.3').minor()", 2),
        ("semver('1.2.3').patch()", 3),
        ("semver('1.2.3').compareTo(semver('1.10.0'))", -1),
        ("semver('1.2.3').compareTo(semver('1.2.3+b'))", 0),
        ("semver('9.0.0').compareTo(semver('8.0.0'))", 1),
        ("semver('1.0.0-alpha').isLessThan(semver('1.0.0'))", True),
        ("semver('1.0.0-alpha.1').isLessThan(semver('1.0.0-alpha.beta'))", True),
        ("semver('2.0.0').isGreaterThan(semver('1.9.9'))", True),
        ("semver('v1.2', true) == semver('1.2.0')", True),
        ("semver('v01.02.03', true) == semver('1.2.3')", True),
        ("isSemver('1.2.3')", True),
        ("isSemver('1.2')", False),
        ("isSemver('01.2.3')", False),
        ("isSemver('v1.2', true)", True),
        ("isSemver('x', true)", False),
    ],
)
def test_semver(expression: str, expected: object) -> None:
    value = value_of(expression)
    assert value == expected
    assert type(value) is type(expected)


def test_semver_values() -> None:
    assert value_of("semver('550.54.15')") == Semver.parse("550.54.15")


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("semver('v1.2.3')", "'v1.2.3' is not a semantic version"),
        ("semver('1.2')", "'1.2' is not a semantic version"),
        (
            "semver('1.0.0').compareTo(dyn('1.0.0'))",
            "no such overload: compareTo(kubernetes.Semver, string)",
        ),
        ("dyn('1.0.0').major()", "no such overload: major(string)"),
    ],
)
def test_semver_errors(expression: str, reason: str) -> None:
    assert error_of(expression).startswith(reason)


def test_member_functions_of_kubernetes_types_dispatch_on_the_receiver() -> None:
    # compareTo exists for both Semver and Quantity; a dyn receiver picks at run time.
    assert value_of("dyn(semver('2.0.0')).compareTo(semver('1.0.0'))") == 1
    assert value_of("dyn(quantity('2')).compareTo(quantity('1'))") == 1
    assert error_of("dyn(1).compareTo(semver('1.0.0'))").startswith(
        "no such overload: compareTo(int, kubernetes.Semver)"
    )
