"""The mock GPU backend: deterministic fake GPUs for nodes without any.

A mock profile names the GPUs of a node::

    8xH100-80GB                     eight H100 80GB
    4xA100-40GB,4xL4                four A100 40GB, then four L4
    dgx-h100                        a named machine with an NVLink topology
                                    (:mod:`dra_driver.discovery.mock_machines`)
    2xA100-80GB:mig=3g.40gb/2x2g.20gb
                                    two A100 80GB in MIG mode, each cut into
                                    one 3g.40gb and two 2g.20gb MIG devices

Groups are separated by ``,``; a group is ``[COUNT x]MODEL`` (models: see
:data:`dra_driver.discovery.profiles.GPU_MODELS`), optionally followed by
``:mig=`` and a ``/``-separated MIG layout (``[N x]PROFILE`` entries, placed
first fit in the order given; an empty layout is MIG mode with no MIG devices
yet). Without ``:mig=`` a MIG-capable GPU has MIG mode off, which is what
partitionable (dynamic MIG) publishing needs.

Determinism: UUIDs are UUIDv5 of ``<node>/gpu-<index>``, so one node always gets
the same UUIDs and two nodes never share one. PCI bus IDs, PCIe roots and NUMA
nodes follow the position of the GPU, as on identical servers: the first half
of the GPUs sits on ``pci0000:00`` / NUMA node 0, the second half on
``pci0000:80`` / NUMA node 1, at the bus numbers of an 8-GPU HGX board.
"""

from __future__ import annotations

import queue
import re
import threading
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Final

from api.errors import InvalidInputError, PrepareError
from dra_driver.discovery import normalize
from dra_driver.discovery.mock_machines import MOCK_MACHINES, apply_topology, machine_profile
from dra_driver.discovery.mock_recovery import MockRecovery
from dra_driver.discovery.model import (
    Gpu,
    HealthEvent,
    HealthEventKind,
    MigDevice,
    MigProfile,
    NodeInventory,
)
from dra_driver.discovery.processes import GpuProcess, MockProcesses
from dra_driver.discovery.profiles import GPU_MODELS, GpuModel, model_by_key

__all__ = [
    "DEFAULT_CUDA_DRIVER_VERSION",
    "DEFAULT_DRIVER_VERSION",
    "DEFAULT_PROFILE",
    "MAX_MOCK_GPUS",
    "MockBackend",
    "MockGpuGroup",
    "MockMigManager",
    "mig_cap_minors",
    "mock_mig_uuid",
    "parse_mock_profile",
]

DEFAULT_PROFILE: Final = "8xH100-80GB"
DEFAULT_DRIVER_VERSION: Final = "550.54.15"
#: As ``nvmlSystemGetCudaDriverVersion()`` reports CUDA 12.4.
DEFAULT_CUDA_DRIVER_VERSION: Final = 12040
#: Upper bound of GPUs on one mock node (two sockets of eight).
MAX_MOCK_GPUS: Final = 16

# Bus numbers of the GPUs of an 8-GPU HGX board, per CPU socket (PCIe root).
_SOCKET_BUSES: Final = ((0x18, 0x2A, 0x3A, 0x5D), (0x9A, 0xAB, 0xBA, 0xDB))
_SOCKET_ROOTS: Final = ("pci0000:00", "pci0000:80")

# The NVIDIA driver's MIG capability minors (its ``mig-minors`` table): 1 and 2 are
# ``config`` and ``monitor``, then per GPU 15 GPU instances, each an ``access``
# minor followed by one per compute instance (8).
_CAPS_FIRST: Final = 3
_CAPS_PER_GI: Final = 9
_GIS_PER_GPU: Final = 15

_GROUP_RE: Final = re.compile(r"^(?:(?P<count>\d+)x)?(?P<model>[A-Za-z0-9][A-Za-z0-9-]*)$")
_LAYOUT_ENTRY_RE: Final = re.compile(r"^(?:(?P<count>\d+)x)?(?P<profile>\d.+)$")


@dataclass(frozen=True, slots=True)
class MockGpuGroup:
    """``count`` GPUs of one model, with an optional static MIG layout."""

    model: GpuModel
    count: int
    mig_layout: tuple[str, ...] | None = None
    """Profile names to create on each GPU (MIG mode on); None = MIG mode off."""


