"""Inventory to ResourceSlices: attributes, partitionable MIG, order, limits, names, validity."""

from __future__ import annotations

import dataclasses
import io
import itertools
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
import yaml

from api import limits
from api.errors import InvalidInputError
from api.quantity import Quantity
from api.resource_v1 import (
    Device,
    DeviceTaint,
    OwnerReference,
    ResourceSlice,
    dump,
    parse_object,
)
from api.validation import validate
from dra_cli.main import main
from dra_driver.discovery.mock import MockBackend
from dra_driver.discovery.model import NodeInventory
from dra_driver.slices import DEVICE_ORDERS, DeviceOrder, build_slices, slice_name

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "inventory"


def _inventory(profile: str, node: str = "node-a") -> NodeInventory:
    return MockBackend(node, profile).discover()


def _devices(slices: Iterable[ResourceSlice]) -> list[Device]:
    return [d for s in slices for d in s.spec.devices or []]


def _check_pool(slices: Sequence[ResourceSlice]) -> None:
    """What the API server (per slice) and the allocator (per pool) require."""
    assert slices
    for slice_ in slices:
        assert validate(slice_) == [], slice_.metadata.name
        assert parse_object(dump(slice_)) == slice_  # round trip
        pool = slice_.spec.pool
        assert (pool.name, pool.generation, pool.resource_slice_count) == (
            slices[0].spec.pool.name,
            slices[0].spec.pool.generation,
            len(slices),
        )
        assert slice_.spec.node_name == pool.name
    names = [s.metadata.name or "" for s in slices]
    assert names == sorted(names)  # the scheduler visits a pool's slices in name order
    assert len(set(names)) == len(names)
    devices = _devices(slices)
    assert len({d.name for d in devices}) == len(devices), "device names unique in the pool"
    sets = {c.name: c for s in slices for c in s.spec.shared_counters or []}
    assert len(sets) == sum(len(s.spec.shared_counters or []) for s in slices)
    for device in devices:
        for consumption in device.consumes_counters or []:
            counter_set = sets[consumption.counter_set]
            for counter, amount in consumption.counters.items():
                assert counter in counter_set.counters, (device.name, counter)
                assert amount.value <= counter_set.counters[counter].value


@pytest.mark.parametrize(
    "profile",
    [
        "8xH100-80GB",
        "4xA100-40GB,4xL4",
        "2xA100-80GB",
        "2xA100-40GB:mig=3g.20gb/2x2g.10gb,1xH100-80GB:mig=7x1g.10gb,1xT4",
        "1xL40S",
    ],
)
@pytest.mark.parametrize("order", DEVICE_ORDERS)
def test_every_pool_is_valid_and_round_trips(profile: str, order: DeviceOrder) -> None:
    _check_pool(build_slices(_inventory(profile), device_order=order))


def test_plain_gpus_match_the_shipped_example_slice() -> None:
    example = yaml.safe_load((EXAMPLES / "slice-gpu-node-h100.yaml").read_text())
    (slice_,) = build_slices(_inventory("8xH100-80GB", "gpu-node-h100"), partitionable=False)
    assert dump(slice_)["spec"]["devices"] == example["spec"]["devices"]
    assert slice_.spec.driver == example["spec"]["driver"]


def test_full_gpu_attributes_and_capacity() -> None:
    slices = build_slices(_inventory("1xL4"), driver_name="gpu.example.com")
    (device,) = _devices(slices)
    attributes = {k: v.value for k, v in (device.attributes or {}).items()}
    assert {k: str(v) for k, v in attributes.items()} == {
        "type": "gpu",
        "uuid": _inventory("1xL4").gpus[0].uuid,
        "index": "0",
        "minor": "0",
        "productName": "NVIDIA L4",
        "brand": "Nvidia",
        "architecture": "Ada Lovelace",
        "cudaComputeCapability": "8.9.0",
        "driverVersion": "550.54.15",
        "cudaDriverVersion": "12.4.0",
        "resource.kubernetes.io/pciBusID": "0000:18:00.0",
        "resource.kubernetes.io/pcieRoot": "pci0000:00",
        "resource.kubernetes.io/numaNode": "0",
    }
    assert device.attributes is not None
    assert device.attributes["cudaComputeCapability"].version == "8.9.0"
    assert device.attributes["index"].int_ == 0
    assert device.capacity is not None
    assert str(device.capacity["memory"].value) == "23034Mi"
    assert slices[0].spec.driver == "gpu.example.com"


