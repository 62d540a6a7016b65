"""Decoding, dumping and naming of resource.k8s.io/v1 objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from api.errors import InvalidInputError
from api.quantity import Quantity
from api.resource_v1 import (
    DeviceAttribute,
    DeviceClass,
    DeviceRequestAllocationResult,
    Node,
    ObjectMeta,
    ResourceClaim,
    ResourceClaimTemplate,
    ResourcePool,
    ResourceSlice,
    ResourceSliceSpec,
    UnknownKindError,
    describe,
    dump,
    field_path,
    parse_object,
    parse_quantity,
)
from api.semver import Semver

# A GPU slice in the style of NVIDIA's driver on Kubernetes 1.35+: the devices
# consume counters of a counters-only slice in the same pool.
GPU_SLICE = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata:
  name: node-a-gpu.nvidia.com-7xq2k
  uid: 5f0e8c0a-1c1d-4d4b-9d7e-3f2f0b8b9a01
  resourceVersion: "81234"
  creationTimestamp: "2025-06-01T10:00:00Z"
  generateName: node-a-gpu.nvidia.com-
  ownerReferences:
  - apiVersion: v1
    kind: Node
    name: node-a
    uid: 0b6b1a8e-7f5e-4e4a-8a7b-2c1d3e4f5a6b
    controller: true
spec:
  driver: gpu.nvidia.com
  nodeName: node-a
  pool:
    name: node-a
    generation: 3
    resourceSliceCount: 2
  devices:
  - name: gpu-0
    attributes:
      architecture: {string: Hopper}
      brand: {string: Nvidia}
      cudaComputeCapability: {version: 9.0.0}
      cudaDriverVersion: {version: 12.4.0}
      driverVersion: {version: 550.54.15}
      index: {int: 0}
      minor: {int: 0}
      productName: {string: NVIDIA H100 80GB HBM3}
      type: {string: gpu}
      uuid: {string: GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c}
      resource.kubernetes.io/pciBusID: {string: "0000:3b:00.0"}
      resource.kubernetes.io/pcieRoot: {string: pci0000:3a}
      addressingMode: {string: HMM}
      mig: {bool: false}
    capacity:
      memory: {value: 80Gi}
      multiprocessors: {value: "132"}
    consumesCounters:
    - counterSet: gpu-0-counter-set
      counters:
        memory: {value: 80Gi}
        multiprocessors: {value: "132"}
        memory-slice-0: {value: "1"}
  - name: gpu-0-mig-1g10gb-0
    attributes:
      type: {string: mig}
      profile: {string: 1g.10gb}
      parentIndex: {int: 0}
    capacity:
      memory: {value: 10Gi}
    consumesCounters:
    - counterSet: gpu-0-counter-set
      counters:
        memory: {value: 10Gi}
        memory-slice-0: {value: "1"}
    taints:
    - key: gpu.nvidia.com/unhealthy
      value: xid-79
      effect: NoSchedule
      timeAdded: "2025-06-01T10:05:00Z"
"""

COUNTER_SLICE = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata:
  name: node-a-gpu.nvidia.com-counters
spec:
  driver: gpu.nvidia.com
  nodeName: node-a
  pool: {name: node-a, generation: 3, resourceSliceCount: 2}
  sharedCounters:
  - name: gpu-0-counter-set
    counters:
      memory: {value: 80Gi}
      multiprocessors: {value: "132"}
      memory-slice-0: {value: "1"}
"""

SHARED_SLICE = """
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: shared-gpu}
spec:
  driver: gpu.example.com
  allNodes: true
  pool: {name: cluster/shared, generation: 0, resourceSliceCount: 1}
  devices:
  - name: gpu-0
    allowMultipleAllocations: true
    bindsToNode: true
    bindingConditions: [example.com/attached]
    bindingFailureConditions: [example.com/attach-failed]
    capacity:
      memory:
        value: 80Gi
        requestPolicy:
          default: 10Gi
          validRange: {min: 10Gi, step: 10Gi}
      compute:
        value: "100"
        requestPolicy:
          default: "10"
          validValues: ["10", "50", "100"]
"""

CLASS = """
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.nvidia.com}
spec:
  extendedResourceName: nvidia.com/gpu
  selectors:
  - cel:
      expression: >-
        device.driver == 'gpu.nvidia.com' &&
        device.attributes['gpu.nvidia.com'].type == 'gpu'
  config:
  - opaque:
      driver: gpu.nvidia.com
      parameters:
        apiVersion: resource.nvidia.com/v1beta1
        kind: GpuConfig
        sharing: {strategy: TimeSlicing, timeSlicingConfig: {interval: Long}}
"""

CLAIM = """
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata:
  name: train-0
  namespace: default
  annotations: {resource.kubernetes.io/pod-claim-name: gpus}
