"""The resource.k8s.io/v1 models once decoded (:mod:`api.resource_v1`, one module per kind):
snake_case names, attribute values of each kind, unset versus empty, quantities in the API
server's canonical form, and objects built in Python.
"""

from __future__ import annotations

import pytest
from resource_v1_fixtures import CLAIM, COUNTER_SLICE, load, slice_data

from api.errors import InvalidInputError
from api.quantity import Quantity
from api.resource_v1 import (
    DeviceAttribute,
    DeviceRequestAllocationResult,
    Node,
    ObjectMeta,
    ResourceClaim,
    ResourcePool,
    ResourceSlice,
    ResourceSliceSpec,
    dump,
    parse_object,
    parse_quantity,
)
from api.semver import Semver


def test_fields_are_reachable_by_snake_case_names() -> None:
    claim = parse_object(load(CLAIM))
    assert isinstance(claim, ResourceClaim)
    devices = claim.spec.devices
    assert devices is not None and devices.requests is not None
    gpu, nic = devices.requests
    assert gpu.first_available is not None
    assert [s.name for s in gpu.first_available] == ["big", "small"]
    assert gpu.first_available[1].device_class_name == "mig.nvidia.com"
    assert nic.exactly is not None and nic.exactly.admin_access is True
    assert nic.exactly.capacity is not None and nic.exactly.capacity.requests is not None
    assert nic.exactly.capacity.requests["bandwidth"] == Quantity.parse("10G")
    assert devices.constraints is not None
    assert devices.constraints[0].match_attribute == "resource.kubernetes.io/pcieRoot"
    assert claim.status is not None and claim.status.allocation is not None
    results = claim.status.allocation.devices
    assert results is not None and results.results is not None
    shared = results.results[1]
    assert shared.share_id == "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    assert shared.consumed_capacity == {
        "memory": Quantity.parse("10Gi"),
        "compute": Quantity.parse("10"),
    }
    assert claim.status.reserved_for is not None
    assert claim.status.reserved_for[0].uid.endswith("0001")


def test_slice_fields_and_attribute_values() -> None:
    slice_ = parse_object(slice_data())
    assert isinstance(slice_, ResourceSlice)
    spec = slice_.spec
    assert (spec.pool.name, spec.pool.generation, spec.pool.resource_slice_count) == (
        "node-a",
        3,
        2,
    )
    assert spec.devices is not None
    gpu = spec.devices[0]
    assert gpu.attributes is not None and gpu.capacity is not None
    assert gpu.attributes["index"].value == 0
    assert gpu.attributes["mig"].value is False
    assert gpu.attributes["productName"].value == "NVIDIA H100 80GB HBM3"
    assert gpu.attributes["driverVersion"].value == Semver(550, 54, 15)
    assert gpu.attributes["resource.kubernetes.io/pciBusID"].value == "0000:3b:00.0"
    assert gpu.capacity["memory"].value == Quantity.parse("80Gi")
    assert gpu.consumes_counters is not None
    assert gpu.consumes_counters[0].counter_set == "gpu-0-counter-set"
    assert gpu.consumes_counters[0].counters["memory-slice-0"].value == Quantity.parse("1")
    mig = spec.devices[1]
    assert mig.taints is not None and mig.taints[0].effect == "NoSchedule"


def test_counter_only_slice_has_no_devices() -> None:
    slice_ = parse_object(load(COUNTER_SLICE))
    assert isinstance(slice_, ResourceSlice)
    assert slice_.spec.devices is None
    assert slice_.spec.shared_counters is not None
    assert slice_.spec.shared_counters[0].counters["memory"].value == Quantity.parse("80Gi")