def test_unknown_memory_publishes_no_memory_capacity() -> None:
    inventory = _inventory("1xL4")
    inventory = dataclasses.replace(
        inventory, gpus=(dataclasses.replace(inventory.gpus[0], memory_bytes=None),)
    )
    (device,) = _devices(build_slices(inventory))
    assert device.capacity is None


# --- Partitionable MIG ----------------------------------------------------------------------


def _consumption(device: Device) -> Tally[str]:
    (consumption,) = device.consumes_counters or []
    return Tally({name: int(c.value.value) for name, c in consumption.counters.items()})


def _fits(slices: Sequence[ResourceSlice], names: Iterable[str]) -> bool:
    """Whether these devices can be allocated together as far as counters go."""
    by_name = {d.name: d for d in _devices(slices)}
    ((set_name, counter_set),) = {
        c.name: c for s in slices for c in s.spec.shared_counters or []
    }.items()
    total: Tally[str] = Tally()
    for name in names:
        assert by_name[name].consumes_counters is not None
        assert (by_name[name].consumes_counters or [])[0].counter_set == set_name
        total.update(_consumption(by_name[name]))
    return all(total[k] <= int(c.value.value) for k, c in counter_set.counters.items())


def test_mig_capable_gpu_is_one_counter_set_and_device_per_placement() -> None:
    slices = build_slices(_inventory("1xH100-80GB"))
    assert [bool(s.spec.shared_counters) for s in slices] == [True, False]
    assert slices[0].spec.devices is None
    ((counter_set),) = slices[0].spec.shared_counters or []
    assert counter_set.name == "gpu-0-counter-set"
    counters = {k: str(v.value) for k, v in counter_set.counters.items()}
    assert counters == {
        "multiprocessors": "132",
        "copy-engines": "8",
        "decoders": "7",
        "jpeg-engines": "7",
        "ofa-engines": "1",
        "memory": "80Gi",
        **{f"memory-slice-{i}": "1" for i in range(8)},
    }
    devices = _devices(slices)
    # 1 full GPU + 7 + 7 + 4 + 3 + 2 + 1 + 1 placements.
    assert len(devices) == 26
    full = devices[0]
    assert full.name == "gpu-0"
    assert _consumption(full) == Tally(
        {k: int(Quantity.parse(v).value) for k, v in counters.items()}
    )
    mig = next(d for d in devices if d.name == "gpu-0-mig-3g40gb-9-4")
    assert mig.attributes is not None and mig.capacity is not None
    assert mig.attributes["type"].string == "mig"
    assert mig.attributes["profile"].string == "3g.40gb"
    assert mig.attributes["parentUUID"].string == _inventory("1xH100-80GB").gpus[0].uuid
    assert mig.attributes["parentIndex"].int_ == 0
    assert "uuid" not in mig.attributes  # an abstract placement has no MIG UUID yet
    assert {k: str(v.value) for k, v in mig.capacity.items()} == {
        "multiprocessors": "60",
        "copyEngines": "3",
        "decoders": "3",
        "encoders": "0",
        "jpegEngines": "3",
        "ofaEngines": "0",
        "memory": "40448Mi",
    }
    assert _consumption(mig) == Tally(
        {
            "multiprocessors": 60,
            "copy-engines": 3,
            "decoders": 3,
            "jpeg-engines": 3,
            "memory": 40448 << 20,
            **{f"memory-slice-{i}": 1 for i in range(4, 8)},
        }
    )


