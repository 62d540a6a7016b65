"""Device selectors through the public interface: realistic devices, the example selectors
of the spec, lookup semantics of ``device``, compile errors and cost limits."""

from __future__ import annotations

import dataclasses

import pytest

from api.errors import CelCompileError, CelEvaluationError, InvalidInputError
from api.quantity import Quantity
from api.semver import Semver
from dra_driver import cel
from dra_driver.cel import CelDevice, CompiledSelector, build_cel_device, compile_selector

NVIDIA = "gpu.nvidia.com"
EXAMPLE = "gpu.example.com"


def _nvidia_gpu() -> CelDevice:
    return build_cel_device(
        NVIDIA,
        {
            "type": "gpu",
            "uuid": "GPU-8a7e5cc2-3fb9-4c0b-a1e3-bd1cf9d4e6f1",
            "productName": "NVIDIA H100 80GB HBM3",
            "brand": "Nvidia",
            "architecture": "Hopper",
            "cudaComputeCapability": Semver.parse("9.0.0"),
            "driverVersion": Semver.parse("550.54.15"),
            "cudaDriverVersion": Semver.parse("12.4.0"),
            "index": 0,
            "resource.kubernetes.io/pciBusID": "0000:3b:00.0",
            "resource.kubernetes.io/pcieRoot": "pci0000:30",
        },
        {"memory": Quantity.parse("80Gi")},
    )


def _nvidia_mig() -> CelDevice:
    # A MIG device publishes no uuid-like pciBusID and no architecture here.
    return build_cel_device(
        NVIDIA,
        {
            "type": "mig",
            "uuid": "MIG-0f2d9c1e-8f43-5d2a-9e62-4b7c1a9d3e55",
            "productName": "NVIDIA A100-SXM4-40GB",
            "profile": "1g.10gb",
            "parentIndex": 0,
            "cudaComputeCapability": Semver.parse("8.0.0"),
            "driverVersion": Semver.parse("535.104.5"),
        },
        {"memory": Quantity.parse("9728Mi")},
    )


def _nvidia_t4() -> CelDevice:
    return build_cel_device(
        NVIDIA,
        {
            "type": "gpu",
            "productName": "Tesla T4",
            "cudaComputeCapability": Semver.parse("7.5.0"),
            "driverVersion": Semver.parse("550.0.0"),
            "index": 1,
            "resource.kubernetes.io/pciBusID": "0000:af:00.0",
        },
        {"memory": Quantity.parse("16Gi")},
    )


def _example_gpu(index: int, allow_multiple: bool = False) -> CelDevice:
    return build_cel_device(
        EXAMPLE,
        {
            "index": index,
            "uuid": f"gpu-{index:04d}",
            "model": "LATEST-GPU-MODEL",
            "driverVersion": Semver.parse("1.0.0"),
        },
        {"memory": Quantity.parse("80Gi"), "compute": Quantity.parse("100")},
        allow_multiple,
    )


GPU = _nvidia_gpu()
MIG = _nvidia_mig()
T4 = _nvidia_t4()
EXAMPLE_0 = _example_gpu(0)
EXAMPLE_2 = _example_gpu(2)
SHARED = _example_gpu(1, allow_multiple=True)

