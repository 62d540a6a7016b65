"""Cluster-level pools as ResourceSlices, and the driver's DeviceClasses."""

from __future__ import annotations

from typing import Any

import pytest

from api.errors import InvalidInputError, UnsatisfiableError
from api.resource_v1 import DeviceClass, Node, ResourceClaim, ResourceSlice
from controller.pools import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PoolPublisher,
    build_device_classes,
    load_config,
    parse_config,
    plan_pool_slices,
    sync_device_classes,
)
from dra_driver.allocator import Snapshot, allocate
from tests.fakes.cluster import FakeCluster

DRIVER = "gpu.dra-driver.io"

CONFIG = """
deviceClasses:
  products: [NVIDIA A100-SXM4-80GB]
pools:
- name: shared-a100
  nodeSelector:
    nodeSelectorTerms:
    - matchExpressions: [{key: pool, operator: In, values: [a100]}]
  devices:
  - name: gpu-0
    attributes:
      type: {string: gpu}
      productName: {string: NVIDIA A100-SXM4-80GB}
    capacity: {memory: {value: 80Gi}}
- name: everywhere
  allNodes: true
  devices: [{name: fpga-0, attributes: {type: {string: fpga}}}]
"""


def _devices(count: int) -> str:
    return "\n".join(f"  - name: d-{i}" for i in range(count))


def test_a_pool_becomes_slices_of_at_most_128_devices() -> None:
    config = parse_config(
        f"pools:\n- name: big\n  allNodes: true\n  devices:\n{_devices(300)}\n", source="t"
    )
    slices = plan_pool_slices(DRIVER, config.pools[0])
    assert [len(s.spec.devices or []) for s in slices] == [128, 128, 44]
    assert {s.spec.pool.resource_slice_count for s in slices} == {3}
    assert [s.metadata.name for s in slices] == [f"big-gpu-dra-driver-io-{i:05d}" for i in range(3)]
    assert all(s.spec.all_nodes for s in slices)


def test_pool_configuration_errors_name_the_pool() -> None:
    config = parse_config("pools:\n- name: p\n  devices: [{name: x}]\n", source="t")
    with pytest.raises(InvalidInputError, match="pool p: set exactly one of nodeSelector"):
        plan_pool_slices(DRIVER, config.pools[0])
    with pytest.raises(InvalidInputError, match=r"t: .*pools"):
        parse_config("pools: 3", source="t")
    with pytest.raises(InvalidInputError, match="appear twice"):
        parse_config("pools: [{name: a, allNodes: true}, {name: a, allNodes: true}]", source="t")
    bad = parse_config(
        "pools:\n- name: p\n  allNodes: true\n  devices: [{name: Bad_Name}]\n", source="t"
    )
    with pytest.raises(InvalidInputError, match="devices"):
        plan_pool_slices(DRIVER, bad.pools[0])


def _ours(cluster: FakeCluster) -> list[dict[str, Any]]:
    return [s for s in cluster.objects("resourceslices") if s["spec"]["driver"] == DRIVER]


def test_sync_publishes_once_bumps_the_generation_on_change_and_removes_dropped_pools() -> None:
    cluster = FakeCluster()
    publisher = PoolPublisher(cluster, driver_name=DRIVER)
    config = parse_config(CONFIG, source="t")
    assert publisher.sync(config.pools).created
    assert not publisher.sync(config.pools).changed  # nothing to do
    assert {s["spec"]["pool"]["generation"] for s in _ours(cluster)} == {0}
    changed = parse_config(CONFIG.replace("80Gi", "40Gi"), source="t")
    result = publisher.sync(changed.pools)
    assert result.updated == ["shared-a100-gpu-dra-driver-io-00000"]
    by_pool = {s["spec"]["pool"]["name"]: s for s in _ours(cluster)}
    assert by_pool["shared-a100"]["spec"]["pool"]["generation"] == 1
    assert by_pool["everywhere"]["spec"]["pool"]["generation"] == 0
    result = publisher.sync(changed.pools[:1])
    assert result.deleted == ["everywhere-gpu-dra-driver-io-00000"]
    # A node's own slices (the kubelet plugin's) are never touched.
    cluster.create(
        "resourceslices",
        {
            "metadata": {"name": "node-a-slice", "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "spec": {
                "driver": DRIVER,
                "nodeName": "node-a",
                "pool": {"name": "node-a", "generation": 0, "resourceSliceCount": 1},
            },
        },
    )
    publisher.sync([])
    assert [s["metadata"]["name"] for s in _ours(cluster)] == ["node-a-slice"]