@pytest.mark.parametrize("model", ["A100-40GB", "A100-80GB", "H100-80GB"])
def test_counters_exclude_overlaps_and_admit_every_real_layout(model: str) -> None:
    slices = build_slices(_inventory(f"1x{model}"))
    devices = _devices(slices)
    migs = [d for d in devices if d.name != "gpu-0"]
    # The full GPU excludes every MIG device, and each MIG device alone fits.
    for mig in migs:
        assert _fits(slices, [mig.name])
        assert not _fits(slices, ["gpu-0", mig.name])
    # Two placements fit together exactly when their memory slices are disjoint
    # (the one +me instance per GPU aside).
    for a, b in itertools.combinations(migs, 2):
        slices_a = {k for k in _consumption(a) if k.startswith("memory-slice")}
        slices_b = {k for k in _consumption(b) if k.startswith("memory-slice")}
        both_me = "me" in a.name.split("-") and "me" in b.name.split("-")
        assert _fits(slices, [a.name, b.name]) == (not slices_a & slices_b and not both_me)


def test_a100_layouts_from_the_mig_user_guide_fit() -> None:
    slices = build_slices(_inventory("1xA100-40GB"))
    for layout in (
        ["gpu-0-mig-4g20gb-5-0", "gpu-0-mig-3g20gb-9-4"],
        ["gpu-0-mig-3g20gb-9-4", "gpu-0-mig-2g10gb-14-0", "gpu-0-mig-2g10gb-14-2"],
        [f"gpu-0-mig-1g5gb-19-{s}" for s in range(7)],
        ["gpu-0-mig-1g5gb-me-20-0"] + [f"gpu-0-mig-1g5gb-19-{s}" for s in range(1, 7)],
        ["gpu-0-mig-1g10gb-15-0", "gpu-0-mig-1g10gb-15-2", "gpu-0-mig-3g20gb-9-4"],
    ):
        assert _fits(slices, layout), layout


def test_partitionable_off_publishes_plain_gpus() -> None:
    slices = build_slices(_inventory("2xH100-80GB"), partitionable=False)
    assert [d.name for d in _devices(slices)] == ["gpu-0", "gpu-1"]
    assert all(d.consumes_counters is None for d in _devices(slices))
    assert all(s.spec.shared_counters is None for s in slices)


def test_static_mig_devices_replace_the_full_gpu() -> None:
    inventory = _inventory("1xA100-40GB:mig=3g.20gb/1g.5gb,1xL4")
    slices = build_slices(inventory)
    assert all(s.spec.shared_counters is None for s in slices)
    devices = {d.name: d for d in _devices(slices)}
    assert sorted(devices) == ["gpu-0-mig-1g5gb-19-4", "gpu-0-mig-3g20gb-9-0", "gpu-1"]
    mig = devices["gpu-0-mig-3g20gb-9-0"]
    assert mig.attributes is not None and mig.capacity is not None
    assert mig.attributes["uuid"].string == inventory.gpus[0].mig_devices[0].uuid
    assert {k for k in mig.capacity if k.startswith("memorySlice")} == {
        f"memorySlice{i}" for i in range(4)
    }
    assert mig.consumes_counters is None


# --- Order --------------------------------------------------------------------------------


def _names(profile: str, order: DeviceOrder, partitionable: bool = False) -> list[str]:
    slices = build_slices(_inventory(profile), device_order=order, partitionable=partitionable)
    return [d.name for d in _devices(slices)]


def test_device_orders() -> None:
    # gpu-0, gpu-1: A100 40GB; gpu-2: L4 (22.5 GiB); gpu-3: H100 80GB.
    profile = "2xA100-40GB,1xL4,1xH100-80GB"
    assert _names(profile, "index") == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    assert _names(profile, "smallest-first") == ["gpu-2", "gpu-0", "gpu-1", "gpu-3"]
    assert _names(profile, "largest-first") == ["gpu-3", "gpu-0", "gpu-1", "gpu-2"]