spec:
  devices:
    requests:
    - name: gpu
      firstAvailable:
      - name: big
        deviceClassName: gpu.nvidia.com
        count: 2
        selectors:
        - cel:
            expression: device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0
      - name: small
        deviceClassName: mig.nvidia.com
        allocationMode: ExactCount
        count: 1
        tolerations:
        - {key: gpu.nvidia.com/unhealthy, operator: Exists, effect: NoSchedule}
    - name: nic
      exactly:
        deviceClassName: nic.example.com
        allocationMode: All
        adminAccess: true
        capacity:
          requests: {bandwidth: 10G}
    constraints:
    - requests: [gpu, nic]
      matchAttribute: resource.kubernetes.io/pcieRoot
    config:
    - requests: [gpu/small]
      opaque:
        driver: gpu.nvidia.com
        parameters: {apiVersion: resource.nvidia.com/v1beta1, kind: MigDeviceConfig}
status:
  allocation:
    allocationTimestamp: "2025-06-01T11:00:00Z"
    devices:
      results:
      - request: gpu/small
        driver: gpu.nvidia.com
        pool: node-a
        device: gpu-0-mig-1g10gb-0
        tolerations:
        - {key: gpu.nvidia.com/unhealthy, operator: Exists, effect: NoSchedule}
      - request: nic
        driver: gpu.example.com
        pool: cluster/shared
        device: gpu-0
        adminAccess: true
        shareID: 6ba7b810-9dad-11d1-80b4-00c04fd430c8
        consumedCapacity: {memory: 10Gi, compute: "10"}
        bindingConditions: [example.com/attached]
        bindingFailureConditions: [example.com/attach-failed]
      config:
      - source: FromClass
        requests: [gpu/small]
        opaque:
          driver: gpu.nvidia.com
          parameters: {apiVersion: resource.nvidia.com/v1beta1, kind: GpuConfig}
      - source: FromClaim
        requests: [gpu/small]
        opaque:
          driver: gpu.nvidia.com
          parameters: {apiVersion: resource.nvidia.com/v1beta1, kind: MigDeviceConfig}
    nodeSelector:
      nodeSelectorTerms:
      - matchFields:
        - {key: metadata.name, operator: In, values: [node-a]}
  reservedFor:
  - {resource: pods, name: train-0, uid: 9e1c2b3a-0000-4000-8000-000000000001}
  devices:
  - driver: gpu.nvidia.com
    pool: node-a
    device: gpu-0-mig-1g10gb-0
    conditions:
    - type: Ready
      status: "True"
      reason: Prepared
      message: ""
      lastTransitionTime: "2025-06-01T11:00:05Z"
    data: {migUUID: MIG-1234}
    networkData: {interfaceName: eth1, ips: [192.0.2.5/24], hardwareAddress: "00:11:22:33:44:55"}
"""

TEMPLATE = """
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: one-gpu, namespace: team-a}
spec:
  metadata:
    labels: {app: trainer}
  spec:
    devices:
      requests:
      - name: gpu
        exactly: {deviceClassName: gpu.nvidia.com}
"""

NODE = """
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {kubernetes.io/hostname: node-a, nvidia.com/gpu.present: "true"}
spec:
  podCIDR: 10.244.1.0/24
  taints:
  - {key: node-role.kubernetes.io/control-plane, effect: NoSchedule}
status:
  capacity: {cpu: "16", memory: 131072Mi}
  allocatable: {cpu: "15500m", memory: 129024Mi}
  nodeInfo: {kubeletVersion: v1.36.3}
"""

ALL_DOCS = [GPU_SLICE, COUNTER_SLICE, SHARED_SLICE, CLASS, CLAIM, TEMPLATE, NODE]


def load(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def slice_data() -> dict[str, Any]:
    return load(GPU_SLICE)


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


def test_dump_does_not_invent_metadata() -> None:
    cls = DeviceClass.model_validate({"spec": {}})
    assert dump(cls) == {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "spec": {}}
    cls.metadata.name = "filled-in-later"
    assert dump(cls)["metadata"] == {"name": "filled-in-later"}


def test_defaults_of_top_level_objects() -> None:
    node = Node()
    assert (node.api_version, node.kind) == ("v1", "Node")
    claim = ResourceClaim.model_validate({"spec": {}})
    assert (claim.api_version, claim.kind) == ("resource.k8s.io/v1", "ResourceClaim")


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
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, "'Pod'"),
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


def test_parse_quantity_cache_keeps_bool_apart_from_int() -> None:
    assert parse_quantity(1) == Quantity.parse(1)
    with pytest.raises(ValueError):
        parse_quantity(True)


def test_decoded_objects_do_not_share_state_with_input() -> None:
    data = slice_data()
    original = copy.deepcopy(data)
    slice_ = parse_object(data)
    assert isinstance(slice_, ResourceSlice) and slice_.spec.devices is not None
    slice_.spec.devices[0].name = "changed"
    assert data == original
