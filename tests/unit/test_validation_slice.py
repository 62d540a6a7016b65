"""ResourceSlice rules (:mod:`api.validation.resource_slice`): devices and counters, attribute
and capacity values, request policies, taints and binding conditions, with the per-slice
limits.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from validation_fixtures import SLICE, Mutation, assert_rejected, dev, messages

from api.resource_v1 import DeviceAttribute, ResourceSlice
from api.validation import validate


def test_slice_variants_that_are_valid() -> None:
    def counters_only(d: dict[str, Any]) -> None:
        del d["spec"]["devices"]
        d["spec"]["sharedCounters"] = [
            {"name": "gpu-0-counters", "counters": {"memory": {"value": "80Gi"}}}
        ]

    def per_device(d: dict[str, Any]) -> None:
        del d["spec"]["nodeName"]
        d["spec"]["perDeviceNodeSelection"] = True
        dev(d, 0)["nodeName"] = "node-a"
        dev(d, 1)["allNodes"] = True

    def shared(d: dict[str, Any]) -> None:
        device = dev(d)
        device["allowMultipleAllocations"] = True
        device["capacity"]["memory"]["requestPolicy"] = {
            "default": "10Gi",
            "validRange": {"min": "10Gi", "max": "80Gi", "step": "10Gi"},
        }
        device["capacity"]["compute"] = {
            "value": "100",
            "requestPolicy": {"default": "10", "validValues": ["10", "50", "100"]},
        }

    def pool_with_slash(d: dict[str, Any]) -> None:
        del d["spec"]["nodeName"]
        d["spec"]["allNodes"] = True
        d["spec"]["pool"]["name"] = "cluster.example.com/rack-1"

    for mutate in (counters_only, per_device, shared, pool_with_slash):
        assert messages(SLICE, mutate) == [], mutate.__name__


def test_empty_slice_is_valid() -> None:
    assert messages(SLICE, lambda d: d["spec"].pop("devices")) == []


# --- Devices and counters ------------------------------------------------------------------------


def test_devices_and_shared_counters_are_exclusive() -> None:
    def both(d: dict[str, Any]) -> None:
        d["spec"]["sharedCounters"] = [{"name": "c", "counters": {"m": {"value": "1"}}}]

    assert_rejected(SLICE, both, "spec", "only one of `sharedCounters` or `devices`")


def test_device_count_limit_is_128() -> None:
    def fill(n: int) -> Mutation:
        return lambda d: d["spec"].update(devices=[{"name": f"d-{i}"} for i in range(n)])

    assert messages(SLICE, fill(128)) == []
    assert_rejected(SLICE, fill(129), "spec.devices", "too many devices: 129, at most 128")


@pytest.mark.parametrize(
    "advanced",
    [
        {"taints": [{"key": "k", "effect": "NoSchedule"}]},
        {"consumesCounters": [{"counterSet": "s", "counters": {"c": {"value": "1"}}}]},
        {"attributes": {"cores": {"ints": [0, 1]}}},
    ],
)
def test_device_count_limit_is_64_with_advanced_features(advanced: dict[str, Any]) -> None:
    def fill(n: int) -> Mutation:
        def mutate(d: dict[str, Any]) -> None:
            d["spec"]["devices"] = [{"name": f"d-{i}"} for i in range(n)]
            d["spec"]["devices"][n - 1].update(copy.deepcopy(advanced))

        return mutate

    assert messages(SLICE, fill(64)) == []
    assert_rejected(SLICE, fill(65), "spec.devices", "at most 64 allowed when any device uses")


def test_counter_set_limits() -> None:
    def sets(n: int, counters: int = 1) -> Mutation:
        def mutate(d: dict[str, Any]) -> None:
            del d["spec"]["devices"]
            d["spec"]["sharedCounters"] = [
                {"name": f"s-{i}", "counters": {f"c-{j}": {"value": "1"} for j in range(counters)}}
                for i in range(n)
            ]

        return mutate

    assert messages(SLICE, sets(8, 32)) == []
    assert_rejected(SLICE, sets(9), "spec.sharedCounters", "too many counter sets: 9, at most 8")
    assert_rejected(
        SLICE, sets(1, 33), "spec.sharedCounters[0].counters", "too many counters: 33, at most 32"
    )
    assert_rejected(
        SLICE,
        lambda d: (sets(2)(d), d["spec"]["sharedCounters"][1].update(name="s-0")),
        "spec.sharedCounters",
        'duplicate counter set name "s-0"',
    )
    assert_rejected(
        SLICE,
        lambda d: (sets(1)(d), d["spec"]["sharedCounters"][0].update(counters={})),
        "spec.sharedCounters[0].counters",
        "at least one counter",
    )
    assert_rejected(
        SLICE,
        lambda d: (
            sets(1)(d),
            d["spec"]["sharedCounters"][0].update(counters={"Mem": {"value": "1"}}),
        ),
        "spec.sharedCounters[0].counters.Mem",
        "counter name",
    )
    assert_rejected(
        SLICE,
        lambda d: (
            sets(1)(d),
            d["spec"]["sharedCounters"][0].update(counters={"m": {"value": "-1"}}),
        ),
        "spec.sharedCounters[0].counters.m.value",
        "must not be negative",
    )


def test_counter_consumption_limits() -> None:
    def consume(*sets: str) -> Mutation:
        return lambda d: dev(d).update(
            consumesCounters=[
                {"counterSet": s, "counters": {"memory": {"value": "1Gi"}}} for s in sets
            ]
        )

    assert messages(SLICE, consume("a", "b")) == []
    assert_rejected(SLICE, consume("a", "b", "c"), "spec.devices[0].consumesCounters", "at most 2")
    assert_rejected(
        SLICE, consume("a", "a"), "spec.devices[0].consumesCounters", 'duplicate counter set "a"'
    )
    assert_rejected(
        SLICE,
        lambda d: dev(d).update(
            consumesCounters=[
                {"counterSet": "a", "counters": {f"c-{i}": {"value": "1"} for i in range(33)}}
            ]
        ),
        "spec.devices[0].consumesCounters[0].counters",
        "at most 32",
    )


def test_attributes_and_capacities_share_a_limit_of_32() -> None:
    def fill(attrs: int, caps: int) -> Mutation:
        return lambda d: dev(d).update(
            attributes={f"a{i}": {"int": i} for i in range(attrs)},
            capacity={f"c{i}": {"value": "1"} for i in range(caps)},
        )

    assert messages(SLICE, fill(30, 2)) == []
    assert_rejected(
        SLICE, fill(30, 3), "spec.devices[0]", "attributes and capacities (combined): 33"
    )


def test_attribute_values_limit_counts_list_items() -> None:
    def fill(items: int) -> Mutation:
        return lambda d: dev(d).update(
            attributes={"cores": {"ints": list(range(items))}, "model": {"string": "x"}}
        )

    assert messages(SLICE, fill(47)) == []
    assert_rejected(
        SLICE,
        fill(48),
        "spec.devices[0].attributes",
        "attribute values (list items count one each): 49",
    )


# --- Attribute and capacity values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "path_suffix", "fragment"),
    [
        ({}, "", "exactly one value is required"),
        ({"int": 1, "string": "1"}, "", "found int, string"),
        ({"string": "x" * 65}, ".string", "too long: 65 characters, at most 64"),
        ({"version": "1.2.3-" + "a" * 60}, ".version", "at most 64"),
        ({"strings": []}, ".strings", "at least one value"),
        ({"strings": ["ok", "y" * 65]}, ".strings[1]", "too long"),
    ],
)
def test_attribute_value_rules(attribute: dict[str, Any], path_suffix: str, fragment: str) -> None:
    assert_rejected(
        SLICE,
        lambda d: dev(d)["attributes"].update(model=attribute),
        "spec.devices[0].attributes.model" + path_suffix,
        fragment,
    )


def test_string_of_exactly_64_characters_is_allowed() -> None:
    assert messages(SLICE, lambda d: dev(d)["attributes"].update(model={"string": "x" * 64})) == []


def test_version_built_in_python_is_checked_too() -> None:
    # Decoding rejects a bad version; objects built in code skip decoding.
    attribute = DeviceAttribute.model_construct(version="1.2")
    slice_ = ResourceSlice.model_validate(copy.deepcopy(SLICE))
    assert slice_.spec.devices is not None and slice_.spec.devices[0].attributes is not None
    slice_.spec.devices[0].attributes["driverVersion"] = attribute
    found = [str(e) for e in validate(slice_)]
    assert any(
        m.startswith("spec.devices[0].attributes.driverVersion.version:")
        and "semantic version" in m
        for m in found
    ), found


@pytest.mark.parametrize(
    ("policy", "path", "fragment"),
    [
        ({"validValues": ["1Gi"]}, ".requestPolicy.default", "required: when validValues"),
        (
            {"default": "1Gi", "validValues": ["1Gi"], "validRange": {"min": "1Gi"}},
            ".requestPolicy",
            "only one of `validValues` or `validRange`",
        ),
        ({"default": "81Gi"}, ".requestPolicy.default", "must not exceed the capacity value 80Gi"),
        (
            {"default": "2Gi", "validValues": ["2Gi", "1Gi"]},
            ".requestPolicy.validValues[1]",
            "ascending",
        ),
        (
            {"default": "2Gi", "validValues": ["1Gi", "1Gi", "2Gi"]},
            ".requestPolicy.validValues[1]",
            "unique",
        ),
        (
            {"default": "2Gi", "validValues": ["1Gi", "3Gi"]},
            ".requestPolicy.validValues",
            "must contain the default value 2Gi",
        ),
        (
            {"default": "1Gi", "validValues": ["1Gi", "90Gi"]},
            ".requestPolicy.validValues[1]",
            "must not exceed",
        ),
        (
            {"default": "1Gi", "validValues": [f"{i}Gi" for i in range(1, 12)]},
            ".requestPolicy.validValues",
            "too many valid values: 11, at most 10",
        ),
        (
            {"default": "10Gi", "validRange": {"min": "10Gi", "max": "5Gi"}},
            ".requestPolicy.validRange.max",
            "at least min",
        ),
        (
            {"default": "10Gi", "validRange": {"min": "10Gi", "max": "100Gi"}},
            ".requestPolicy.validRange.max",
            "must not exceed",
        ),
        (
            {"default": "10Gi", "validRange": {"min": "10Gi", "step": "0"}},
            ".requestPolicy.validRange.step",
            "greater than zero",
        ),
        (
            {"default": "10Gi", "validRange": {"min": "10Gi", "step": "75Gi"}},
            ".requestPolicy.validRange.step",
            "min + step (85Gi) must not exceed",
        ),
        (
            {"default": "5Gi", "validRange": {"min": "10Gi"}},
            ".requestPolicy.default",
            "within validRange",
        ),
        (
            {"default": "15Gi", "validRange": {"min": "10Gi", "step": "10Gi"}},
            ".requestPolicy.default",
            "multiple of step",
        ),
    ],
)
def test_request_policy_rules(policy: dict[str, Any], path: str, fragment: str) -> None:
    def mutate(d: dict[str, Any]) -> None:
        dev(d)["allowMultipleAllocations"] = True
        dev(d)["capacity"]["memory"]["requestPolicy"] = policy

    assert_rejected(SLICE, mutate, "spec.devices[0].capacity.memory" + path, fragment)


def test_request_policy_needs_multiple_allocations() -> None:
    assert_rejected(
        SLICE,
        lambda d: dev(d)["capacity"]["memory"].update(requestPolicy={"default": "1Gi"}),
        "spec.devices[0].capacity.memory.requestPolicy",
        "allowMultipleAllocations: true",
    )


def test_negative_capacity_is_rejected() -> None:
    assert_rejected(
        SLICE,
        lambda d: dev(d)["capacity"]["memory"].update(value="-1Gi"),
        "spec.devices[0].capacity.memory.value",
        "must not be negative",
    )


# --- Taints and binding conditions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("taint", "path", "fragment"),
    [
        (
            {"key": "k", "effect": "PreferNoSchedule"},
            ".effect",
            'supported values "None", "NoSchedule", "NoExecute"',
        ),
        ({"key": "", "effect": "NoSchedule"}, ".key", "required"),
        ({"key": "bad key", "effect": "NoSchedule"}, ".key", "invalid taint key"),
        ({"key": "k", "value": "bad value!", "effect": "None"}, ".value", "invalid value"),
    ],
)
def test_taint_rules(taint: dict[str, Any], path: str, fragment: str) -> None:
    assert_rejected(
        SLICE, lambda d: dev(d).update(taints=[taint]), "spec.devices[0].taints[0]" + path, fragment
    )


def test_taint_limit_is_16() -> None:
    def taints(n: int) -> Mutation:
        return lambda d: dev(d).update(
            taints=[{"key": f"k{i}", "effect": "None"} for i in range(n)]
        )

    assert messages(SLICE, taints(16)) == []
    assert_rejected(SLICE, taints(17), "spec.devices[0].taints", "too many taints: 17, at most 16")


@pytest.mark.parametrize(
    ("fields", "path", "fragment"),
    [
        (
            {"bindingConditions": ["attached"]},
            ".bindingFailureConditions",
            "required: when bindingConditions",
        ),
        (
            {"bindingFailureConditions": ["failed"]},
            ".bindingConditions",
            "required: when bindingFailureConditions",
        ),
        (
            {"bindingConditions": ["a", "a"], "bindingFailureConditions": ["f"]},
            ".bindingConditions",
            'duplicate condition "a"',
        ),
        (
            {"bindingConditions": ["a"], "bindingFailureConditions": ["a"]},
            ".bindingFailureConditions",
            '"a" may not be both',
        ),
        (
            {"bindingConditions": ["a", "b", "c", "d", "e"], "bindingFailureConditions": ["f"]},
            ".bindingConditions",
            "at most 4",
        ),
        (
            {"bindingConditions": ["not valid"], "bindingFailureConditions": ["f"]},
            ".bindingConditions[0]",
            "invalid condition type",
        ),
    ],
)
def test_binding_condition_rules(fields: dict[str, Any], path: str, fragment: str) -> None:
    assert_rejected(SLICE, lambda d: dev(d).update(fields), "spec.devices[0]" + path, fragment)