def test_smallest_first_puts_the_smallest_mig_placements_of_all_gpus_first() -> None:
    names = _names("2xA100-40GB", "smallest-first", partitionable=True)
    # 4864Mi placements first, GPU by GPU, so first fit fills gpu-0 before gpu-1.
    assert names[:28] == (
        [f"gpu-0-mig-1g5gb-19-{s}" for s in range(7)]
        + [f"gpu-0-mig-1g5gb-me-20-{s}" for s in range(7)]
        + [f"gpu-1-mig-1g5gb-19-{s}" for s in range(7)]
        + [f"gpu-1-mig-1g5gb-me-20-{s}" for s in range(7)]
    )
    slices = build_slices(_inventory("2xA100-40GB"), device_order="smallest-first")
    memory = [int(d.capacity["memory"].value.value) for d in _devices(slices) if d.capacity]
    assert memory == sorted(memory)
    assert names[-2:] == ["gpu-0", "gpu-1"]


def test_index_order_keeps_each_gpu_with_its_mig_devices() -> None:
    names = _names("2xA100-40GB", "index", partitionable=True)
    assert names[0] == "gpu-0"
    assert names.index("gpu-1") == 26
    assert all(n.startswith("gpu-0") for n in names[:26])
    # Within a GPU: smaller placements first, the plain profile before its +me twin.
    assert names[1:3] == ["gpu-0-mig-1g5gb-19-0", "gpu-0-mig-1g5gb-19-1"]
    assert names.index("gpu-0-mig-1g5gb-19-6") < names.index("gpu-0-mig-1g5gb-me-20-0")


def test_unknown_device_order_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="unknown device order 'random'"):
        build_slices(_inventory("1xL4"), device_order="random")  # type: ignore[arg-type]


# --- Limits and names ---------------------------------------------------------------------


def _many_plain_gpus(count: int) -> NodeInventory:
    base = _inventory("1xL4")
    template = base.gpus[0]
    gpus = tuple(
        dataclasses.replace(
            template,
            index=i,
            minor=i,
            uuid=f"GPU-{i:08d}-0000-0000-0000-000000000000",
            pci_bus_id=f"{i // 256:04x}:{i % 256:02x}:00.0",
        )
        for i in range(count)
    )
    return dataclasses.replace(base, gpus=gpus)


def test_at_most_128_plain_devices_per_slice() -> None:
    slices = build_slices(_many_plain_gpus(300))
    assert [len(s.spec.devices or []) for s in slices] == [128, 128, 44]
    _check_pool(slices)


def test_at_most_64_devices_in_a_slice_with_taints() -> None:
    taint = DeviceTaint(key="gpu.dra-driver.io/xid", value="79", effect="NoSchedule")
    slices = build_slices(_many_plain_gpus(300), taints={"gpu-200": [taint]})
    sizes = [len(s.spec.devices or []) for s in slices]
    # gpu-128..199 stay a plain slice of 72; the tainted gpu-200 opens a slice of 64.
    assert sizes == [128, 72, 64, 36]
    _check_pool(slices)
    tainted = [d.name for d in _devices(slices) if d.taints]
    assert tainted == ["gpu-200"]


def test_sixteen_partitionable_gpus_need_two_counter_slices() -> None:
    slices = build_slices(_inventory("16xH100-80GB"))
    shape = [(len(s.spec.shared_counters or []), len(s.spec.devices or [])) for s in slices]
    assert shape == [(8, 0), (8, 0)] + [(0, 64)] * 6 + [(0, 32)]
    assert slices[0].spec.pool.resource_slice_count == 9
    _check_pool(slices)


def test_taints_of_a_gpu_apply_to_its_mig_devices() -> None:
    xid = DeviceTaint(key="gpu.dra-driver.io/xid", value="79", effect="NoSchedule")
    lost = DeviceTaint(key="gpu.dra-driver.io/gpu-lost", effect="NoExecute")
    slices = build_slices(
        _inventory("2xA100-40GB"),
        taints={"gpu-1": [xid], "gpu-0-mig-3g20gb-9-4": [lost, lost], "gpu-9": [xid]},
    )
    _check_pool(slices)
    tainted = {d.name: [t.key for t in d.taints or []] for d in _devices(slices) if d.taints}
    assert tainted["gpu-0-mig-3g20gb-9-4"] == ["gpu.dra-driver.io/gpu-lost"]
    assert len(tainted) == 1 + 26
    assert all(v == ["gpu.dra-driver.io/xid"] for k, v in tainted.items() if k.startswith("gpu-1"))