def test_published_pools_are_allocatable_on_the_selected_nodes() -> None:
    cluster = FakeCluster()
    config = parse_config(CONFIG, source="t")
    PoolPublisher(cluster, driver_name=DRIVER).sync(config.pools)
    classes = build_device_classes(DRIVER, config.device_classes)
    nodes = [
        Node.model_validate({"metadata": {"name": "n1", "labels": {"pool": "a100"}}}),
        Node.model_validate({"metadata": {"name": "n2"}}),
    ]
    snapshot = Snapshot.build(
        slices=[ResourceSlice.model_validate(s) for s in _ours(cluster)],
        classes=classes,
        nodes=nodes,
    )
    claim = ResourceClaim.model_validate(
        {
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpu",
                            "exactly": {
                                "deviceClassName": "nvidia-a100-sxm4-80gb.gpu.dra-driver.io"
                            },
                        }
                    ]
                }
            },
        }
    )
    with pytest.raises(UnsatisfiableError):
        allocate(snapshot, [claim], nodes=["n2"])  # the pool does not reach n2
    placed = allocate(snapshot, [claim])
    devices = placed.results[0].devices
    assert devices is not None and devices.results is not None
    assert devices.results[0].pool == "shared-a100"
    selector = placed.results[0].node_selector
    assert selector is not None
    assert selector.node_selector_terms[0].match_expressions[0].values == ["a100"]  # type: ignore[index]


def test_device_classes_are_created_updated_and_never_taken_from_an_admin() -> None:
    cluster = FakeCluster()
    cluster.create(
        "deviceclasses",
        {
            "metadata": {"name": f"mps.{DRIVER}"},
            "spec": {"selectors": [{"cel": {"expression": "true"}}]},
        },
    )
    desired = build_device_classes(DRIVER, parse_config("", source="t").device_classes)
    assert sorted(c.metadata.name or "" for c in desired) == [
        DRIVER,
        f"mig.{DRIVER}",
        f"mps.{DRIVER}",
        f"timeslicing.{DRIVER}",
    ]
    result = sync_device_classes(cluster, desired)
    assert sorted(result.created) == [DRIVER, f"mig.{DRIVER}", f"timeslicing.{DRIVER}"]
    admin = cluster.get("deviceclasses", f"mps.{DRIVER}")
    assert admin["spec"]["selectors"] == [{"cel": {"expression": "true"}}]
    # Someone edits our class: it is put back. A class we no longer want is deleted.
    ours = cluster.get("deviceclasses", f"timeslicing.{DRIVER}")
    ours["spec"]["config"] = []
    cluster.replace("deviceclasses", ours)
    no_sharing = build_device_classes(
        DRIVER, parse_config("deviceClasses: {sharing: false}", source="t").device_classes
    )
    result = sync_device_classes(cluster, no_sharing)
    assert result.deleted == [f"timeslicing.{DRIVER}"]
    assert f"mps.{DRIVER}" in {c["metadata"]["name"] for c in cluster.objects("deviceclasses")}
    assert not sync_device_classes(cluster, no_sharing).changed
    timeslicing = build_device_classes(DRIVER, parse_config("", source="t").device_classes)
    sync_device_classes(cluster, timeslicing)
    stored = DeviceClass.model_validate(cluster.get("deviceclasses", f"timeslicing.{DRIVER}"))
    parameters = stored.spec.config[0].opaque.parameters  # type: ignore[index,union-attr]
    assert parameters["sharing"] == {"strategy": "TimeSlicing"}


def test_the_configuration_comes_from_a_file_or_a_config_map(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    assert [p.name for p in load_config(None, path=str(path), config_map=None).pools] == [
        "shared-a100",
        "everywhere",
    ]
    cluster = FakeCluster()
    cluster.create(
        "configmaps",
        {"metadata": {"name": "cfg", "namespace": "dra-driver"}, "data": {"config.yaml": CONFIG}},
    )
    config = load_config(cluster, path=None, config_map="dra-driver/cfg")
    assert config.device_classes.products == ["NVIDIA A100-SXM4-80GB"]
    assert load_config(cluster, path=None, config_map=None).pools == []


def _names(config: str) -> dict[str, str | None]:
    classes = build_device_classes(DRIVER, parse_config(config, source="t").device_classes)
    return {c.metadata.name or "": c.spec.extended_resource_name for c in classes}


def test_the_whole_gpu_class_answers_to_the_device_plugins_name_by_default() -> None:
    assert _names("") == {
        DRIVER: "nvidia.com/gpu",
        f"timeslicing.{DRIVER}": None,
        f"mps.{DRIVER}": None,
        f"mig.{DRIVER}": None,
    }


def test_extended_resource_names_are_set_per_class_or_turned_off() -> None:
    names = _names(
        "deviceClasses: {extendedResourceNames: "
        "{gpu: '', timeslicing: nvidia.com/gpu.shared, mig: example.com/mig}}"
    )
    assert names[DRIVER] is None
    assert names[f"timeslicing.{DRIVER}"] == "nvidia.com/gpu.shared"
    assert names[f"mig.{DRIVER}"] == "example.com/mig"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "deviceClasses: {extendedResourceNames: {mps: nvidia.com/gpu}}",
            "extended resource name nvidia.com/gpu is given to several classes",
        ),
        ("deviceClasses: {extendedResourceNames: {gpus: x}}", "extendedResourceNames.gpus"),
        (
            "deviceClasses: {extendedResourceNames: {gpu: gpu}}",
            'invalid extended resource name "gpu": must have a domain prefix',
        ),
    ],
)
def test_bad_extended_resource_names_are_refused(config: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        _names(config)
    assert message in str(raised.value)