# The realistic selectors of the spec (cel.md section 5), each against devices that match
# and devices that do not.
SPEC_SELECTORS = [
    (
        "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'",
        {"gpu": True, "t4": True, "mig": False, "example0": False},
    ),
    (
        "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'",
        {"gpu": False, "mig": True, "example0": False},
    ),
    (
        "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0",
        {"gpu": True, "mig": False, "t4": False},
    ),
    (
        "device.attributes['gpu.nvidia.com'].cudaComputeCapability.compareTo(semver('9.0.0')) >= 0",
        {"gpu": True, "mig": False, "t4": False},
    ),
    (
        "device.attributes['gpu.nvidia.com'].driverVersion.isGreaterThan(semver('550.0.0'))\n"
        "  || device.attributes['gpu.nvidia.com'].driverVersion == semver('550.0.0')",
        {"gpu": True, "t4": True, "mig": False},
    ),
    (
        "cel.bind(g, device.attributes['gpu.nvidia.com'],\n"
        "  has(g.productName) && g.productName.startsWith('NVIDIA H100'))",
        {"gpu": True, "mig": False, "t4": False, "example0": False},
    ),
    (
        "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'",
        {"mig": True},
    ),
    (
        "device.attributes['resource.kubernetes.io'].pciBusID == '0000:3b:00.0'",
        {"gpu": True, "t4": False},
    ),
    (
        "device.attributes['gpu.example.com'].model == 'LATEST-GPU-MODEL'",
        {"example0": True, "example2": True},
    ),
    (
        "device.capacity['gpu.example.com'].memory.compareTo(quantity('4Gi')) >= 0",
        {"example0": True, "example2": True},
    ),
    (
        "device.attributes['gpu.example.com'].index < 2",
        {"example0": True, "example2": False},
    ),
    (
        "device.allowMultipleAllocations == true",
        {"shared": True, "example0": False, "gpu": False},
    ),
    (
        "device.attributes['gpu.nvidia.com'].?architecture.orValue('') == 'Hopper'",
        {"gpu": True, "mig": False, "t4": False},
    ),
    (
        "'uuid' in device.attributes['gpu.nvidia.com'] && "
        "device.attributes['gpu.nvidia.com'].uuid.startsWith('MIG-')",
        {"mig": True, "gpu": False, "t4": False},
    ),
]
DEVICES = {
    "gpu": GPU,
    "mig": MIG,
    "t4": T4,
    "example0": EXAMPLE_0,
    "example2": EXAMPLE_2,
    "shared": SHARED,
}


@pytest.mark.parametrize(
    ("expression", "device", "expected"),
    [
        (expression, name, expected)
        for expression, outcomes in SPEC_SELECTORS
        for name, expected in outcomes.items()
    ],
)
def test_spec_selectors_against_realistic_devices(
    expression: str, device: str, expected: bool
) -> None:
    assert compile_selector(expression).evaluate(DEVICES[device]) is expected


@pytest.mark.parametrize(
    ("expression", "device", "reason"),
    [
        # An unguarded attribute that a device lacks aborts evaluation (upstream aborts the
        # allocation attempt): MIG devices have no "architecture" here.
        (
            "device.attributes['gpu.nvidia.com'].architecture == 'Hopper'",
            "mig",
            "no such key: architecture",
        ),
        # Selectors of the NVIDIA-style driver against a device of another driver.
        ("device.attributes['gpu.nvidia.com'].type == 'gpu'", "example0", "no such key: type"),
        ("device.attributes['gpu.nvidia.com'].profile == '1g.10gb'", "gpu", "no such key: profile"),
        ("device.attributes['gpu.example.com'].index < 2", "gpu", "no such key: index"),
        (
            "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0",
            "example0",
            "no such key: memory",
        ),
    ],
)
def test_spec_selectors_fail_on_devices_lacking_the_attribute(
    expression: str, device: str, reason: str
) -> None:
    with pytest.raises(CelEvaluationError) as info:
        compile_selector(expression).evaluate(DEVICES[device])
    assert info.value.reason == reason
    assert str(info.value) == f"CEL runtime error: {reason}"
    assert info.value.expression == expression


# -- the device variable ---------------------------------------------------------------------


