"""The ``topology`` check of ``python -m e2e.gpu.check``: the topology the NVML backend
discovers on real GPUs, recorded per GPU and compared with ``nvidia-smi``'s own view.

Recorded, per GPU: the topology attributes the node's ResourceSlice would publish (the
standard ``resource.kubernetes.io/pciBusID``, ``pcieRoot`` and ``numaNode``; the driver's
``nvlinkIsland``, ``nvlinkPeerCount``, ``fabricClusterUUID`` and ``fabricCliqueID`` where
discovered), the NVLink peers by index, and what ``nvidia-smi topo -m`` shows between it
and each other GPU, its NUMA affinity and the active links ``nvidia-smi nvlink -s`` lists.

Compared, where both sides know it (what was compared is listed in the result):

- NVLink peers: the GPUs NVML calls peers are those ``topo -m`` shows ``NV#`` to;
- islands: GPUs share an island exactly when ``NV#`` links join them (no NVLink: each GPU
  its own island, not a failure);
- active links: a GPU with NVLink peers has active links in ``nvlink -s``, and one with no
  active link has no peers;
- PCIe roots: ``PIX``, ``PXB`` or ``PHB`` between two GPUs (one host bridge) means the same
  ``pcieRoot``, ``NODE`` or ``SYS`` (across host bridges) a different one;
- NUMA node: ``numaNode`` is ``topo -m``'s NUMA affinity where that is one number.

``nvidia-smi`` output is parsed defensively: a column or section it lacks, or a command
that fails, leaves that comparison out (and says so); it never fails the check by itself.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from api import limits
from dra_driver.discovery.model import NodeInventory
from dra_driver.slices import build_slices

__all__ = [
    "TopoMatrix",
    "TopologyMismatchError",
    "check_topology",
    "compare_topology",
    "nvlink_groups",
    "parse_nvlink_status",
    "parse_topo_matrix",
]

#: Runs ``nvidia-smi`` with these arguments and returns its standard output.
Smi = Callable[[Sequence[str]], str]

DRIVER: Final = "gpu.dra-driver.io"
#: The published attributes that describe where a GPU sits.
TOPOLOGY_ATTRIBUTES: Final = (
    limits.ATTRIBUTE_PCI_BUS_ID,
    limits.ATTRIBUTE_PCIE_ROOT,
    limits.ATTRIBUTE_NUMA_NODE,
    limits.ATTRIBUTE_NVLINK_ISLAND,
    "nvlinkPeerCount",
    "fabricClusterUUID",
    "fabricCliqueID",
)
#: ``topo -m`` links between two GPUs under one PCIe host bridge, and across host bridges.
SAME_ROOT: Final = frozenset({"PIX", "PXB", "PHB"})
OTHER_ROOT: Final = frozenset({"NODE", "SYS"})

_ANSI: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GPU: Final = re.compile(r"^GPU(\d+)$")
_NVLINK: Final = re.compile(r"^NV\d+$")
_SMI_GPU: Final = re.compile(r"^GPU\s+(\d+)\s*:")
_SMI_LINK: Final = re.compile(r"^Link\s+\d+\s*:\s*(.*)$")


class TopologyMismatchError(AssertionError):
    """The NVML backend's topology and ``nvidia-smi``'s disagree; the message lists where."""


@dataclass(frozen=True)
class TopoMatrix:
    """``nvidia-smi topo -m`` between GPUs: ``links[i][j]`` is the code shown in GPU i's row
    under GPU j (``X`` for itself, ``NV18``, ``PIX``, ``SYS``...); ``numa[i]`` the NUMA
    affinity column of GPU i as printed (absent when the table has none)."""

    links: dict[int, dict[int, str]] = field(default_factory=dict)
    numa: dict[int, str] = field(default_factory=dict)


def parse_topo_matrix(text: str) -> TopoMatrix:
    """The GPU-to-GPU part of ``nvidia-smi topo -m``. The header row names the columns (GPUs,
    NICs or ``mlx5_0``-style names) up to ``CPU Affinity``; each ``GPU<n>`` row then has one
    code per column, the CPU affinity and the NUMA affinity. Colour codes, NIC rows and the
    legend are skipped; a row shorter than the header keeps the columns it has."""
    columns: list[str] | None = None
    links: dict[int, dict[int, str]] = {}
    numa: dict[int, str] = {}
    for raw in text.splitlines():
        tokens = _ANSI.sub("", raw).split()
        if not tokens:
            continue
        if columns is None:
            if _GPU.match(tokens[0]) and len(tokens) > 1 and tokens[1] != "X":
                columns = []
                for token in tokens:
                    if token == "CPU":
                        break
                    columns.append(token)
            continue
        row = _GPU.match(tokens[0])
        if row is None:
            if tokens[0].startswith("Legend"):
                break
            continue
        index = int(row.group(1))
        values = tokens[1:]
        links[index] = {
            int(m.group(1)): value
            for column, value in zip(columns, values, strict=False)
            if (m := _GPU.match(column))
        }
        rest = values[len(columns) :]
        if len(rest) >= 2:  # CPU affinity, NUMA affinity[, GPU NUMA ID]
            numa[index] = rest[1]
    return TopoMatrix(links, numa)


def parse_nvlink_status(text: str) -> dict[int, int]:
    """Active links per GPU index from ``nvidia-smi nvlink -s``: a ``Link <n>: <speed>`` line
    counts, ``<inactive>`` (or an empty answer) does not; a GPU listed without links has 0."""
    active: dict[int, int] = {}
    current: int | None = None
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).strip()
        gpu = _SMI_GPU.match(line)
        if gpu:
            current = int(gpu.group(1))
            active[current] = 0
            continue
        link = _SMI_LINK.match(line)
        if link and current is not None:
            state = link.group(1).strip().lower()
            if state and "inactive" not in state and "n/a" not in state:
                active[current] += 1
    return active


def nvlink_groups(links: Mapping[int, Mapping[int, str]]) -> list[frozenset[int]]:
    """The GPUs ``NV#`` links join, directly or through others; a GPU without NVLink alone."""
    peers = {
        i: {j for j, code in row.items() if j != i and _NVLINK.match(code)}
        for i, row in links.items()
    }
    groups: list[frozenset[int]] = []
    seen: set[int] = set()
    for start in sorted(peers):
        if start in seen:
            continue
        group, todo = {start}, [start]
        while todo:
            for peer in peers.get(todo.pop(), ()):
                if peer not in group:
                    group.add(peer)
                    todo.append(peer)
        seen |= group
        groups.append(frozenset(group))
    return groups


