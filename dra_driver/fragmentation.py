"""How much of the free GPU capacity is fragmented: free units, the largest request that still
fits, and a fragmentation ratio, per node and cluster-wide.

:func:`measure` reads an allocator :class:`~dra_driver.allocator.Snapshot` (the devices in use
and the counters left, exactly as allocations see them) and looks at the driver's devices in
the pools bound to each node. Three classes of request, each with its own unit:

``gpu``
    whole GPUs (``type: gpu``). A GPU is *free* when a request for the whole GPU would get it:
    not in use, no share of it allocated, no NoSchedule/NoExecute taint, its counters all
    left (no MIG device of it in use).
``mig``
    memory slices of partitionable GPUs (the ``memory-slice-<i>`` counters). Per MIG profile,
    *free* is how many devices of that profile could still be allocated at once (placements
    taken greedily in slice order, each one's counters subtracted); a GPU with MIG mode on
    (static MIG devices, no counters) counts its free devices of each profile.
``share``
    bytes of ``memory`` of shared GPUs (consumable capacity): the memory no share has
    consumed, on GPUs that can take another share (not in use whole, not tainted, counters
    held by a share or all left).

**Fragmentation ratio.** A request must fit whole in one *container*: a node for whole GPUs
(a claim's devices come from one node), a GPU for MIG devices and for shares. Free capacity
in a container that is partly taken (in use or tainted) cannot serve the largest request the
container serves when empty -- all of the node's GPUs, the largest MIG profile (the whole
GPU), a share the size of the GPU -- and is *stranded*. The ratio is stranded free capacity
over all free capacity, per node and cluster-wide: 0 when every free unit sits in an empty
container (or nothing is free), 1 when no container is empty. Static MIG devices have no
slices to count and are left out of the ``mig`` ratio.

The work is one pass over the driver's devices per node; the controller runs it on a timer
(never per watch event) and the CLI once per cluster.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final, Literal

from api.resource_v1 import ResourceClaim, ResourceSlice
from dra_driver.allocator import Snapshot
from dra_driver.allocator.capacity import qualify
from dra_driver.allocator.inventory import CounterKey, InventoryDevice

__all__ = [
    "CLASSES",
    "Fragmentation",
    "NodeFragmentation",
    "RequestClass",
    "measure",
    "measure_objects",
]

RequestClass = Literal["gpu", "mig", "share"]
CLASSES: Final[tuple[RequestClass, ...]] = ("gpu", "mig", "share")

_MEMORY_SLICE: Final = "memory-slice-"


@dataclass(slots=True)
class NodeFragmentation:
    """One node's free capacity (module docstring)."""

    node: str
    #: Free whole GPUs by product name.
    gpus: dict[str, int] = field(default_factory=dict)
    #: MIG devices that could still be allocated at once, by profile.
    mig: dict[str, int] = field(default_factory=dict)
    #: Unconsumed memory of shared GPUs (bytes), by product name.
    share_memory: dict[str, int] = field(default_factory=dict)
    #: The most memory one share can still get on one GPU of the node (bytes).
    largest_share: int = 0
    #: Free and stranded units per class (``gpu``: GPUs, ``mig``: memory slices,
    #: ``share``: bytes).
    free: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    stranded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))

    @property
    def free_gpus(self) -> int:
        return sum(self.gpus.values())

    def ratio(self, kind: RequestClass) -> float:
        return _ratio(self.stranded[kind], self.free[kind])