def test_build_cel_device_groups_names_by_domain() -> None:
    device = build_cel_device(
        "gpu.dra-driver.io",
        {
            "productName": "X",
            "resource.kubernetes.io/pciBusID": "0000:01:00.0",
            "example.com/other": 1,
        },
        {"memory": Quantity.parse("1Gi"), "example.com/slots": Quantity.parse("4")},
        allow_multiple_allocations=True,
    )
    assert device.driver == "gpu.dra-driver.io"
    assert device.attributes == {
        "gpu.dra-driver.io": {"productName": "X"},
        "resource.kubernetes.io": {"pciBusID": "0000:01:00.0"},
        "example.com": {"other": 1},
    }
    assert device.capacity == {
        "gpu.dra-driver.io": {"memory": Quantity.parse("1Gi")},
        "example.com": {"slots": Quantity.parse("4")},
    }
    assert device.allow_multiple_allocations is True
    assert build_cel_device("d", {}, {}).allow_multiple_allocations is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        device.driver = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # An unknown domain is an empty map, not an error.
        ("device.attributes['nope.example.com'].size() == 0", True),
        ("device.capacity['nope.example.com'].size() == 0", True),
        ("!('x' in device.attributes['nope.example.com'])", True),
        ("has(device.attributes['gpu.nvidia.com'].uuid)", True),
        ("has(device.attributes['gpu.nvidia.com'].profile)", False),
        ("has(device.attributes['nope.example.com'].uuid)", False),
        ("'uuid' in device.attributes['gpu.nvidia.com']", True),
        ("'gpu.nvidia.com' in device.attributes", True),
        ("'nope.example.com' in device.attributes", False),
        # Upstream's map wrapper finds every domain (an empty one if absent), so a presence
        # test on the outer map is true for any domain; "in" sees the real domains.
        ("has(device.attributes.nope)", True),
        ("device.attributes.size() == 2", True),
        ("device.attributes.exists(d, d == 'resource.kubernetes.io')", True),
        ("device.attributes.all(d, device.attributes[d].size() > 0)", True),
        ("device.attributes['gpu.nvidia.com'][?'profile'].orValue('none') == 'none'", True),
        ("device.attributes['gpu.nvidia.com'].?profile.hasValue()", False),
        ("device.attributes[?'nope.example.com'].hasValue()", True),
        ("device.attributes['gpu.nvidia.com'].index == '0'", False),
        ("device.attributes['gpu.nvidia.com'].index == 0", True),
        ("device.attributes['gpu.nvidia.com'].index == 0.0", True),
        ("'gpu.nvidia.com' == device.driver", True),
        ("device.driver.startsWith('gpu.') && device.driver.endsWith('.com')", True),
        ("device.attributes['gpu.nvidia.com'].productName.matches('H1[0-9]{2}')", True),
        ("device.attributes['gpu.nvidia.com'].cudaComputeCapability.major() >= 9", True),
        ("device.capacity['gpu.nvidia.com'].memory.isGreaterThan(quantity('79Gi'))", True),
        ("device.capacity['gpu.nvidia.com'].memory.asApproximateFloat() > 8.0e10", True),
        ("device.capacity['gpu.nvidia.com'].memory == quantity('81920Mi')", True),
        # The precondition guards the attribute of another driver: && absorbs the error.
        (
            "device.driver == 'gpu.example.com' && device.attributes['gpu.example.com'].index == 0",
            False,
        ),
        (
            "device.attributes['gpu.example.com'].index == 0 && device.driver == 'gpu.example.com'",
            False,
        ),
        ("cel.bind(d, device, d.driver == 'gpu.nvidia.com')", True),
        (
            "device.attributes['gpu.nvidia.com'].?architecture"
            ".optMap(a, a.lowerAscii()).orValue('') == 'hopper'",
            True,
        ),
        ("device.attributes['gpu.nvidia.com'].transformList(k, v, k).size() == 9", True),
    ],
)
def test_device_lookups(expression: str, expected: bool) -> None:
    assert compile_selector(expression).evaluate(GPU) is expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("device.attributes['nope.example.com'].uuid == 'x'", "no such key: uuid"),
        (
            "device.capacity['gpu.nvidia.com'].cores.compareTo(quantity('1')) > 0",
            "no such key: cores",
        ),
        # A version attribute compared with a string: the Semver rejects it.
        ("device.attributes['gpu.nvidia.com'].driverVersion == '550.54.15'", "no such overload"),
        ("device.attributes['gpu.nvidia.com'].driverVersion != '550.54.15'", "no such overload"),
        (
            "device.attributes['gpu.nvidia.com'].driverVersion.isGreaterThan("
            "device.attributes['gpu.nvidia.com'].productName)",
            "no such overload",
        ),
        ("device.attributes['gpu.nvidia.com'].index.startsWith('0')", "no such overload"),
        (
            "device.attributes['gpu.nvidia.com'].productName.compareTo(semver('1.0.0')) > 0",
            "no such overload",
        ),
        # A result that is not a bool.
        (
            "device.attributes['gpu.nvidia.com'].productName",
            "CEL result of type string could not be converted to bool",
        ),
        (
            "device.attributes['gpu.nvidia.com'].index",
            "CEL result of type int could not be converted to bool",
        ),
    ],
)
def test_device_lookup_errors(expression: str, reason: str) -> None:
    with pytest.raises(CelEvaluationError) as info:
        compile_selector(expression).evaluate(GPU)
    assert info.value.reason.startswith(reason)