def _published(inventory: NodeInventory) -> dict[str, dict[str, Any]]:
    """Device name -> its topology attributes as the pool would publish them (plain values)."""
    found: dict[str, dict[str, Any]] = {}
    for slice_ in build_slices(inventory, driver_name=DRIVER, partitionable=False):
        for device in slice_.spec.devices or ():
            attributes = device.attributes or {}
            found[device.name] = {
                name: next(v for v in attributes[name].model_dump(exclude_none=True).values())
                for name in TOPOLOGY_ATTRIBUTES
                if name in attributes
            }
    return found


def compare_topology(
    inventory: NodeInventory, matrix: TopoMatrix, active: Mapping[int, int]
) -> tuple[list[str], list[str]]:
    """(what was compared, what disagreed) between the inventory and ``nvidia-smi``."""
    compared: list[str] = []
    wrong: list[str] = []
    gpus = {gpu.index: gpu for gpu in inventory.gpus}
    rows = {i: row for i, row in matrix.links.items() if i in gpus}
    known = all(gpu.nvlink_island is not None for gpu in gpus.values())
    if rows and known:
        compared.append("nvlink peers")
        for i, row in rows.items():
            smi = {j for j, code in row.items() if j != i and _NVLINK.match(code)}
            nvml = set(gpus[i].nvlink_peers)
            if smi != nvml:
                wrong.append(f"GPU {i}: NVML peers {sorted(nvml)}, nvidia-smi NV# to {sorted(smi)}")
        compared.append("nvlink islands")
        by_island: dict[str, set[int]] = {}
        for i in rows:
            by_island.setdefault(str(gpus[i].nvlink_island), set()).add(i)
        nvml_groups = sorted(sorted(g) for g in by_island.values())
        smi_groups = sorted(sorted(g) for g in nvlink_groups(rows))
        if nvml_groups != smi_groups:
            wrong.append(f"islands: NVML {nvml_groups}, nvidia-smi NV# groups {smi_groups}")
    if active and known:
        # Only one way round: links may be up with no peer here (an NVSwitch whose other
        # GPUs this machine does not see, as in a VM given some GPUs of a board).
        compared.append("active nvlinks")
        for i, count in sorted(active.items()):
            if i in gpus and gpus[i].nvlink_peers and count == 0:
                wrong.append(f"GPU {i}: NVML peers {list(gpus[i].nvlink_peers)}, no active link")
    roots = [
        (i, j, code)
        for i, row in rows.items()
        for j, code in row.items()
        if i < j and j in gpus and code in SAME_ROOT | OTHER_ROOT
    ]
    roots = [(i, j, c) for i, j, c in roots if gpus[i].pcie_root and gpus[j].pcie_root]
    if roots:
        compared.append("pcie roots")
        for i, j, code in roots:
            same = gpus[i].pcie_root == gpus[j].pcie_root
            if same != (code in SAME_ROOT):
                wrong.append(
                    f"GPU {i} ({gpus[i].pcie_root}) and GPU {j} ({gpus[j].pcie_root}): "
                    f"nvidia-smi shows {code}"
                )
    numa = {
        i: int(text)
        for i, text in matrix.numa.items()
        if text.isdigit() and i in gpus and gpus[i].numa_node is not None
    }
    if numa:
        compared.append("numa nodes")
        for i, node in sorted(numa.items()):
            if gpus[i].numa_node != node:
                wrong.append(f"GPU {i}: numaNode {gpus[i].numa_node}, nvidia-smi NUMA {node}")
    return compared, wrong


