"""The ``device`` variable of a selector: how CelDevices are built, and the lookup
semantics of its attributes and capacity (missing keys, presence tests, types, lists)."""

from __future__ import annotations

import dataclasses

import pytest
from cel_device_fixtures import GPU

from api.errors import CelEvaluationError
from api.quantity import Quantity
from api.semver import Semver
from dra_driver.cel import CelDevice, build_cel_device, compile_selector

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