def _profile_error(text: str, message: str) -> InvalidInputError:
    return InvalidInputError(
        f"{message}; a mock profile looks like 8xH100-80GB or "
        "4xA100-40GB,4xL4 or 2xA100-80GB:mig=3g.40gb/2x2g.20gb, or names a machine: "
        + ", ".join(MOCK_MACHINES),
        obj=f"mock profile {text!r}",
    )


def parse_mock_profile(text: str) -> tuple[MockGpuGroup, ...]:
    """Parse a mock profile (grammar in the module docstring).

    Raises InvalidInputError naming the profile, the offending part and the
    fix: an unknown model lists the known ones, an unknown MIG profile lists
    the model's profiles, a layout that does not fit says so.
    """
    groups: list[MockGpuGroup] = []
    for raw in machine_profile(text).split(","):
        part = raw.strip()
        if not part:
            raise _profile_error(text, "empty GPU group")
        spec, sep, layout_text = part.partition(":")
        match = _GROUP_RE.match(spec.strip())
        if match is None:
            raise _profile_error(text, f"GPU group {part!r} is not [COUNT x]MODEL")
        model = model_by_key(match["model"])
        if model is None:
            known = ", ".join(m.key for m in GPU_MODELS)
            raise _profile_error(text, f"unknown GPU model {match['model']!r}: known are {known}")
        count = int(match["count"] or 1)
        if count < 1:
            raise _profile_error(text, f"GPU group {part!r} must have at least one GPU")
        layout: tuple[str, ...] | None = None
        if sep:
            key, eq, value = layout_text.partition("=")
            if key.strip() != "mig" or not eq:
                raise _profile_error(text, f"unknown option {layout_text!r}: only mig=LAYOUT")
            if not model.mig_capable:
                raise _profile_error(text, f"{model.key} is not MIG-capable")
            layout = _parse_layout(text, model, value.strip())
        groups.append(MockGpuGroup(model, count, layout))
    total = sum(g.count for g in groups)
    if total > MAX_MOCK_GPUS:
        raise _profile_error(text, f"{total} GPUs, at most {MAX_MOCK_GPUS} on one mock node")
    return tuple(groups)


def _parse_layout(text: str, model: GpuModel, layout: str) -> tuple[str, ...]:
    names = {p.name for p in _mig_profiles(model)}
    result: list[str] = []
    for raw in layout.split("/") if layout else []:
        match = _LAYOUT_ENTRY_RE.match(raw.strip())
        if match is None or match["profile"] not in names:
            known = ", ".join(sorted(names))
            raise _profile_error(
                text, f"unknown MIG profile {raw.strip()!r} for {model.key}: known are {known}"
            )
        result.extend([match["profile"]] * int(match["count"] or 1))
    # Fail at parse time, not at discovery, when the layout cannot be placed.
    _place(text, model, tuple(result))
    return tuple(result)


@cache
def _mig_profiles(model: GpuModel) -> tuple[MigProfile, ...]:
    return tuple(
        MigProfile(
            name=normalize.mig_profile_name(spec.profile_enum, spec.memory_mib, model.memory_bytes),
            profile_id=spec.profile_id,
            slice_count=normalize.gpu_instance_slices(spec.profile_enum),
            memory_bytes=spec.memory_mib << 20,
            multiprocessors=spec.multiprocessors,
            copy_engines=spec.copy_engines,
            decoders=spec.decoders,
            encoders=spec.encoders,
            jpeg_engines=spec.jpeg_engines,
            ofa_engines=spec.ofa_engines,
            placements=spec.placements,
            instance_count=spec.instance_count,
        )
        # In NVML's query order (by profile enum), as the NVML backend lists them.
        for spec in sorted(model.mig_profiles, key=lambda spec: spec.profile_enum)
    )


