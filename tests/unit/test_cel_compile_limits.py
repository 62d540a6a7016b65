"""Selectors the compiler refuses (non-bool results, type and syntax errors, length) and the
estimated and runtime cost limits."""

from __future__ import annotations

import pytest
from cel_device_fixtures import GPU

from api.errors import CelCompileError, CelEvaluationError, InvalidInputError
from dra_driver.cel import build_cel_device, compile_selector

# -- compile errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("device.driver", "must evaluate to bool or the unknown type, not string"),
        ("1", "must evaluate to bool or the unknown type, not int"),
        ("[true]", "must evaluate to bool or the unknown type, not list(bool)"),
        (
            "device.attributes",
            "must evaluate to bool or the unknown type, not map(string, map(string, dyn))",
        ),
        (
            "device.capacity['d'].memory",
            "must evaluate to bool or the unknown type, not kubernetes.Quantity",
        ),
        ("optional.of(true)", "must evaluate to bool or the unknown type, not optional_type(bool)"),
    ],
)
def test_results_that_are_not_bool_do_not_compile(expression: str, reason: str) -> None:
    with pytest.raises(CelCompileError) as info:
        compile_selector(expression)
    assert info.value.reason == reason
    assert info.value.expression == expression


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("foo == 1", "undeclared reference to 'foo' (in container '')"),
        ("device.foo == 1", "undefined field 'foo'"),
        ("device.attributes['d'].x.nope()", "undeclared reference to 'nope' (in container '')"),
        ("bogus(device.driver)", "undeclared reference to 'bogus' (in container '')"),
        ("device.driver == 1", "found no matching overload for '_==_' applied to '(string, int)'"),
        (
            "device.capacity['d'].memory > 40",
            "found no matching overload for '_>_' applied to '(kubernetes.Quantity, int)'",
        ),
        (
            "device.capacity['d'].memory.compareTo(40) > 0",
            "found no matching overload for 'compareTo' applied to 'kubernetes.Quantity.(int)'",
        ),
        (
            "device.attributes['d'].v > semver('1.0.0')",
            "found no matching overload for '_>_' applied to '(dyn, kubernetes.Semver)'",
        ),
        (
            "device.allowMultipleAllocations == 'true'",
            "found no matching overload for '_==_' applied to '(bool, string)'",
        ),
        ("device.attributes['d'].x.matches('(?=a)')", "lookaround is not supported by RE2"),
        ("device.driver ==", "Syntax error"),
    ],
)
def test_compile_errors(expression: str, message: str) -> None:
    with pytest.raises(CelCompileError) as info:
        compile_selector(expression)
    error = info.value
    assert error.reason.startswith("compilation failed: ERROR: <input>:1:")
    assert message in error.reason
    assert str(error).startswith("CEL compile error: compilation failed:")
    assert error.expression == expression
    # The allocator reports compile errors as invalid input (exit code 2).
    assert isinstance(error, InvalidInputError)


def test_all_problems_are_reported() -> None:
    with pytest.raises(CelCompileError) as info:
        compile_selector("foo == 1 && device.bar == 2")
    assert "undeclared reference to 'foo'" in info.value.reason
    assert "undefined field 'bar'" in info.value.reason


def test_expression_length_limit_counts_bytes() -> None:
    at_limit = "true" + " " * (10240 - 4)
    assert compile_selector(at_limit).evaluate(GPU) is True
    with pytest.raises(CelCompileError, match="expression too long: 10241 bytes"):
        compile_selector(at_limit + " ")
    # Multi-byte characters count as their UTF-8 length.
    multibyte = "'" + "é" * 5119 + "' != ''"
    assert len(multibyte) < 10240 < len(multibyte.encode())
    with pytest.raises(CelCompileError, match="expression too long"):
        compile_selector(multibyte)


# -- cost limits ------------------------------------------------------------------------------


def _numbers(count: int) -> str:
    return "[" + ", ".join(str(i) for i in range(count)) + "]"


def test_estimated_cost_of_nested_comprehensions_is_limited() -> None:
    hundred = _numbers(100)
    # 100 x 100 iterations: fine.
    two_levels = f"{hundred}.all(x, {hundred}.all(y, x + y >= 0))"
    assert compile_selector(two_levels).evaluate(GPU) is True
    # 100 x 100 x 100 iterations: over the limit, rejected before it can run.
    three_levels = f"{hundred}.all(x, {hundred}.all(y, {hundred}.all(z, x + y + z >= 0)))"
    with pytest.raises(CelCompileError) as info:
        compile_selector(three_levels)
    assert info.value.reason.startswith("too complex, exceeds cost limit")


def test_estimated_cost_uses_the_size_hints_of_device() -> None:
    # 32 domains x 32 attributes x a string of at most 64 characters: bounded.
    selector = compile_selector(
        "device.attributes.all(d, device.attributes[d].all(k, "
        "string(device.attributes[d][k]).size() < 1000))"
    )
    assert 1000 < selector.estimated_cost < 1_000_000
    assert compile_selector("device.driver == 'x'").estimated_cost < 10
    # Four levels over attribute maps (32^4 iterations) exceed the limit.
    with pytest.raises(CelCompileError, match="too complex, exceeds cost limit"):
        compile_selector(
            "device.attributes.all(a, device.attributes.all(b, "
            "device.attributes.all(c, device.attributes.all(d, a == d))))"
        )


def test_unbounded_estimate_is_rejected() -> None:
    # The size of what optional.value() returns is unknown: iterating it is unbounded.
    with pytest.raises(CelCompileError, match="estimated cost unbounded"):
        compile_selector("optional.of([1, 2]).value().all(x, x > 0)")


def test_runtime_cost_limit_aborts_evaluation() -> None:
    # Attribute lists are estimated at 64 entries; a device with longer lists (the API
    # server would refuse them) is stopped by the runtime limit instead.
    device = build_cel_device("d.example.com", {"ints": list(range(1500))}, {})
    expression = (
        "device.attributes['d.example.com'].ints.all(x, "
        "device.attributes['d.example.com'].ints.all(y, x + y >= 0))"
    )
    selector = compile_selector(expression)
    small = build_cel_device("d.example.com", {"ints": list(range(10))}, {})
    assert selector.evaluate(small) is True
    with pytest.raises(CelEvaluationError) as info:
        selector.evaluate(device)
    assert info.value.reason == "operation cancelled: actual cost limit exceeded"
    # The cost limit is not an error that || or && can absorb.
    absorbing = compile_selector(f"({expression}) || true")
    with pytest.raises(CelEvaluationError, match="actual cost limit exceeded"):
        absorbing.evaluate(device)


def test_runtime_cost_is_per_evaluation() -> None:
    device = build_cel_device("d.example.com", {"ints": list(range(300))}, {})
    selector = compile_selector(
        "device.attributes['d.example.com'].ints.all(x, "
        "device.attributes['d.example.com'].ints.all(y, x + y >= 0))"
    )
    # Each evaluation is within the budget; spending does not accumulate across calls.
    for _ in range(5):
        assert selector.evaluate(device) is True