def test_list_attributes_and_value_of_each_kind() -> None:
    attr = DeviceAttribute.model_validate({"versions": ["1.0.0", "2.1.0-rc.1"]})
    assert attr.value == [Semver(1, 0, 0), Semver(2, 1, 0, ("rc", 1))]
    assert DeviceAttribute.model_validate({"ints": [1, 2]}).value == [1, 2]
    assert DeviceAttribute.model_validate({"bools": [True]}).value == [True]
    assert DeviceAttribute.model_validate({"strings": ["a"]}).value == ["a"]
    assert DeviceAttribute.model_validate({"int": 7}).set_fields() == ["int"]


def test_attribute_without_value_raises_on_value() -> None:
    with pytest.raises(ValueError, match="no value"):
        _ = DeviceAttribute().value


def test_unset_and_empty_stay_distinct() -> None:
    data = slice_data()
    data["spec"]["devices"][0]["taints"] = []
    slice_ = parse_object(data)
    assert isinstance(slice_, ResourceSlice) and slice_.spec.devices is not None
    assert slice_.spec.devices[0].taints == []
    assert slice_.spec.devices[1].binding_conditions is None
    assert dump(slice_)["spec"]["devices"][0]["taints"] == []


def test_quantities_are_written_in_canonical_form() -> None:
    data = slice_data()
    data["spec"]["devices"][0]["capacity"]["memory"]["value"] = "81920Mi"
    data["spec"]["devices"][0]["capacity"]["multiprocessors"]["value"] = 132
    dumped = dump(parse_object(data))
    capacity = dumped["spec"]["devices"][0]["capacity"]
    assert capacity["memory"]["value"] == "80Gi"
    assert capacity["multiprocessors"]["value"] == "132"


def test_bare_numbers_are_quantities_as_for_the_api_server() -> None:
    data = slice_data()
    data["spec"]["devices"][0]["capacity"]["memory"]["value"] = 1.5
    slice_ = parse_object(data)
    assert isinstance(slice_, ResourceSlice) and slice_.spec.devices is not None
    assert slice_.spec.devices[0].capacity is not None
    assert slice_.spec.devices[0].capacity["memory"].value == Quantity.parse("1500m")
    node = parse_object(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n"},
            "status": {"capacity": {"cpu": 16}},
        }
    )
    assert isinstance(node, Node) and node.status is not None
    assert node.status.capacity == {"cpu": "16"}
    for bad in (float("nan"), True):
        data["spec"]["devices"][0]["capacity"]["memory"]["value"] = bad
        with pytest.raises(InvalidInputError, match="must be a quantity"):
            parse_object(data)


def test_parse_quantity_cache_keeps_bool_apart_from_int() -> None:
    assert parse_quantity(1) == Quantity.parse(1)
    with pytest.raises(ValueError):
        parse_quantity(True)


def test_built_in_python_with_snake_case_names_dumps_camel_case() -> None:
    slice_ = ResourceSlice(
        metadata=ObjectMeta(name="s"),
        spec=ResourceSliceSpec(
            driver="gpu.dra-driver.io",
            pool=ResourcePool(name="n1", generation=0, resource_slice_count=1),
            node_name="n1",
        ),
    )
    assert dump(slice_) == {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": "s"},
        "spec": {
            "driver": "gpu.dra-driver.io",
            "pool": {"name": "n1", "generation": 0, "resourceSliceCount": 1},
            "nodeName": "n1",
        },
    }
    result = DeviceRequestAllocationResult(
        request="r",
        driver="d",
        pool="p",
        device="x",
        share_id="6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        consumed_capacity={"memory": parse_quantity("1Gi")},
    )
    assert dump(result) == {
        "request": "r",
        "driver": "d",
        "pool": "p",
        "device": "x",
        "shareID": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "consumedCapacity": {"memory": "1Gi"},
    }


def test_defaults_of_top_level_objects() -> None:
    node = Node()
    assert (node.api_version, node.kind) == ("v1", "Node")
    claim = ResourceClaim.model_validate({"spec": {}})
    assert (claim.api_version, claim.kind) == ("resource.k8s.io/v1", "ResourceClaim")