def _place(
    text: str, model: GpuModel, layout: tuple[str, ...]
) -> list[tuple[MigProfile, tuple[int, int]]]:
    """Placements for ``layout`` on one GPU: the first, in placement order, that fits.

    Entries are placed in the order given, each at its earliest free
    placement, backtracking when a later entry no longer fits (``3g.20gb`` then
    two ``2g.10gb`` only fit with the 3g instance at slice 4). Instance counts
    (one ``+me`` instance per GPU) are honoured.
    """
    by_name = {p.name: p for p in _mig_profiles(model)}
    counts = {spec.profile_id: spec.instance_count for spec in model.mig_profiles}
    for name in layout:
        profile = by_name[name]
        wanted = sum(1 for n in layout if n == name)
        if wanted > counts[profile.profile_id]:
            raise _profile_error(
                text,
                f"{wanted} {name} MIG devices on one {model.key}, "
                f"at most {counts[profile.profile_id]}",
            )
    placed: list[tuple[MigProfile, tuple[int, int]]] = []

    def search(position: int, used: frozenset[int]) -> bool:
        if position == len(layout):
            return True
        profile = by_name[layout[position]]
        for start, size in profile.placements:
            span = frozenset(range(start, start + size))
            if span & used:
                continue
            placed.append((profile, (start, size)))
            if search(position + 1, used | span):
                return True
            placed.pop()
        return False

    if not search(0, frozenset()):
        raise _profile_error(text, f"MIG layout {'/'.join(layout)} does not fit on one {model.key}")
    return placed


def mig_cap_minors(
    gpu_minor: int, gpu_instance_id: int, compute_instance_id: int
) -> tuple[int, int]:
    """(GPU-instance cap, compute-instance cap) minors of ``/dev/nvidia-caps/nvidia-cap<N>``.

    The numbering of the NVIDIA driver's ``mig-minors`` table, so mock specs look
    like real ones: ``gpu0/gi0/access`` is 3, its ``ci0`` 4, ``gpu0/gi1`` 12.
    """
    gi_cap = _CAPS_FIRST + (gpu_minor * _GIS_PER_GPU + gpu_instance_id) * _CAPS_PER_GI
    return gi_cap, gi_cap + 1 + compute_instance_id


def mock_mig_uuid(node_name: str, gpu_index: int, profile_id: int, start: int) -> str:
    """The UUID of a mock MIG device: the same for the same node, GPU, profile and placement."""
    return "MIG-" + str(
        uuid.uuid5(uuid.NAMESPACE_DNS, f"{node_name}/gpu-{gpu_index}/mig-{start}-{profile_id}")
    )


def _mig_device(
    node_name: str,
    gpu: tuple[int, int],
    profile: MigProfile,
    placement: tuple[int, int],
    gpu_instance_id: int,
) -> MigDevice:
    """A mock MIG device; ``gpu`` is the parent's (index, minor)."""
    gpu_index, gpu_minor = gpu
    gi_cap, ci_cap = mig_cap_minors(gpu_minor, gpu_instance_id, 0)
    return MigDevice(
        uuid=mock_mig_uuid(node_name, gpu_index, profile.profile_id, placement[0]),
        profile=profile,
        placement=placement,
        gpu_instance_id=gpu_instance_id,
        compute_instance_id=0,
        gpu_instance_cap=gi_cap,
        compute_instance_cap=ci_cap,
    )


def _bus_and_socket(position: int, total: int) -> tuple[int, int]:
    """(PCI bus number, socket) of the ``position``-th of ``total`` GPUs."""
    first_socket = (total + 1) // 2
    socket = 0 if position < first_socket else 1
    slot = position if socket == 0 else position - first_socket
    buses = _SOCKET_BUSES[socket]
    if slot < len(buses):
        return buses[slot], socket
    # Beyond an HGX board: further slots below the next socket's bus range.
    return (0x60 if socket == 0 else 0xE0) + 2 * (slot - len(buses)), socket