def test_generation_owner_and_deterministic_names() -> None:
    owner = OwnerReference(api_version="v1", kind="Node", name="node-a", uid="u-1", controller=True)
    slices = build_slices(_inventory("1xH100-80GB"), generation=7, owner=owner)
    assert [s.metadata.name for s in slices] == [
        "node-a-gpu.dra-driver.io-00000",
        "node-a-gpu.dra-driver.io-00001",
    ]
    assert {s.spec.pool.generation for s in slices} == {7}
    assert all(s.metadata.owner_references == [owner] for s in slices)
    again = build_slices(_inventory("1xH100-80GB"), generation=7, owner=owner)
    assert [dump(s) for s in again] == [dump(s) for s in slices]


def test_long_node_names_give_valid_distinct_slice_names() -> None:
    node = ".".join(["a" * 60] * 4)[:250]
    names = [slice_name(node, "gpu.dra-driver.io", i) for i in range(3)]
    assert all(len(n) <= limits.DNS1123_SUBDOMAIN_MAX_LENGTH for n in names)
    assert len(set(names)) == 3 and names == sorted(names)
    _check_pool(build_slices(_inventory("1xL4", node)))


def test_a_node_without_gpus_publishes_one_empty_slice() -> None:
    inventory = dataclasses.replace(_inventory("1xL4"), gpus=())
    (slice_,) = build_slices(inventory)
    assert slice_.spec.devices == []
    assert dump(slice_)["spec"]["devices"] == []
    _check_pool([slice_])


def test_invalid_driver_name_is_rejected_before_publishing() -> None:
    with pytest.raises(InvalidInputError, match=r"spec\.driver"):
        build_slices(_inventory("1xL4"), driver_name="GPU_driver!")


# --- With the allocator -------------------------------------------------------------------

_CLASSES_AND_CLAIM = """
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: mig.gpu.dra-driver.io}
spec:
  selectors:
  - cel:
      expression: >-
        device.driver == "gpu.dra-driver.io" &&
        device.attributes["gpu.dra-driver.io"].type == "mig"
---
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.dra-driver.io}
spec:
  selectors:
  - cel:
      expression: >-
        device.driver == "gpu.dra-driver.io" &&
        device.attributes["gpu.dra-driver.io"].type == "gpu"
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: c1, namespace: default}
spec:
  devices:
    requests:
    - name: mig
      exactly:
        deviceClassName: mig.gpu.dra-driver.io
        count: COUNT
        selectors:
        - cel: {expression: 'device.attributes["gpu.dra-driver.io"].profile == "1g.10gb"'}
    - name: full
      exactly:
        deviceClassName: gpu.dra-driver.io
"""


@pytest.mark.parametrize(("count", "allocatable"), [(7, True), (8, False)])
def test_the_allocator_honours_the_counters(count: int, allocatable: bool, tmp_path: Path) -> None:
    """Seven 1g.10gb MIG devices fill one H100; an eighth leaves no GPU whole for the full GPU."""
    slices = build_slices(_inventory("2xH100-80GB"), device_order="smallest-first")
    (tmp_path / "slices.yaml").write_text(yaml.safe_dump_all([dump(s) for s in slices]))
    claim = _CLASSES_AND_CLAIM.replace("COUNT", str(count))
    (tmp_path / "claim.yaml").write_text(claim)
    out = io.StringIO()
    code = main(
        ["allocate", "-f", str(tmp_path / "slices.yaml"), "-f", str(tmp_path / "claim.yaml")],
        stdout=out,
    )
    if not allocatable:
        assert code == 1
        return
    assert code == 0
    (result,) = yaml.safe_load(out.getvalue())["items"]
    devices = [r["device"] for r in result["status"]["allocation"]["devices"]["results"]]
    assert devices == [f"gpu-0-mig-1g10gb-19-{s}" for s in range(7)] + ["gpu-1"]