def run_nvidia_smi(args: Sequence[str]) -> str:
    return subprocess.run(
        ["nvidia-smi", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def check_topology(inventory: NodeInventory, smi: Smi = run_nvidia_smi) -> dict[str, Any]:
    """Record each GPU's topology and compare it with ``nvidia-smi`` (module docstring);
    raises TopologyMismatchError listing every disagreement. ``smi`` runs ``nvidia-smi``."""
    unread: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for name, args in (("topo", ["topo", "-m"]), ("nvlink", ["nvlink", "-s"])):
        try:
            outputs[name] = smi(args)
        except (OSError, subprocess.SubprocessError) as err:
            unread[f"nvidia-smi {' '.join(args)}"] = f"{type(err).__name__}: {err}"
    matrix = parse_topo_matrix(outputs.get("topo", ""))
    active = parse_nvlink_status(outputs.get("nvlink", ""))
    published = _published(inventory)
    gpus = []
    for gpu in inventory.gpus:
        gpus.append(
            {
                "device": gpu.device_name,
                "uuid": gpu.uuid,
                "attributes": published.get(gpu.device_name, {}),
                "nvlink_peers": list(gpu.nvlink_peers),
                "nvidia_smi": {
                    "topo": {f"GPU{j}": c for j, c in matrix.links.get(gpu.index, {}).items()},
                    "numa_affinity": matrix.numa.get(gpu.index),
                    "active_nvlinks": active.get(gpu.index),
                },
            }
        )
    compared, wrong = compare_topology(inventory, matrix, active)
    if wrong:
        raise TopologyMismatchError("; ".join(wrong))
    return {
        "topology_known": all(g.nvlink_island is not None for g in inventory.gpus),
        "islands": len({g.nvlink_island for g in inventory.gpus}),
        "compared": compared,
        "not_read": unread,
        "gpus": gpus,
    }