class MockBackend:
    """A :class:`~dra_driver.discovery.model.DiscoveryBackend` with fake GPUs and fault injection.

    ``discover()`` always returns the same inventory for the same node name,
    profile and versions. Injected health events queue up in order and are
    returned by ``wait_health_event``; the methods are safe to call from
    another thread than the one waiting.
    """

    def __init__(
        self,
        node_name: str,
        profile: str = DEFAULT_PROFILE,
        *,
        driver_version: str = DEFAULT_DRIVER_VERSION,
        cuda_driver_version: int = DEFAULT_CUDA_DRIVER_VERSION,
    ) -> None:
        """Raises InvalidInputError for an empty node name or a malformed profile or version."""
        if not node_name:
            raise InvalidInputError("node name is required: the mock seeds UUIDs with it")
        self.node_name = node_name
        self.profile = profile
        try:
            driver = normalize.driver_version(driver_version)
            cuda = normalize.cuda_driver_version(cuda_driver_version)
        except ValueError as err:
            raise InvalidInputError(str(err), obj="mock backend") from None
        groups = parse_mock_profile(profile)
        self._inventory = NodeInventory(
            node_name=node_name,
            driver_version=driver,
            cuda_driver_version=cuda,
            gpus=apply_topology(profile, self._build_gpus(profile, groups)),
        )
        self._events: queue.Queue[HealthEvent] = queue.Queue()
        self.mig_manager = MockMigManager(self._inventory)
        """Dynamic MIG on these GPUs, in memory (the static MIG devices start out in it)."""
        self.recovery = MockRecovery(self._gpu)
        """What NVML's recovery-action field and validation read for these GPUs."""
        self.gpu_processes = MockProcesses(self._device_uuids)
        """The compute processes on these GPUs and their MIG devices, started by hand."""

    def _build_gpus(self, text: str, groups: tuple[MockGpuGroup, ...]) -> tuple[Gpu, ...]:
        total = sum(g.count for g in groups)
        gpus: list[Gpu] = []
        for group in groups:
            model = group.model
            profiles = _mig_profiles(model)
            for _ in range(group.count):
                index = len(gpus)
                bus, socket = _bus_and_socket(index, total)
                gpu_uuid = "GPU-" + str(
                    uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.node_name}/gpu-{index}")
                )
                mig_devices: tuple[MigDevice, ...] = ()
                if group.mig_layout is not None:
                    mig_devices = tuple(
                        # NVML numbers GPU instances per GPU; creation order here.
                        _mig_device(self.node_name, (index, index), profile, placement, number + 1)
                        for number, (profile, placement) in enumerate(
                            _place(text, model, group.mig_layout)
                        )
                    )
                gpus.append(
                    Gpu(
                        index=index,
                        minor=index,
                        uuid=gpu_uuid,
                        product_name=model.product_name,
                        brand=normalize.brand_name(model.brand),
                        architecture=normalize.architecture_name(model.architecture),
                        cuda_compute_capability=normalize.compute_capability(
                            *model.compute_capability
                        ),
                        memory_bytes=model.memory_bytes,
                        # NVML's form, normalised like the NVML backend does.
                        pci_bus_id=normalize.pci_bus_id(f"00000000:{bus:02X}:00.0"),
                        pcie_root=_SOCKET_ROOTS[socket],
                        numa_node=socket,
                        mig_capable=model.mig_capable,
                        mig_enabled=group.mig_layout is not None,
                        mig_profiles=profiles,
                        mig_devices=mig_devices,
                        memory_slices=model.memory_slices,
                    )
                )
        return tuple(gpus)

    @property
    def inventory(self) -> NodeInventory:
        return self._inventory

    def discover(self) -> NodeInventory:
        """The node's fake GPUs; never fails."""
        return self._inventory

    def processes(self) -> tuple[GpuProcess, ...]:
        """The compute processes started on the mock GPUs (:class:`MockProcesses`)."""
        return self.gpu_processes.processes()

    def _device_uuids(self) -> list[str]:
        gpus = self._inventory.gpus
        return [g.uuid for g in gpus] + [m.uuid for g in gpus for m in self.mig_manager.devices(g)]

    def wait_health_event(self, timeout_s: float) -> HealthEvent | None:
        """The oldest injected event not yet returned; None if none arrives within ``timeout_s``."""
        try:
            if timeout_s <= 0:
                return self._events.get_nowait()
            return self._events.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def _gpu(self, gpu_uuid: str) -> Gpu:
        for gpu in self._inventory.gpus:
            if gpu.uuid == gpu_uuid:
                return gpu
        known = ", ".join(g.uuid for g in self._inventory.gpus) or "none"
        raise InvalidInputError(
            f"no GPU with UUID {gpu_uuid!r} on this node: known are {known}",
            obj=f"mock node {self.node_name}",
        )

    def inject_xid(self, gpu_uuid: str, xid: int, *, occurred_at: float | None = None) -> None:
        """Queue an XID critical error on one GPU, as NVML's XidCriticalError event."""
        self._gpu(gpu_uuid)
        if xid <= 0:
            raise InvalidInputError(f"XID must be a positive integer, not {xid}")
        self._events.put(HealthEvent("xid", gpu_uuid, xid, occurred_at))

    def inject_ecc(
        self, gpu_uuid: str, *, double_bit: bool = True, occurred_at: float | None = None
    ) -> None:
        """Queue an ECC error event (double-bit by default) on one GPU."""
        self._gpu(gpu_uuid)
        kind: HealthEventKind = "ecc-double-bit" if double_bit else "ecc-single-bit"
        self._events.put(HealthEvent(kind, gpu_uuid, occurred_at=occurred_at))

    def inject_gpu_lost(
        self, gpu_uuid: str | None = None, *, occurred_at: float | None = None
    ) -> None:
        """Queue a GPU-lost event: for one GPU, or (None, as NVML reports it) for all of them."""
        if gpu_uuid is not None:
            self._gpu(gpu_uuid)
        self._events.put(HealthEvent("gpu-lost", gpu_uuid, occurred_at=occurred_at))