@dataclass(slots=True)
class Fragmentation:
    """Every node's :class:`NodeFragmentation`, and the cluster-wide figures."""

    nodes: list[NodeFragmentation]

    def ratio(self, kind: RequestClass) -> float:
        """Cluster-wide: stranded over free, summed over nodes."""
        return _ratio(sum(n.stranded[kind] for n in self.nodes), self.free(kind))

    def free(self, kind: RequestClass) -> int:
        return sum(n.free[kind] for n in self.nodes)

    @property
    def largest_gpu_request(self) -> int:
        """The most whole GPUs one claim can still get (the most free on one node)."""
        return max((n.free_gpus for n in self.nodes), default=0)

    @property
    def largest_share(self) -> int:
        """The most memory (bytes) one share can still get anywhere."""
        return max((n.largest_share for n in self.nodes), default=0)

    def mig_nodes(self) -> dict[str, int]:
        """Per MIG profile, the nodes where at least one more device of it fits."""
        found: dict[str, int] = defaultdict(int)
        for node in self.nodes:
            for profile, count in node.mig.items():
                found[profile] += 1 if count else 0
        return dict(sorted(found.items()))

    def to_json(self) -> dict[str, object]:
        """The figures as ``dra-driver gpus -o json`` shows them."""
        return {
            "total": {
                "ratio": {kind: round(self.ratio(kind), 4) for kind in CLASSES},
                "free": {kind: self.free(kind) for kind in CLASSES},
                "largestGpuRequest": self.largest_gpu_request,
                "largestShareBytes": self.largest_share,
                "migProfileNodes": self.mig_nodes(),
            },
            "nodes": {
                n.node: {
                    "ratio": {kind: round(n.ratio(kind), 4) for kind in CLASSES},
                    "free": dict(n.free),
                    "migFree": dict(sorted(n.mig.items())),
                    "largestShareBytes": n.largest_share,
                }
                for n in self.nodes
            },
        }

    def summary(self) -> str:
        """One line: ``gpu 0.50 (largest request 2 of 6 free), mig 0.25 (...), share 0.00``."""
        parts = [
            f"gpu {self.ratio('gpu'):.2f} (largest request {self.largest_gpu_request} "
            f"of {self.free('gpu')} free)"
        ]
        fits = ", ".join(f"{p} on {n} node(s)" for p, n in self.mig_nodes().items())
        parts.append(f"mig {self.ratio('mig'):.2f}" + (f" ({fits})" if fits else ""))
        parts.append(f"share {self.ratio('share'):.2f} (largest share {_gib(self.largest_share)})")
        return ", ".join(parts)


def _gib(value: int) -> str:
    return f"{value / (1 << 30):.0f}Gi"


def _ratio(stranded: int, free: int) -> float:
    return stranded / free if free else 0.0


def _text(device: InventoryDevice, name: str) -> str:
    attribute = device.attributes.get(name)
    if attribute is None or not attribute.set_fields():
        return ""
    return str(attribute.value)


def _counters_fit(device: InventoryDevice, left: Mapping[CounterKey, Fraction]) -> bool:
    return all(left.get(key, Fraction(0)) >= amount for key, amount in device.consumes)