def test_a_bool_attribute_is_a_valid_result() -> None:
    device = build_cel_device("d.example.com", {"healthy": True, "virtual": False}, {})
    assert compile_selector("device.attributes['d.example.com'].healthy").evaluate(device)
    assert not compile_selector("device.attributes['d.example.com'].virtual").evaluate(device)


def test_list_attributes() -> None:
    device = build_cel_device(
        "d.example.com",
        {"ints": [1, 2, 3], "names": ["a", "b"], "versions": [Semver.parse("1.0.0")]},
        {},
    )
    for expression, expected in [
        ("device.attributes['d.example.com'].ints.exists(x, x == 2)", True),
        ("2 in device.attributes['d.example.com'].ints", True),
        ("device.attributes['d.example.com'].ints.sum() == 6", True),
        ("sets.contains(device.attributes['d.example.com'].names, ['b'])", True),
        ("device.attributes['d.example.com'].names.join(',') == 'a,b'", True),
        ("semver('1.0.0') in device.attributes['d.example.com'].versions", True),
        ("device.attributes['d.example.com'].versions[0].major() == 1", True),
    ]:
        assert compile_selector(expression).evaluate(device) is expected, expression


def test_allocator_built_devices_with_plain_mappings_work() -> None:
    # The allocator may build CelDevice directly; any Mapping is accepted.
    from types import MappingProxyType

    device = CelDevice(
        driver="d.example.com",
        attributes=MappingProxyType({"d.example.com": MappingProxyType({"model": "m"})}),
        capacity={},
        allow_multiple_allocations=False,
    )
    assert compile_selector("device.attributes['d.example.com'].model == 'm'").evaluate(device)
    with pytest.raises(CelEvaluationError, match="no such key: x"):
        compile_selector("device.attributes['d.example.com'].x == 'm'").evaluate(device)
    assert compile_selector("device.attributes['d.example.com'].?x.hasValue() == false").evaluate(
        device
    )


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


# -- the public interface ------------------------------------------------------------------------


def test_compile_selector_is_memoised() -> None:
    expression = "device.driver == 'memo.example.com'"
    first = compile_selector(expression)
    assert compile_selector(expression) is first
    assert isinstance(first, CompiledSelector)
    assert first.expression == expression
    assert "memo.example.com" in repr(first)


def test_compile_errors_are_raised_afresh_each_time() -> None:
    errors = []
    for _ in range(2):
        with pytest.raises(CelCompileError) as info:
            compile_selector("nope")
        errors.append(info.value)
    assert errors[0] is not errors[1]
    assert errors[0].reason == errors[1].reason


def test_exported_names() -> None:
    assert sorted(cel.__all__) == [
        "AttrValue",
        "CelDevice",
        "CompiledSelector",
        "build_cel_device",
        "compile_selector",
    ]