class MockMigManager:
    """A :class:`~dra_driver.discovery.model.MigManager` that keeps MIG devices in memory.

    Behaves like NVML where a caller can tell: a placement overlapping an
    existing MIG device (static or created) is refused as in use, GPU-instance
    IDs are the lowest free ones from 1, UUIDs and capability minors are
    deterministic (:func:`mock_mig_uuid`, :func:`mig_cap_minors`), so creating
    the same placement again after a destroy gives the same device. Creating
    what exists returns it. It makes no device nodes: the kubelet plugin adds
    those (it owns the dev root). State lives as long as the object: a plugin
    restart starts from the static layout, and start-up recovery makes again
    the dynamic devices its checkpoint holds.
    """

    def __init__(self, inventory: NodeInventory) -> None:
        self._node_name = inventory.node_name
        self._lock = threading.Lock()
        # GPU UUID -> MIG devices on it.
        self._devices: dict[str, list[MigDevice]] = {
            gpu.uuid: list(gpu.mig_devices) for gpu in inventory.gpus
        }

    def devices(self, gpu: Gpu) -> tuple[MigDevice, ...]:
        """The MIG devices that exist on ``gpu`` now."""
        with self._lock:
            return tuple(self._devices.get(gpu.uuid, ()))

    def create(self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int]) -> MigDevice:
        """See :meth:`MigManager.create`; raises PrepareError (retryable) for a taken placement,
        PrepareError for a placement the profile does not have."""
        where = f"GPU {gpu.device_name} ({gpu.uuid})"
        if placement not in profile.placements:
            raise PrepareError(
                f"{where}: MIG profile {profile.name} has no placement {placement}; "
                f"its placements are {list(profile.placements)}"
            )
        start, size = placement
        span = set(range(start, start + size))
        with self._lock:
            existing = self._devices.setdefault(gpu.uuid, [])
            for mig in existing:
                if mig.placement == placement and mig.profile.profile_id == profile.profile_id:
                    return mig
                other = set(range(mig.placement[0], mig.placement[0] + mig.placement[1]))
                if span & other:
                    raise PrepareError(
                        f"{where}: memory slices {sorted(span & other)} are in use by MIG device "
                        f"{mig.uuid} ({mig.profile.name}); it must be destroyed first",
                        retryable=True,
                    )
            used = {mig.gpu_instance_id for mig in existing}
            gi_id = next(i for i in range(1, len(used) + 2) if i not in used)
            device = _mig_device(self._node_name, (gpu.index, gpu.minor), profile, placement, gi_id)
            existing.append(device)
            return device

    def destroy(self, gpu: Gpu, profile: MigProfile, placement: tuple[int, int]) -> bool:
        """See :meth:`MigManager.destroy`."""
        with self._lock:
            existing = self._devices.get(gpu.uuid, [])
            for mig in existing:
                if mig.placement == placement and mig.profile.profile_id == profile.profile_id:
                    existing.remove(mig)
                    return True
        return False
