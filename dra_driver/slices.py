"""Planning a node's ResourceSlices from its GPU inventory.

:func:`build_slices` turns a :class:`~dra_driver.discovery.model.NodeInventory`
into the complete pool of one node (pool name = node name), ready to publish:

- Full GPUs are devices ``gpu-<minor>`` with attributes under the driver's
  domain (``type: gpu``, ``uuid``, ``index``, ``minor``, ``productName``,
  ``brand``, ``architecture``, ``cudaComputeCapability``, ``driverVersion``,
  ``cudaDriverVersion``), the standard ``resource.kubernetes.io/pciBusID``,
  ``pcieRoot`` and ``numaNode``, and the capacity ``memory``. Where discovery
  knows the NVLink topology also ``nvlinkIsland`` (string: GPUs NVLink joins,
  directly or through NVSwitch, share it; a GPU without NVLink is its own) and
  ``nvlinkPeerCount``, and on NVSwitch fabrics ``fabricClusterUUID`` and
  ``fabricCliqueID``. MIG devices carry their parent GPU's.
- A MIG-capable GPU with MIG mode off is published as a partitionable device
  (KEP 4815, as NVIDIA does): a CounterSet ``gpu-<minor>-counter-set`` holds
  the GPU's SMs, engines, memory and one ``memory-slice-<i>`` counter per
  memory slice; the full GPU consumes all of them, and every possible MIG
  placement is a device ``gpu-<minor>-mig-<profile>-<profileId>-<start>``
  (``type: mig``) consuming its share plus its memory slices
  (:mod:`dra_driver.counters`). So the scheduler never hands out a full GPU and
  an overlapping MIG device together.
- A GPU with MIG mode on publishes its existing (static) MIG devices only,
  with their ``uuid`` and ``memorySlice<i>`` capacities.
- Shared GPUs (``shared_gpus``, consumable capacity, KEP 5075): full GPUs are
  published with ``allowMultipleAllocations: true`` and two consumable
  capacities. ``memory`` (bytes): requests are rounded up to whole GiB (validRange
  min 1Gi, step 1Gi); a request that does not mention it gets the GPU's memory
  rounded down to whole GiB, i.e. the whole GPU, so that a claim written before
  sharing existed never lands beside another one unawares. ``compute`` (percent
  of the SMs, value 100, validRange 1..100 step 1, default 100): likewise, a
  request that does not mention it takes all of it, so claims that mean to
  share a GPU ask for both. Each share is prepared with MPS limits from what it
  consumed (:mod:`dra_driver.preparation`). A partitionable GPU keeps its
  counters: its first share takes them all, so MIG devices and shares of the
  same GPU exclude each other.
- Counter sets go into counters-only slices first (a slice may carry devices
  or counters since 1.35, never both; at most 8 sets per slice), then the
  devices in the admin's order, at most 128 per slice, 64 in a slice holding
  any device with taints or counter consumption.

Device order matters because the scheduler allocates first fit in slice and
device order: ``index`` (GPU index; each GPU's MIG devices after it, smallest
first), ``smallest-first`` (memory ascending across the node, so first fit
packs small requests onto small or already used GPUs), ``largest-first``.

Every slice produced passes :func:`api.validation.validate`; anything that
would not (a bad driver name) raises InvalidInputError naming the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from api import limits
from api.errors import InvalidInputError
from api.quantity import Quantity
from api.resource_v1 import (
    CapacityRequestPolicy,
    CapacityRequestPolicyRange,
    Counter,
    CounterSet,
    Device,
    DeviceAttribute,
    DeviceCapacity,
    DeviceCounterConsumption,
    DeviceTaint,
    ObjectMeta,
    OwnerReference,
    ResourcePool,
    ResourceSlice,
    ResourceSliceSpec,
)
from api.validation import ensure_valid
from dra_driver.counters import (
    MIG_RESOURCES,
    counter_values,
    is_partitionable,
    placement_consumption,
)
from dra_driver.discovery import normalize
from dra_driver.discovery.model import Gpu, MigDevice, MigProfile, NodeInventory

__all__ = [
    "DEFAULT_DRIVER_NAME",
    "DEVICE_ORDERS",
    "SHARED_COMPUTE_CAPACITY",
    "SHARED_MEMORY_CAPACITY",
    "DeviceOrder",
    "build_slices",
    "counter_set_name",
    "device_attributes",
    "slice_name",
]

DEFAULT_DRIVER_NAME: Final = "gpu.dra-driver.io"

DeviceOrder = Literal["index", "smallest-first", "largest-first"]
DEVICE_ORDERS: Final[tuple[str, ...]] = get_args(DeviceOrder)

#: Consumable capacities of a shared GPU (``--shared-gpus``).
SHARED_MEMORY_CAPACITY: Final = "memory"
SHARED_COMPUTE_CAPACITY: Final = "compute"
_GIB: Final = 1 << 30
_COMPUTE_PERCENT: Final = 100

_DEVICE_TYPE_GPU: Final = "gpu"
_DEVICE_TYPE_MIG: Final = "mig"


# --- Values ------------------------------------------------------------------------------


def _string(value: str) -> DeviceAttribute:
    # The API allows 64 characters; NVML product names are shorter, but a
    # truncated name beats a slice the API server rejects.
    return DeviceAttribute(string=value[: limits.DEVICE_ATTRIBUTE_MAX_VALUE_LENGTH])


def _int(value: int) -> DeviceAttribute:
    return DeviceAttribute(int_=value)


def _version(value: object) -> DeviceAttribute:
    return DeviceAttribute(version=str(value))


def _bytes(value: int) -> Quantity:
    """Bytes as the API server would store a binary quantity: ``80Gi``, not ``85899345920``."""
    if value and value % 1024 == 0:
        return Quantity.parse(f"{value // 1024}Ki")
    return Quantity.parse(value)


def _count(value: int) -> Quantity:
    return Quantity.parse(value)


# --- Names -------------------------------------------------------------------------------


def counter_set_name(gpu: Gpu) -> str:
    """``gpu-<minor>-counter-set``: the CounterSet of one partitionable GPU."""
    return f"{gpu.device_name}-counter-set"


def slice_name(node_name: str, driver_name: str, index: int) -> str:
    """The name of the pool's ``index``-th slice: ``<node>-<driver>-<index, 5 digits>``.

    Deterministic, so a restarted plugin updates its slices instead of adding
    new ones, and sorted like the slice list (the scheduler visits a pool's
    slices in name order). Over-long names keep a hash of the full prefix.
    """
    suffix = f"-{index:05d}"
    prefix = f"{node_name}-{driver_name}"
    if len(prefix) + len(suffix) > limits.DNS1123_SUBDOMAIN_MAX_LENGTH:
        digest = hashlib.sha256(prefix.encode()).hexdigest()[:10]
        keep = limits.DNS1123_SUBDOMAIN_MAX_LENGTH - len(suffix) - len(digest) - 1
        prefix = prefix[:keep].rstrip(".-") + "-" + digest
    return prefix + suffix


# --- Devices -----------------------------------------------------------------------------


def _common_attributes(gpu: Gpu, inventory: NodeInventory) -> dict[str, DeviceAttribute]:
    """Attributes a GPU and each of its MIG devices share."""
    attributes = {
        "productName": _string(gpu.product_name),
        "brand": _string(gpu.brand),
        "architecture": _string(gpu.architecture),
        "cudaComputeCapability": _version(gpu.cuda_compute_capability),
        "driverVersion": _version(inventory.driver_version),
        "cudaDriverVersion": _version(inventory.cuda_driver_version),
        limits.ATTRIBUTE_PCI_BUS_ID: _string(gpu.pci_bus_id),
    }
    if gpu.pcie_root is not None:
        attributes[limits.ATTRIBUTE_PCIE_ROOT] = _string(gpu.pcie_root)
    if gpu.numa_node is not None:
        attributes[limits.ATTRIBUTE_NUMA_NODE] = _int(gpu.numa_node)
    if gpu.nvlink_island is not None:
        attributes[limits.ATTRIBUTE_NVLINK_ISLAND] = _string(gpu.nvlink_island)
        attributes["nvlinkPeerCount"] = _int(len(gpu.nvlink_peers))
    if gpu.fabric_cluster_uuid is not None:
        attributes["fabricClusterUUID"] = _string(gpu.fabric_cluster_uuid)
    if gpu.fabric_clique_id is not None:
        attributes["fabricCliqueID"] = _int(gpu.fabric_clique_id)
    return attributes


def _shared_capacity(memory_bytes: int | None) -> dict[str, DeviceCapacity]:
    """The consumable capacities of a shared GPU (module docstring)."""
    capacity = {
        SHARED_COMPUTE_CAPACITY: DeviceCapacity(
            value=_count(_COMPUTE_PERCENT),
            request_policy=CapacityRequestPolicy(
                default=_count(_COMPUTE_PERCENT),
                valid_range=CapacityRequestPolicyRange(
                    min=_count(1), max=_count(_COMPUTE_PERCENT), step=_count(1)
                ),
            ),
        )
    }
    if memory_bytes is not None:
        policy = None
        # The API needs min + step <= value and a default on the step grid.
        if memory_bytes >= 2 * _GIB:
            policy = CapacityRequestPolicy(
                default=_bytes(memory_bytes // _GIB * _GIB),
                valid_range=CapacityRequestPolicyRange(min=_bytes(_GIB), step=_bytes(_GIB)),
            )
        capacity[SHARED_MEMORY_CAPACITY] = DeviceCapacity(
            value=_bytes(memory_bytes), request_policy=policy
        )
    return capacity


def _gpu_device(gpu: Gpu, inventory: NodeInventory, *, shared: bool = False) -> Device:
    attributes = {
        "type": _string(_DEVICE_TYPE_GPU),
        "uuid": _string(gpu.uuid),
        "index": _int(gpu.index),
        "minor": _int(gpu.minor),
        **_common_attributes(gpu, inventory),
    }
    if shared:
        return Device(
            name=gpu.device_name,
            attributes=attributes,
            capacity=_shared_capacity(gpu.memory_bytes),
            allow_multiple_allocations=True,
        )
    capacity = None
    if gpu.memory_bytes is not None:
        capacity = {"memory": DeviceCapacity(value=_bytes(gpu.memory_bytes))}
    return Device(name=gpu.device_name, attributes=attributes, capacity=capacity)


def _mig_attributes(
    gpu: Gpu, profile: MigProfile, inventory: NodeInventory
) -> dict[str, DeviceAttribute]:
    return {
        "type": _string(_DEVICE_TYPE_MIG),
        "profile": _string(profile.name),
        "parentUUID": _string(gpu.uuid),
        "parentIndex": _int(gpu.index),
        "parentMinor": _int(gpu.minor),
        **_common_attributes(gpu, inventory),
    }


def _mig_capacity(profile: MigProfile) -> dict[str, DeviceCapacity]:
    return {
        name: DeviceCapacity(
            value=_bytes(value(profile)) if name == "memory" else _count(value(profile))
        )
        for name, _, value in MIG_RESOURCES
    }


def _static_mig_device(gpu: Gpu, mig: MigDevice, inventory: NodeInventory) -> Device:
    start, size = mig.placement
    attributes = {**_mig_attributes(gpu, mig.profile, inventory), "uuid": _string(mig.uuid)}
    capacity = _mig_capacity(mig.profile)
    for i in range(start, start + size):
        capacity[f"memorySlice{i}"] = DeviceCapacity(value=_count(1))
    return Device(
        name=normalize.mig_device_name(gpu.minor, mig.profile.name, mig.profile.profile_id, start),
        attributes=attributes,
        capacity=capacity,
    )


def device_attributes(inventory: NodeInventory, device_name: str) -> dict[str, DeviceAttribute]:
    """The attributes the node's slices publish for ``device_name``; {} for no such device.

    A MIG placement of a partitionable GPU has no ``uuid`` until it is created: the
    caller that created it adds the UUID.
    """
    gpu = inventory.gpu_by_name(device_name)
    if gpu is not None:
        return dict(_gpu_device(gpu, inventory).attributes or {})
    placement = inventory.mig_by_name(device_name)
    if placement is None:
        return {}
    if placement.existing is not None:
        return dict(
            _static_mig_device(placement.gpu, placement.existing, inventory).attributes or {}
        )
    return _mig_attributes(placement.gpu, placement.profile, inventory)


def _counters(values: Mapping[str, int]) -> dict[str, Counter]:
    return {
        name: Counter(value=_bytes(value) if name == "memory" else _count(value))
        for name, value in values.items()
    }


@dataclass(frozen=True, slots=True)
class _Planned:
    """A device with what ordering needs to know about it."""

    device: Device
    gpu: Gpu
    memory: int | None
    rank: tuple[int, ...]
    """Order among the devices of one GPU: the full GPU first, then MIG devices."""


def _plan_gpu(
    gpu: Gpu, inventory: NodeInventory, partitionable: bool, shared: bool
) -> tuple[CounterSet | None, list[_Planned]]:
    if gpu.mig_enabled:
        return None, [
            _Planned(
                _static_mig_device(gpu, mig, inventory),
                gpu,
                mig.profile.memory_bytes,
                (
                    1,
                    mig.profile.memory_bytes,
                    mig.profile.slice_count,
                    mig.profile.profile_id,
                    mig.placement[0],
                ),
            )
            for mig in gpu.mig_devices
        ]
    full = _gpu_device(gpu, inventory, shared=shared)
    if not (partitionable and is_partitionable(gpu)):
        return None, [_Planned(full, gpu, gpu.memory_bytes, (0,))]
    set_name = counter_set_name(gpu)
    totals = counter_values(gpu)
    full.consumes_counters = [
        DeviceCounterConsumption(counter_set=set_name, counters=_counters(totals))
    ]
    planned = [_Planned(full, gpu, gpu.memory_bytes, (0,))]
    for profile in gpu.mig_profiles:
        for placement in profile.placements:
            device = Device(
                name=normalize.mig_device_name(
                    gpu.minor, profile.name, profile.profile_id, placement[0]
                ),
                attributes=_mig_attributes(gpu, profile, inventory),
                capacity=_mig_capacity(profile),
                consumes_counters=[
                    DeviceCounterConsumption(
                        counter_set=set_name,
                        counters=_counters(placement_consumption(profile, placement)),
                    )
                ],
            )
            rank = (1, profile.memory_bytes, profile.slice_count, profile.profile_id, placement[0])
            planned.append(_Planned(device, gpu, profile.memory_bytes, rank))
    return CounterSet(name=set_name, counters=_counters(totals)), planned


def _order_key(order: DeviceOrder) -> Callable[[_Planned], tuple[int, ...]]:
    if order == "index":
        return lambda p: (p.gpu.index, *p.rank)
    sign = 1 if order == "smallest-first" else -1
    # Devices of unknown size go last either way: nothing can be packed by them.
    return lambda p: (p.memory is None, sign * (p.memory or 0), p.gpu.index, *p.rank)


def _apply_taints(planned: list[_Planned], taints: Mapping[str, Sequence[DeviceTaint]]) -> None:
    for item in planned:
        names = [item.device.name]
        if item.device.name != item.gpu.device_name:
            # A fault of the physical GPU affects every MIG device on it.
            names.insert(0, item.gpu.device_name)
        merged: list[DeviceTaint] = []
        seen: set[tuple[str, str | None, str]] = set()
        for name in names:
            for taint in taints.get(name, ()):
                key = (taint.key, taint.value, taint.effect)
                if key not in seen:
                    seen.add(key)
                    merged.append(taint.model_copy())
        if merged:
            item.device.taints = merged[: limits.DEVICE_TAINTS_MAX]


def _uses_advanced_features(device: Device) -> bool:
    return bool(device.taints or device.consumes_counters)


def _chunk_devices(devices: list[Device]) -> list[list[Device]]:
    """Greedy slices: 128 devices, or 64 once a slice holds taints or counter consumption."""
    chunks: list[list[Device]] = []
    current: list[Device] = []
    advanced = False
    for device in devices:
        device_advanced = _uses_advanced_features(device)
        limit = (
            limits.MAX_DEVICES_PER_SLICE_WITH_ADVANCED
            if advanced or device_advanced
            else limits.MAX_DEVICES_PER_SLICE
        )
        if len(current) >= limit:
            chunks.append(current)
            current, advanced = [], False
        current.append(device)
        advanced = advanced or device_advanced
    if current:
        chunks.append(current)
    return chunks


def build_slices(
    inventory: NodeInventory,
    *,
    driver_name: str = DEFAULT_DRIVER_NAME,
    device_order: DeviceOrder = "index",
    generation: int = 1,
    taints: Mapping[str, Sequence[DeviceTaint]] | None = None,
    partitionable: bool = True,
    owner: OwnerReference | None = None,
    shared_gpus: bool = False,
) -> list[ResourceSlice]:
    """The node's complete pool: counters-only slices first, then device slices.

    ``taints`` maps device names to taints; taints of a full GPU
    (``gpu-<minor>``) also apply to its MIG devices. ``partitionable=False``
    publishes MIG-capable GPUs as plain full GPUs (for clusters without the
    DRAPartitionableDevices feature). ``shared_gpus=True`` publishes full GPUs
    for sharing by consumable capacity (module docstring; needs the
    DRAConsumableCapacity feature). ``owner`` (normally the Node) becomes each
    slice's controller owner reference. Every slice carries ``generation`` and
    the pool's slice count; an inventory without GPUs yields one empty slice,
    because an empty pool is not the same as no pool.

    Raises InvalidInputError for an unknown ``device_order`` or when a slice
    would not pass API validation (e.g. an invalid driver name).
    """
    if device_order not in DEVICE_ORDERS:
        raise InvalidInputError(
            f"unknown device order {device_order!r}: use one of {', '.join(DEVICE_ORDERS)}",
            obj="--device-order",
        )
    counter_sets: list[CounterSet] = []
    planned: list[_Planned] = []
    for gpu in sorted(inventory.gpus, key=lambda g: g.index):
        counter_set, devices = _plan_gpu(gpu, inventory, partitionable, shared_gpus)
        if counter_set is not None:
            counter_sets.append(counter_set)
        planned.extend(devices)
    planned.sort(key=_order_key(device_order))
    if taints:
        _apply_taints(planned, taints)

    contents: list[tuple[list[CounterSet] | None, list[Device] | None]] = []
    step = limits.MAX_COUNTER_SETS_PER_SLICE
    for i in range(0, len(counter_sets), step):
        contents.append((counter_sets[i : i + step], None))
    contents.extend((None, chunk) for chunk in _chunk_devices([p.device for p in planned]))
    if not contents:
        contents.append((None, []))

    node = inventory.node_name
    pool = ResourcePool(name=node, generation=generation, resource_slice_count=len(contents))
    slices: list[ResourceSlice] = []
    for index, (shared_counters, slice_devices) in enumerate(contents):
        slice_ = ResourceSlice(
            metadata=ObjectMeta(
                name=slice_name(node, driver_name, index),
                owner_references=[owner.model_copy()] if owner is not None else None,
            ),
            spec=ResourceSliceSpec(
                driver=driver_name,
                pool=pool.model_copy(),
                node_name=node,
                devices=slice_devices,
                shared_counters=shared_counters,
            ),
        )
        ensure_valid(slice_)
        slices.append(slice_)
    return slices
