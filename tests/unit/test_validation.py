"""What the API server would reject, rule by rule."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from api import limits
from api.errors import InvalidInputError
from api.resource_v1 import (
    DeviceAttribute,
    Node,
    ObjectMeta,
    ResourcePool,
    ResourceSlice,
    ResourceSliceSpec,
    field_path,
    parse_object,
)
from api.validation import ensure_valid, is_dns1123_label, is_dns1123_subdomain, validate

Mutation = Callable[[dict[str, Any]], object]


def gpu(i: int) -> dict[str, Any]:
    return {
        "name": f"gpu-{i}",
        "attributes": {
            "index": {"int": i},
            "productName": {"string": "NVIDIA H100 80GB HBM3"},
            "driverVersion": {"version": "550.54.15"},
            "resource.kubernetes.io/pcieRoot": {"string": "pci0000:3a"},
        },
        "capacity": {"memory": {"value": "80Gi"}},
    }


SLICE: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "ResourceSlice",
    "metadata": {"name": "node-a-gpu"},
    "spec": {
        "driver": "gpu.dra-driver.io",
        "nodeName": "node-a",
        "pool": {"name": "node-a", "generation": 1, "resourceSliceCount": 1},
        "devices": [gpu(0), gpu(1)],
    },
}

CLASS: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "DeviceClass",
    "metadata": {"name": "gpu.dra-driver.io"},
    "spec": {
        "selectors": [{"cel": {"expression": "device.driver == 'gpu.dra-driver.io'"}}],
        "config": [
            {
                "opaque": {
                    "driver": "gpu.dra-driver.io",
                    "parameters": {"apiVersion": "gpu.dra-driver.io/v1alpha1", "kind": "GpuConfig"},
                }
            }
        ],
    },
}

CLAIM: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "ResourceClaim",
    "metadata": {"name": "train-0", "namespace": "default"},
    "spec": {
        "devices": {
            "requests": [
                {"name": "gpu", "exactly": {"deviceClassName": "gpu.dra-driver.io", "count": 2}},
                {
                    "name": "mig",
                    "firstAvailable": [
                        {"name": "big", "deviceClassName": "mig-3g"},
                        {"name": "small", "deviceClassName": "mig-1g"},
                    ],
                },
            ],
            "constraints": [
                {"requests": ["gpu", "mig/small"], "matchAttribute": "gpu.dra-driver.io/numa"}
            ],
            "config": [
                {
                    "requests": ["gpu"],
                    "opaque": {"driver": "gpu.dra-driver.io", "parameters": {"kind": "GpuConfig"}},
                }
            ],
        }
    },
}

ALLOCATION: dict[str, Any] = {
    "devices": {
        "results": [
            {"request": "gpu", "driver": "gpu.dra-driver.io", "pool": "node-a", "device": "gpu-0"},
            {
                "request": "mig/small",
                "driver": "gpu.dra-driver.io",
                "pool": "node-a",
                "device": "gpu-1-mig-0",
                "shareID": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            },
        ],
        "config": [
            {
                "source": "FromClaim",
                "requests": ["gpu"],
                "opaque": {"driver": "gpu.dra-driver.io", "parameters": {}},
            }
        ],
    },
    "nodeSelector": {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}
        ]
    },
}


def messages(base: dict[str, Any], mutate: Mutation | None = None) -> list[str]:
    data = copy.deepcopy(base)
    if mutate is not None:
        mutate(data)
    return [str(e) for e in validate(parse_object(data))]


def assert_rejected(base: dict[str, Any], mutate: Mutation, path: str, fragment: str) -> None:
    found = messages(base, mutate)
    assert any(m.startswith(path + ": ") and fragment in m for m in found), found


def dev(d: dict[str, Any], i: int = 0) -> dict[str, Any]:
    device = d["spec"]["devices"][i]
    assert isinstance(device, dict)
    return device


def req(d: dict[str, Any], i: int = 0) -> dict[str, Any]:
    request = d["spec"]["devices"]["requests"][i]
    assert isinstance(request, dict)
    return request


# --- Valid objects -------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [SLICE, CLASS, CLAIM])
def test_realistic_objects_are_valid(base: dict[str, Any]) -> None:
    assert messages(base) == []


def test_allocated_claim_with_status_is_valid() -> None:
    def allocate(d: dict[str, Any]) -> None:
        d["status"] = {
            "allocation": copy.deepcopy(ALLOCATION),
            "reservedFor": [{"resource": "pods", "name": "p", "uid": "u1"}],
            "devices": [
                {
                    "driver": "gpu.dra-driver.io",
                    "pool": "node-a",
                    "device": "gpu-1-mig-0",
                    "shareID": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "networkData": {"ips": ["192.0.2.5/24", "2001:db8::1/64"]},
                }
            ],
        }

    assert messages(CLAIM, allocate) == []


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


def test_node_needs_only_a_valid_name() -> None:
    assert validate(Node(metadata=ObjectMeta(name="node-a"))) == []
    assert [str(e).split(",")[0] for e in validate(Node())] == [
        "metadata.name: required: node name"
    ]
    assert "invalid node name" in str(validate(Node(metadata=ObjectMeta(name="Node_A")))[0])


# --- Names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label", "subdomain"),
    [
        ("gpu-0", True, True),
        ("a", True, True),
        ("gpu.example.com", False, True),
        ("-gpu", False, False),
        ("gpu-", False, False),
        ("GPU", False, False),
        ("gpu_0", False, False),
        ("a" * 63, True, True),
        ("a" * 64, False, True),
        (".".join(["a" * 63] * 4), False, False),
        ("", False, False),
    ],
)
def test_dns_name_rules(value: str, label: bool, subdomain: bool) -> None:
    assert is_dns1123_label(value) is label
    assert is_dns1123_subdomain(value) is subdomain


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: d["metadata"].update(name="Node_A"), "metadata.name", "RFC 1123 subdomain"),
        (lambda d: d["metadata"].pop("name"), "metadata.name", "name or generateName"),
        (lambda d: d["metadata"].update(namespace="x"), "metadata.namespace", "cluster-scoped"),
        (lambda d: d["spec"].update(driver=""), "spec.driver", "required"),
        (lambda d: d["spec"].update(driver="gpu_example.com"), "spec.driver", "DNS subdomain"),
        (lambda d: d["spec"].update(driver="a" * 64), "spec.driver", "at most 63"),
        (lambda d: d["spec"]["pool"].update(name=""), "spec.pool.name", "required"),
        (lambda d: d["spec"]["pool"].update(name="a//b"), "spec.pool.name", "separated by"),
        (
            lambda d: d["spec"]["pool"].update(name="a" * 254),
            "spec.pool.name",
            "at most 253 allowed",
        ),
        (lambda d: d["spec"]["pool"].update(generation=-1), "spec.pool.generation", ">= 0"),
        (
            lambda d: d["spec"]["pool"].update(resourceSliceCount=0),
            "spec.pool.resourceSliceCount",
            "greater than zero",
        ),
        (lambda d: dev(d).update(name="GPU0"), "spec.devices[0].name", "RFC 1123 label"),
        (lambda d: dev(d, 1).update(name="gpu-0"), "spec.devices", 'duplicate device name "gpu-0"'),
    ],
)
def test_slice_name_rules(mutate: Mutation, path: str, fragment: str) -> None:
    if fragment == ">= 0":
        fragment = "greater than or equal to 0"
    assert_rejected(SLICE, mutate, path, fragment)


def test_driver_name_is_checked_case_insensitively() -> None:
    # Same as CSI driver names: upper case passes the DNS check after lower-casing.
    assert messages(SLICE, lambda d: d["spec"].update(driver="GPU.Example.com")) == []


def test_generate_name_replaces_name() -> None:
    def generated(d: dict[str, Any]) -> None:
        d["metadata"] = {"generateName": "node-a-gpu-"}

    assert messages(SLICE, generated) == []


# --- Node selection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (
            lambda d: d["spec"].pop("nodeName"),
            "spec",
            "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection`",
        ),
        (lambda d: d["spec"].update(allNodes=True), "spec", "found nodeName, allNodes"),
        (lambda d: d["spec"].update(allNodes=False), "spec.allNodes", "must be true"),
        (
            lambda d: d["spec"].update(perDeviceNodeSelection=False),
            "spec.perDeviceNodeSelection",
            "must be true",
        ),
        (lambda d: d["spec"].update(nodeName=""), "spec.nodeName", "non-empty DNS subdomain"),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(
                    nodeSelector={
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
                            {"matchExpressions": [{"key": "b", "operator": "Exists"}]},
                        ]
                    }
                ),
            ),
            "spec.nodeSelector.nodeSelectorTerms",
            "exactly one term, not 2",
        ),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(
                    nodeSelector={
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "Near"}]}
                        ]
                    }
                ),
            ),
            "spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].operator",
            'unsupported value "Near"',
        ),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(
                    nodeSelector={
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "In"}]}
                        ]
                    }
                ),
            ),
            "spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].values",
            "at least one value",
        ),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(nodeSelector={"nodeSelectorTerms": [{}]}),
            ),
            "spec.nodeSelector.nodeSelectorTerms[0]",
            "matchExpressions or matchFields",
        ),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(
                    nodeSelector={
                        "nodeSelectorTerms": [
                            {"matchFields": [{"key": "spec.x", "operator": "In", "values": ["a"]}]}
                        ]
                    }
                ),
            ),
            "spec.nodeSelector.nodeSelectorTerms[0].matchFields[0].key",
            '"metadata.name"',
        ),
        (
            lambda d: dev(d).update(nodeName="node-a"),
            "spec.devices[0].nodeName",
            "perDeviceNodeSelection: true",
        ),
        (
            lambda d: (
                d["spec"].pop("nodeName"),
                d["spec"].update(perDeviceNodeSelection=True),
                dev(d, 0).update(nodeName="node-a"),
            ),
            "spec.devices[1]",
            "exactly one of `nodeName`, `nodeSelector`, `allNodes` is required",
        ),
    ],
)
def test_node_selection_rules(mutate: Mutation, path: str, fragment: str) -> None:
    assert_rejected(SLICE, mutate, path, fragment)


def test_node_selector_with_valid_gt_requirement() -> None:
    def selector(d: dict[str, Any]) -> None:
        del d["spec"]["nodeName"]
        d["spec"]["nodeSelector"] = {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "example.com/gen", "operator": "Gt", "values": ["3"]}
                    ]
                }
            ]
        }

    def not_an_integer(d: dict[str, Any]) -> None:
        selector(d)
        d["spec"]["nodeSelector"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] = ["x"]

    assert messages(SLICE, selector) == []
    assert_rejected(
        SLICE,
        not_an_integer,
        "spec.nodeSelector.nodeSelectorTerms[0].matchExpressions[0].values",
        "single integer",
    )


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


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a/b/c", 'at most one "/"'),
        ("/index", "domain before"),
        ("gpu.example.com/", "identifier is empty"),
        ("0index", "C identifier"),
        ("has-dash", "C identifier"),
        ("a" * 33, "at most 32 characters, not 33"),
        ("a" * 64 + "/x", "at most 63 characters, not 64"),
        ("bad_domain!/x", "DNS subdomain"),
    ],
)
def test_qualified_attribute_names(name: str, fragment: str) -> None:
    assert_rejected(
        SLICE,
        lambda d: dev(d)["attributes"].update({name: {"int": 1}}),
        field_path(("spec", "devices", 0, "attributes", name)),
        fragment,
    )


def test_qualified_names_that_are_valid() -> None:
    def names(d: dict[str, Any]) -> None:
        dev(d)["attributes"].update(
            {
                "a" * 32: {"int": 1},
                "_private": {"int": 1},
                "resource.kubernetes.io/pciBusID": {"string": "0000:3b:00.0"},
                "example.com/x_1": {"bool": True},
            }
        )
        dev(d)["capacity"].update({"example.com/memory": {"value": "1Gi"}})

    assert messages(SLICE, names) == []


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


# --- DeviceClass ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: d["spec"]["selectors"].append({}), "spec.selectors[1].cel", "CEL expression"),
        (
            lambda d: d["spec"]["selectors"].append({"cel": {"expression": "  "}}),
            "spec.selectors[1].cel.expression",
            "non-empty",
        ),
        (
            lambda d: d["spec"]["selectors"].append(
                {"cel": {"expression": "'" + "é" * 5120 + "'"}}
            ),
            "spec.selectors[1].cel.expression",
            "too long: 10242 bytes, at most 10240",
        ),
        (
            lambda d: d["spec"].update(selectors=[{"cel": {"expression": "true"}}] * 33),
            "spec.selectors",
            "too many selectors: 33, at most 32",
        ),
        (
            lambda d: d["spec"].update(config=[{"opaque": {"driver": "d", "parameters": {}}}] * 33),
            "spec.config",
            "too many configs: 33, at most 32",
        ),
        (lambda d: d["spec"]["config"].append({}), "spec.config[1].opaque", "required"),
        (
            lambda d: d["spec"]["config"][0]["opaque"].update(driver="Bad_Driver"),
            "spec.config[0].opaque.driver",
            "DNS subdomain",
        ),
        (
            lambda d: d["spec"]["config"][0]["opaque"].update(parameters={"blob": "x" * 10240}),
            "spec.config[0].opaque.parameters",
            "too large",
        ),
        (
            lambda d: d["spec"].update(extendedResourceName="gpu"),
            "spec.extendedResourceName",
            "domain prefix",
        ),
        (
            lambda d: d["spec"].update(extendedResourceName="kubernetes.io/gpu"),
            "spec.extendedResourceName",
            "reserved",
        ),
        (lambda d: d["metadata"].update(name="GPU"), "metadata.name", "subdomain"),
    ],
)
def test_device_class_rules(mutate: Mutation, path: str, fragment: str) -> None:
    assert_rejected(CLASS, mutate, path, fragment)


def test_device_class_limits_are_inclusive() -> None:
    def at_limits(d: dict[str, Any]) -> None:
        d["spec"]["selectors"] = [{"cel": {"expression": "'" + "x" * 10238 + "'"}}] * 32
        d["spec"]["config"] = [{"opaque": {"driver": "d", "parameters": {"k": "x" * 10232}}}] * 32
        d["spec"]["extendedResourceName"] = "example.com/gpu"

    assert messages(CLASS, at_limits) == []


def test_opaque_parameters_must_be_an_object() -> None:
    data = copy.deepcopy(CLASS)
    data["spec"]["config"][0]["opaque"]["parameters"] = ["a"]
    with pytest.raises(
        InvalidInputError, match=r"spec\.config\[0\]\.opaque\.parameters: must be an object"
    ):
        parse_object(data)


# --- ResourceClaim -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda d: req(d).update(name="GPU"), "spec.devices.requests[0].name", "RFC 1123 label"),
        (
            lambda d: req(d, 1).update(name="gpu"),
            "spec.devices.requests",
            'duplicate request name "gpu"',
        ),
        (
            lambda d: req(d).update(firstAvailable=[{"name": "a", "deviceClassName": "c"}]),
            "spec.devices.requests[0]",
            "exactly one of `exactly` or `firstAvailable`",
        ),
        (lambda d: req(d).pop("exactly"), "spec.devices.requests[0]", "exactly one of"),
        (
            lambda d: req(d)["exactly"].update(deviceClassName=""),
            "spec.devices.requests[0].exactly.deviceClassName",
            "required",
        ),
        (
            lambda d: req(d)["exactly"].update(deviceClassName="GPU"),
            "spec.devices.requests[0].exactly.deviceClassName",
            "invalid device class name",
        ),
        (
            lambda d: req(d)["exactly"].update(allocationMode="Some"),
            "spec.devices.requests[0].exactly.allocationMode",
            'unsupported value "Some": supported values "ExactCount", "All"',
        ),
        (
            lambda d: req(d)["exactly"].update(count=0),
            "spec.devices.requests[0].exactly.count",
            "greater than zero",
        ),
        (
            lambda d: req(d)["exactly"].update(allocationMode="All"),
            "spec.devices.requests[0].exactly.count",
            "must not be set when allocationMode is All",
        ),
        (
            lambda d: req(d, 1)["firstAvailable"][0].update(adminAccess=True),
            "spec.devices.requests[1].firstAvailable[0].adminAccess",
            "not allowed on a firstAvailable subrequest",
        ),
        (
            lambda d: req(d, 1).update(firstAvailable=[]),
            "spec.devices.requests[1].firstAvailable",
            "at least one subrequest",
        ),
        (
            lambda d: req(d, 1).update(
                firstAvailable=[{"name": f"s{i}", "deviceClassName": "c"} for i in range(9)]
            ),
            "spec.devices.requests[1].firstAvailable",
            "too many subrequests: 9, at most 8",
        ),
        (
            lambda d: req(d, 1)["firstAvailable"][1].update(name="big"),
            "spec.devices.requests[1].firstAvailable",
            'duplicate subrequest name "big"',
        ),
        (
            lambda d: req(d, 1)["firstAvailable"][1].update(count=-1),
            "spec.devices.requests[1].firstAvailable[1].count",
            "greater than zero",
        ),
        (
            lambda d: req(d)["exactly"].update(capacity={"requests": {"a/b/c": "1"}}),
            "spec.devices.requests[0].exactly.capacity.requests[a/b/c]",
            'at most one "/"',
        ),
        (
            lambda d: req(d)["exactly"].update(capacity={"requests": {"memory": "-1Gi"}}),
            "spec.devices.requests[0].exactly.capacity.requests.memory",
            "must not be negative",
        ),
        (
            lambda d: d["spec"]["devices"].update(
                requests=[
                    {"name": f"r{i}", "exactly": {"deviceClassName": "c"}} for i in range(33)
                ],
                constraints=[],
                config=[],
            ),
            "spec.devices.requests",
            "too many requests: 33, at most 32",
        ),
        (
            lambda d: d["metadata"].update(namespace="Default"),
            "metadata.namespace",
            "RFC 1123 label",
        ),
    ],
)
def test_request_rules(mutate: Mutation, path: str, fragment: str) -> None:
    assert_rejected(CLAIM, mutate, path, fragment)


def test_all_mode_without_count_and_explicit_exact_count_are_valid() -> None:
    def modes(d: dict[str, Any]) -> None:
        req(d)["exactly"] = {"deviceClassName": "gpu", "allocationMode": "All", "adminAccess": True}
        req(d, 1)["firstAvailable"][0].update(allocationMode="ExactCount", count=3)

    assert messages(CLAIM, modes) == []


def test_empty_claim_is_valid() -> None:
    assert messages(CLAIM, lambda d: d.update(spec={})) == []
    assert messages(CLAIM, lambda d: d["spec"].update(devices={})) == []


@pytest.mark.parametrize(
    ("toleration", "path", "fragment"),
    [
        ({"key": "", "operator": "Equal"}, ".operator", 'must be "Exists" when the key is empty'),
        ({}, ".operator", 'must be "Exists"'),
        ({"key": "k", "operator": "Exists", "value": "v"}, ".value", "must be empty"),
        ({"key": "k", "operator": "Matches"}, ".operator", 'supported values "Equal", "Exists"'),
        ({"key": "k", "effect": "None"}, ".effect", 'unsupported value "None"'),
        (
            {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 30},
            ".tolerationSeconds",
            "NoExecute",
        ),
        ({"key": "bad key"}, ".key", "invalid toleration key"),
    ],
)
def test_toleration_rules(toleration: dict[str, Any], path: str, fragment: str) -> None:
    assert_rejected(
        CLAIM,
        lambda d: req(d)["exactly"].update(tolerations=[toleration]),
        "spec.devices.requests[0].exactly.tolerations[0]" + path,
        fragment,
    )


def test_valid_tolerations() -> None:
    def tolerations(d: dict[str, Any]) -> None:
        req(d)["exactly"]["tolerations"] = [
            {"operator": "Exists"},
            {"key": "example.com/unhealthy", "operator": "Equal", "value": "xid-79"},
            {"key": "k", "effect": "NoExecute", "tolerationSeconds": 60},
        ]

    assert messages(CLAIM, tolerations) == []
    assert_rejected(
        CLAIM,
        lambda d: req(d)["exactly"].update(tolerations=[{"operator": "Exists"}] * 17),
        "spec.devices.requests[0].exactly.tolerations",
        "at most 16",
    )


@pytest.mark.parametrize(
    ("constraint", "path", "fragment"),
    [
        ({"requests": ["gpu"]}, "", "exactly one of `matchAttribute` or `distinctAttribute`"),
        (
            {"matchAttribute": "example.com/a", "distinctAttribute": "example.com/b"},
            "",
            "exactly one of",
        ),
        ({"matchAttribute": "numa"}, ".matchAttribute", "must include the domain"),
        ({"distinctAttribute": "a/b/c"}, ".distinctAttribute", 'at most one "/"'),
        (
            {"requests": ["tpu"], "matchAttribute": "example.com/a"},
            ".requests[0]",
            '"tpu" does not name a request',
        ),
        (
            {"requests": ["gpu/big"], "matchAttribute": "example.com/a"},
            ".requests[0]",
            "does not name",
        ),
        (
            {"requests": ["mig/huge"], "matchAttribute": "example.com/a"},
            ".requests[0]",
            "does not name",
        ),
        (
            {"requests": ["gpu", "gpu"], "matchAttribute": "example.com/a"},
            ".requests",
            'duplicate request reference "gpu"',
        ),
    ],
)
def test_constraint_rules(constraint: dict[str, Any], path: str, fragment: str) -> None:
    assert_rejected(
        CLAIM,
        lambda d: d["spec"]["devices"].update(constraints=[constraint]),
        "spec.devices.constraints[0]" + path,
        fragment,
    )


def test_constraint_may_name_a_request_with_subrequests_or_none() -> None:
    def refs(d: dict[str, Any]) -> None:
        d["spec"]["devices"]["constraints"] = [
            {"requests": ["mig"], "distinctAttribute": "gpu.dra-driver.io/uuid"},
            {"matchAttribute": "resource.kubernetes.io/pcieRoot"},
        ]

    assert messages(CLAIM, refs) == []


@pytest.mark.parametrize(
    ("config", "path", "fragment"),
    [
        (
            {"requests": ["nope"], "opaque": {"driver": "d", "parameters": {}}},
            ".requests[0]",
            "does not name",
        ),
        ({"requests": ["gpu"]}, ".opaque", "required"),
        ({"opaque": {"driver": "", "parameters": {}}}, ".opaque.driver", "required"),
        (
            {"opaque": {"driver": "d", "parameters": {"x": "y" * 10300}}},
            ".opaque.parameters",
            "too large: 10308 bytes, at most 10240",
        ),
    ],
)
def test_claim_config_rules(config: dict[str, Any], path: str, fragment: str) -> None:
    assert_rejected(
        CLAIM,
        lambda d: d["spec"]["devices"].update(config=[config]),
        "spec.devices.config[0]" + path,
        fragment,
    )


def test_constraint_and_config_list_limits() -> None:
    assert_rejected(
        CLAIM,
        lambda d: d["spec"]["devices"].update(
            constraints=[{"matchAttribute": "example.com/a"}] * 33
        ),
        "spec.devices.constraints",
        "too many constraints: 33, at most 32",
    )
    assert_rejected(
        CLAIM,
        lambda d: d["spec"]["devices"].update(
            config=[{"opaque": {"driver": "d", "parameters": {}}}] * 33
        ),
        "spec.devices.config",
        "too many configs: 33, at most 32",
    )


# --- ResourceClaim status ------------------------------------------------------------------------


def allocated(mutate: Callable[[dict[str, Any]], object]) -> Mutation:
    def apply(d: dict[str, Any]) -> None:
        d["status"] = {"allocation": copy.deepcopy(ALLOCATION)}
        mutate(d["status"])

    return apply


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (
            lambda s: s["allocation"]["devices"].update(
                results=[ALLOCATION["devices"]["results"][0]] * 33
            ),
            "status.allocation.devices.results",
            "too many results: 33, at most 32",
        ),
        (
            lambda s: s["allocation"]["devices"].update(
                config=[ALLOCATION["devices"]["config"][0]] * 65
            ),
            "status.allocation.devices.config",
            "too many configs: 65, at most 64",
        ),
        (
            lambda s: s["allocation"]["devices"]["config"][0].update(source="FromPod"),
            "status.allocation.devices.config[0].source",
            '"FromClass", "FromClaim"',
        ),
        (
            lambda s: s["allocation"]["devices"]["results"][1].update(
                shareID="6BA7B810-9DAD-11D1-80B4-00C04FD430C8"
            ),
            "status.allocation.devices.results[1].shareID",
            "lowercase RFC 4122 UUID",
        ),
        (
            lambda s: s["allocation"]["devices"]["results"][0].update(request="gpu/Big"),
            "status.allocation.devices.results[0].request",
            "invalid request reference",
        ),
        (
            lambda s: s["allocation"]["devices"]["results"][0].update(device="GPU-0"),
            "status.allocation.devices.results[0].device",
            "invalid device name",
        ),
        (
            lambda s: s.update(reservedFor=[{"resource": "pods", "name": "p", "uid": "u"}] * 2),
            "status.reservedFor",
            'duplicate consumer uid "u"',
        ),
        (
            lambda s: s.update(
                reservedFor=[{"resource": "pods", "name": "p", "uid": f"u{i}"} for i in range(257)]
            ),
            "status.reservedFor",
            "too many consumers: 257, at most 256",
        ),
        (
            lambda s: s.update(
                devices=[{"driver": "gpu.dra-driver.io", "pool": "node-a", "device": "gpu-9"}]
            ),
            "status.devices[0]",
            "not in the allocation",
        ),
        (
            lambda s: s.update(
                devices=[
                    {
                        "driver": "gpu.dra-driver.io",
                        "pool": "node-a",
                        "device": "gpu-0",
                        "conditions": [{"type": f"T{i}", "status": "True"} for i in range(9)],
                    }
                ]
            ),
            "status.devices[0].conditions",
            "too many conditions: 9, at most 8",
        ),
        (
            lambda s: s.update(
                devices=[
                    {
                        "driver": "gpu.dra-driver.io",
                        "pool": "node-a",
                        "device": "gpu-0",
                        "networkData": {"ips": ["192.0.2.5"]},
                    }
                ]
            ),
            "status.devices[0].networkData.ips[0]",
            "CIDR form",
        ),
        (
            lambda s: s.update(
                devices=[
                    {
                        "driver": "gpu.dra-driver.io",
                        "pool": "node-a",
                        "device": "gpu-0",
                        "data": {"x": "y" * 10240},
                    }
                ]
            ),
            "status.devices[0].data",
            "too large",
        ),
    ],
)
def test_status_rules(mutate: Callable[[dict[str, Any]], object], path: str, fragment: str) -> None:
    assert_rejected(CLAIM, allocated(mutate), path, fragment)


def test_reserved_for_needs_an_allocation() -> None:
    def reserved(d: dict[str, Any]) -> None:
        d["status"] = {"reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}]}

    assert_rejected(CLAIM, reserved, "status.reservedFor", "not allocated")


# --- ResourceClaimTemplate -----------------------------------------------------------------------


def test_template_rules() -> None:
    template: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "one-gpu", "namespace": "team-a"},
        "spec": {
            "metadata": {"labels": {"app": "x"}, "annotations": {"a": "b"}},
            "spec": copy.deepcopy(CLAIM["spec"]),
        },
    }
    assert messages(template) == []
    assert_rejected(
        template,
        lambda d: d["spec"]["metadata"].update(name="fixed"),
        "spec.metadata.name",
        "only labels and annotations",
    )
    assert_rejected(
        template,
        lambda d: d["spec"]["spec"]["devices"]["requests"][0].update(name="Bad"),
        "spec.spec.devices.requests[0].name",
        "RFC 1123 label",
    )


# --- Dispatch and raising ------------------------------------------------------------------------


def test_every_problem_is_reported_not_only_the_first() -> None:
    def many(d: dict[str, Any]) -> None:
        d["spec"]["driver"] = "bad_driver"
        dev(d, 0)["name"] = "Bad"
        dev(d, 1)["attributes"]["x/y/z"] = {"int": 1}

    found = messages(SLICE, many)
    assert [m.split(":")[0] for m in found] == [
        "spec.driver",
        "spec.devices[0].name",
        "spec.devices[1].attributes[x/y/z]",
    ]


def test_ensure_valid_raises_naming_object_and_fields() -> None:
    claim = parse_object(copy.deepcopy(CLAIM))
    ensure_valid(claim)
    broken = copy.deepcopy(CLAIM)
    broken["spec"]["devices"]["requests"][0]["exactly"]["allocationMode"] = "Some"
    with pytest.raises(InvalidInputError) as info:
        ensure_valid(parse_object(broken), source="claims.yaml")
    assert str(info.value).startswith(
        "claims.yaml: claim default/train-0: spec.devices.requests[0].exactly.allocationMode: "
        'unsupported value "Some"'
    )


def test_validate_refuses_foreign_types() -> None:
    slice_ = ResourceSlice(
        spec=ResourceSliceSpec(
            driver="d", pool=ResourcePool(name="p", generation=0, resource_slice_count=1)
        )
    )
    assert validate(slice_)  # no name, no node selection
    with pytest.raises(TypeError):
        validate(ObjectMeta())  # type: ignore[arg-type]


def test_limits_used_match_the_spec() -> None:
    assert limits.MAX_DEVICES_PER_SLICE == 128
    assert limits.MAX_DEVICES_PER_SLICE_WITH_ADVANCED == 64
    assert limits.CEL_SELECTOR_EXPRESSION_MAX_LENGTH == 10240
    assert limits.ALLOCATION_CONFIG_MAX == 64
