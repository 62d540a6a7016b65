"""Decoding, dumping and naming of resource.k8s.io/v1 objects (:mod:`api.resource_v1.codec`):
round trips without loss, dispatch on apiVersion and kind, structural errors that name the
object and the JSON path, :func:`describe` and :func:`field_path`.

What the models hold once decoded (field names, values, quantities, defaults) is in
test_resource_v1_models.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from resource_v1_fixtures import ALL_DOCS, CLAIM, CLASS, GPU_SLICE, NODE, TEMPLATE, load, slice_data

from api.errors import InvalidInputError
from api.resource_v1 import (
    DeviceClass,
    Node,
    ResourceClaim,
    ResourceClaimTemplate,
    ResourceSlice,
    UnknownKindError,
    describe,
    dump,
    field_path,
    parse_object,
)


@pytest.mark.parametrize("text", ALL_DOCS)
def test_upstream_objects_round_trip_without_loss(text: str) -> None:
    data = load(text)
    assert dump(parse_object(data)) == data


@pytest.mark.parametrize(
    ("text", "model"),
    [
        (GPU_SLICE, ResourceSlice),
        (CLASS, DeviceClass),
        (CLAIM, ResourceClaim),
        (TEMPLATE, ResourceClaimTemplate),
        (NODE, Node),
    ],
)
def test_parse_object_dispatches_on_api_version_and_kind(text: str, model: type) -> None:
    assert type(parse_object(load(text))) is model


def test_unknown_fields_are_kept_at_every_level() -> None:
    data = slice_data()
    data["spec"]["partitionTypeAttribute"] = "gpu.nvidia.com/profile"
    data["spec"]["devices"][0]["nodeAllocatableResources"] = {"cpu": {"overhead": {"perPod": "1"}}}
    data["metadata"]["managedFields"] = [{"manager": "kubelet", "operation": "Update"}]
    data["status"] = {"future": True}
    assert dump(parse_object(data)) == data


def test_yaml_timestamps_are_written_back_as_rfc3339_text() -> None:
    # PyYAML reads unquoted timestamps as datetimes; the API only has strings.
    data = load(
        """
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata:
  name: gpu
  creationTimestamp: 2025-06-01T10:00:00Z
spec: {}
"""
    )
    assert not isinstance(data["metadata"]["creationTimestamp"], str)
    dumped = dump(parse_object(data))
    assert dumped["metadata"]["creationTimestamp"] == "2025-06-01T10:00:00Z"


def test_dump_does_not_invent_metadata() -> None:
    cls = DeviceClass.model_validate({"spec": {}})
    assert dump(cls) == {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "spec": {}}
    cls.metadata.name = "filled-in-later"
    assert dump(cls)["metadata"] == {"name": "filled-in-later"}


def test_decoded_objects_do_not_share_state_with_input() -> None:
    data = slice_data()
    original = copy.deepcopy(data)
    slice_ = parse_object(data)
    assert isinstance(slice_, ResourceSlice) and slice_.spec.devices is not None
    slice_.spec.devices[0].name = "changed"
    assert data == original


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [
        (
            lambda d: d["spec"]["devices"][1]["attributes"].update({"parentIndex": {"int": "0"}}),
            "spec.devices[1].attributes.parentIndex.int",
            "must be an integer, not string",
        ),
        (
            lambda d: d["spec"]["devices"][0]["attributes"].update({"mig": {"bool": 1}}),
            "spec.devices[0].attributes.mig.bool",
            "must be a boolean",
        ),
        (
            lambda d: d["spec"]["devices"][0]["attributes"].update(
                {"resource.kubernetes.io/pciBusID": {"string": 59}}
            ),
            "spec.devices[0].attributes[resource.kubernetes.io/pciBusID].string",
            "must be a string, not number",
        ),
        (
            lambda d: d["spec"]["devices"][0]["attributes"].update(
                {"driverVersion": {"version": "v550.54.15"}}
            ),
            "spec.devices[0].attributes.driverVersion.version",
            "not a semantic version",
        ),
        (
            lambda d: d["spec"]["devices"][0]["capacity"]["memory"].update({"value": "80GB"}),
            "spec.devices[0].capacity.memory.value",
            "unknown suffix",
        ),
        (
            lambda d: d["spec"]["devices"][0]["capacity"]["memory"].update({"value": ["80Gi"]}),
            "spec.devices[0].capacity.memory.value",
            "must be a quantity",
        ),
        (
            lambda d: d["spec"]["pool"].pop("generation"),
            "spec.pool.generation",
            "required field is missing",
        ),
        (
            lambda d: d["spec"].update({"devices": {"name": "gpu-0"}}),
            "spec.devices",
            "must be a list, not object",
        ),
        (lambda d: d.pop("spec"), "spec", "required field is missing"),
    ],
)
def test_structural_errors_name_the_object_and_json_path(
    mutate: Any, path: str, message: str
) -> None:
    data = slice_data()
    mutate(data)
    with pytest.raises(InvalidInputError) as info:
        parse_object(data, source="slices.yaml")
    err = info.value
    assert err.obj == "slice node-a-gpu.nvidia.com-7xq2k"
    assert err.source == "slices.yaml"
    assert [e.path for e in err.errors] == [path]
    assert message in err.errors[0].message
    assert str(err).startswith("slices.yaml: slice node-a-gpu.nvidia.com-7xq2k: " + path)


def test_all_structural_errors_are_reported_together() -> None:
    data = slice_data()
    data["spec"]["pool"]["generation"] = "3"
    data["spec"]["devices"][1]["name"] = 5
    with pytest.raises(InvalidInputError) as info:
        parse_object(data)
    assert {e.path for e in info.value.errors} == {"spec.pool.generation", "spec.devices[1].name"}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, "'ConfigMap'"),
        ({"apiVersion": "resource.k8s.io/v1beta1", "kind": "ResourceClaim"}, "v1beta1"),
        ({"apiVersion": "resource.k8s.io/v1", "kind": "Node"}, "'Node'"),
        ({"kind": "DeviceClass"}, "None"),
        ({"apiVersion": "resource.k8s.io/v1", "kind": ["DeviceClass"]}, "['DeviceClass']"),
    ],
)
def test_unknown_kinds_are_rejected_by_name(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UnknownKindError) as info:
        parse_object(data)
    assert fragment in str(info.value)
    assert isinstance(info.value, InvalidInputError)


def test_a_document_that_is_not_an_object_is_invalid() -> None:
    with pytest.raises(InvalidInputError, match="must be an object, not list"):
        parse_object([1, 2], source="x.yaml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GPU_SLICE, "slice node-a-gpu.nvidia.com-7xq2k"),
        (CLASS, "class gpu.nvidia.com"),
        (CLAIM, "claim default/train-0"),
        (TEMPLATE, "claim template team-a/one-gpu"),
        (NODE, "node node-a"),
    ],
)
def test_describe_parsed_and_raw(text: str, expected: str) -> None:
    data = load(text)
    obj = parse_object(data)
    assert describe(obj) == expected
    assert describe(data) == expected


def test_describe_copes_with_missing_names() -> None:
    assert describe({"kind": "ResourceClaim"}) == "claim <unnamed>"
    assert describe({"metadata": "junk"}) == "object <unnamed>"
    assert describe({"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}) == "pod ns/p"


def test_field_path_format() -> None:
    assert field_path(("spec", "devices", 3, "attributes", "index", "int")) == (
        "spec.devices[3].attributes.index.int"
    )
    assert field_path(("attributes", "resource.kubernetes.io/pciBusID")) == (
        "attributes[resource.kubernetes.io/pciBusID]"
    )
    assert field_path(()) == ""