class _NodeMeasure:
    """One pass over one node's devices of the driver."""

    def __init__(self, snapshot: Snapshot, node: str, devices: list[InventoryDevice]) -> None:
        self.snapshot = snapshot
        self.result = NodeFragmentation(node)
        self.devices = devices

    def counters(self, device: InventoryDevice) -> dict[CounterKey, Fraction]:
        generation = device.slice.pool_generation
        return dict(self.snapshot.counters_available(generation)) if generation else {}

    def run(self) -> NodeFragmentation:
        gpus = [d for d in self.devices if _text(d, "type") == "gpu"]
        migs: dict[str, list[InventoryDevice]] = defaultdict(list)
        for device in self.devices:
            if _text(device, "type") == "mig":
                migs[_text(device, "parentUUID")].append(device)
        whole_free = 0
        for gpu in gpus:
            whole_free += self._gpu(gpu)
        result = self.result
        result.free["gpu"] = whole_free
        if whole_free < len(gpus):
            result.stranded["gpu"] = whole_free
        tainted_parents = {_text(g, "uuid") for g in gpus if g.blocking_taints}
        for parent, devices in migs.items():
            self._mig(devices, parent in tainted_parents)
        return result

    def _gpu(self, gpu: InventoryDevice) -> int:
        """Count one GPU's whole and shared capacity; 1 when the whole GPU is free."""
        snapshot, result = self.snapshot, self.result
        product = _text(gpu, "productName") or "(unknown)"
        result.gpus.setdefault(product, 0)
        usable = not snapshot.in_use(gpu.id) and not gpu.blocking_taints
        shares = snapshot.share_count(gpu.id)
        counters_left = _counters_fit(gpu, self.counters(gpu)) if gpu.consumes else True
        whole = usable and shares == 0 and counters_left
        if whole:
            result.gpus[product] += 1
        if gpu.multi:
            memory_name = qualify("memory", gpu.driver)
            entry = gpu.capacity.get(memory_name)
            free = 0
            if entry is not None and usable and (shares > 0 or counters_left):
                consumed = snapshot.aggregated(gpu.id).get(memory_name, Fraction(0))
                free = max(int(entry.total - consumed), 0)
            result.share_memory[product] = result.share_memory.get(product, 0) + free
            result.free["share"] += free
            if shares:
                result.stranded["share"] += free
            compute = gpu.capacity.get(qualify("compute", gpu.driver))
            compute_left = (
                compute is None
                or compute.total
                - snapshot.aggregated(gpu.id).get(qualify("compute", gpu.driver), Fraction(0))
                > 0
            )
            if compute_left:
                result.largest_share = max(result.largest_share, free)
        return int(whole)

    def _mig(self, devices: list[InventoryDevice], parent_tainted: bool) -> None:
        """Count one GPU's MIG devices: free per profile and its memory slices."""
        snapshot, result = self.snapshot, self.result
        left = self.counters(devices[0])
        by_profile: dict[str, list[InventoryDevice]] = defaultdict(list)
        for device in devices:
            by_profile[_text(device, "profile") or "(unknown)"].append(device)
        for profile, placements in by_profile.items():
            room = dict(left)
            count = 0
            for device in placements:
                if snapshot.in_use(device.id) or device.blocking_taints:
                    continue
                if not _counters_fit(device, room):
                    continue
                for key, amount in device.consumes:
                    room[key] -= amount
                count += 1
            result.mig[profile] = result.mig.get(profile, 0) + count
        slices = [
            key
            for device in devices
            for key, _ in device.consumes
            if key[1].startswith(_MEMORY_SLICE)
        ]
        total = set(slices)
        if not total or parent_tainted:
            return
        free = sum(1 for key in total if left.get(key, Fraction(0)) >= 1)
        result.free["mig"] += free
        if free < len(total):
            result.stranded["mig"] += free


def measure(snapshot: Snapshot, driver_name: str) -> Fragmentation:
    """The free capacity of ``driver_name``'s devices on every node of ``snapshot``
    (module docstring). Reads the snapshot only; not thread-safe, like the snapshot."""
    nodes: list[NodeFragmentation] = []
    for name in snapshot.node_names:
        devices = _node_devices(snapshot, name, driver_name)
        if devices:
            nodes.append(_NodeMeasure(snapshot, name, devices).run())
    return Fragmentation(nodes)


def _node_devices(snapshot: Snapshot, node: str, driver_name: str) -> list[InventoryDevice]:
    """The driver's devices of complete, valid pools bound to ``node``."""
    return [
        device
        for device in snapshot.view(node).candidates
        if device.driver == driver_name and device.slice.node_name == node
    ]


def measure_objects(
    slices: Iterable[ResourceSlice], claims: Iterable[ResourceClaim], driver_name: str
) -> Fragmentation:
    """:func:`measure` of a snapshot of these objects (``dra-driver gpus``: one cluster's
    lists). Raises InvalidInputError for a slice whose node selector cannot be evaluated."""
    mine = [s for s in slices if s.spec.driver == driver_name]
    return measure(Snapshot.build(slices=mine, classes=(), claims=claims), driver_name)
