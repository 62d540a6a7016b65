"""Device selectors through the public interface: the example selectors of the spec against
realistic devices, and what ``dra_driver.cel`` exports (memoised compilation, names)."""

from __future__ import annotations

import pytest
from cel_device_fixtures import EXAMPLE_0, EXAMPLE_2, GPU, MIG, SHARED, T4

from api.errors import CelCompileError, CelEvaluationError
from dra_driver import cel
from dra_driver.cel import CompiledSelector, compile_selector

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
