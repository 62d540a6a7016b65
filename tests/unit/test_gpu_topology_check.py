"""e2e/gpu/topology_check.py, the real-GPU ``topology`` check: its parsers of ``nvidia-smi
topo -m`` and ``nvlink -s`` on text as those commands print it, and the comparison with
the NVML backend's topology, on the named mock machines (which stand for the same boxes).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

import pytest

from dra_driver.discovery.mock import MockBackend
from e2e.gpu.topology_check import (
    TopologyMismatchError,
    check_topology,
    compare_topology,
    nvlink_groups,
    parse_nvlink_status,
    parse_topo_matrix,
)

# An 8-GPU NVSwitch box (HGX H100): NV18 between every pair of GPUs, NICs beside them,
# half the GPUs on each socket. Tab-separated, as nvidia-smi prints it.
_GPU_COLS = "\t".join(f"GPU{i}" for i in range(8))
_NIC_COLS = "\t".join(f"NIC{i}" for i in range(4))


def _nv18_row(i: int) -> str:
    cells = [" X " if j == i else "NV18" for j in range(8)]
    nics = ["PXB" if i // 2 == n else ("NODE" if i // 4 == n // 2 else "SYS") for n in range(4)]
    affinity = "0-55,112-167\t0\t\tN/A" if i < 4 else "56-111,168-223\t1\t\tN/A"
    return f"GPU{i}\t" + "\t".join(cells + nics) + f"\t{affinity}"


NVSWITCH_TOPO = "\n".join(
    [
        f"\t{_GPU_COLS}\t{_NIC_COLS}\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID",
        *(_nv18_row(i) for i in range(8)),
        "NIC0\tPXB\tPXB\tNODE\tNODE\tSYS\tSYS\tSYS\tSYS\t X \tNODE\tSYS\tSYS",
        "NIC1\tNODE\tNODE\tPXB\tPXB\tSYS\tSYS\tSYS\tSYS\tNODE\t X \tSYS\tSYS",
        "",
        "Legend:",
        "",
        "  X    = Self",
        "  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes",
        "  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host "
        "Bridges within a NUMA node",
        "  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)",
        "  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host "
        "Bridge)",
        "  PIX  = Connection traversing at most a single PCIe bridge",
        "  NV#  = Connection traversing a bonded set of # NVLinks",
        "",
        "NIC Legend:",
        "",
        "  NIC0: mlx5_0",
        "  NIC1: mlx5_1",
        "",
    ]
)

NVSWITCH_NVLINK = "\n".join(
    line
    for i in range(8)
    for line in [
        f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd)",
        *(f"\t Link {n}: 26.562 GB/s" for n in range(18)),
    ]
)

# A PCIe-only box of four L40S, two per socket: PHB between the first two (one host
# bridge), PIX between the last two (one PCIe switch), SYS across the sockets. The header
# underlined as on a terminal.
PCIE_TOPO = """\
\t\x1b[4mGPU0\tGPU1\tGPU2\tGPU3\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m
GPU0\t X \tPHB\tSYS\tSYS\t0-31,64-95\t0\t\tN/A
GPU1\tPHB\t X \tSYS\tSYS\t0-31,64-95\t0\t\tN/A
GPU2\tSYS\tSYS\t X \tPIX\t32-63,96-127\t1\t\tN/A
GPU3\tSYS\tSYS\tPIX\t X \t32-63,96-127\t1\t\tN/A

Legend:

  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks
"""

PCIE_NVLINK = "\n".join(
    f"GPU {i}: NVIDIA L40S (UUID: GPU-1111111{i}-aaaa-bbbb-cccc-dddddddddddd)\n"
    "NVML: Unable to retrieve NVLink information as all links are inActive"
    for i in range(4)
)

# Two NVLink-bridged pairs of A100 PCIe cards, one pair per socket.
PAIRS_TOPO = """\
\tGPU0\tGPU1\tGPU2\tGPU3\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID
GPU0\t X \tNV12\tSYS\tSYS\t0-23\t0\t\tN/A
GPU1\tNV12\t X \tSYS\tSYS\t0-23\t0\t\tN/A
GPU2\tSYS\tSYS\t X \tNV12\t24-47\t1\t\tN/A
GPU3\tSYS\tSYS\tNV12\t X \t24-47\t1\t\tN/A
"""


def _smi(topo: str, nvlink: str) -> Callable[[Sequence[str]], str]:
    def run(args: Sequence[str]) -> str:
        return {"topo": topo, "nvlink": nvlink}[args[0]]

    return run


def test_the_nvswitch_matrix_shows_nv18_between_every_pair_and_one_nvlink_group() -> None:
    matrix = parse_topo_matrix(NVSWITCH_TOPO)
    assert sorted(matrix.links) == list(range(8))
    assert matrix.links[0] == {0: "X", **{j: "NV18" for j in range(1, 8)}}
    assert matrix.links[5][5] == "X" and matrix.links[5][2] == "NV18"
    assert matrix.numa == {i: "0" if i < 4 else "1" for i in range(8)}
    assert nvlink_groups(matrix.links) == [frozenset(range(8))]
    assert parse_nvlink_status(NVSWITCH_NVLINK) == {i: 18 for i in range(8)}


def test_the_pcie_matrix_keeps_the_pcie_codes_and_each_gpu_is_its_own_group() -> None:
    matrix = parse_topo_matrix(PCIE_TOPO)
    assert matrix.links[0] == {0: "X", 1: "PHB", 2: "SYS", 3: "SYS"}
    assert matrix.links[3] == {0: "SYS", 1: "SYS", 2: "PIX", 3: "X"}
    assert matrix.numa == {0: "0", 1: "0", 2: "1", 3: "1"}
    assert nvlink_groups(matrix.links) == [frozenset({i}) for i in range(4)]
    assert parse_nvlink_status(PCIE_NVLINK) == {0: 0, 1: 0, 2: 0, 3: 0}


def test_odd_output_parses_to_what_it_shows() -> None:
    assert parse_topo_matrix("").links == {}
    assert parse_topo_matrix("No devices were found\n").links == {}
    # One GPU: no GPU-to-GPU link, its NUMA affinity all the same.
    one = parse_topo_matrix(
        "\tGPU0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\nGPU0\t X \t0-15\t0\t\tN/A\n"
    )
    assert one.links == {0: {0: "X"}} and one.numa == {0: "0"}
    # A row cut short keeps the columns it has; no affinity columns, no NUMA.
    short = parse_topo_matrix("\tGPU0\tGPU1\nGPU0\t X \tNV4\nGPU1\tNV4\n")
    assert short.links == {0: {0: "X", 1: "NV4"}, 1: {0: "NV4"}} and short.numa == {}
    assert parse_nvlink_status(
        "GPU 0: X (UUID: GPU-1)\n\t Link 0: <inactive>\n\t Link 1: 25 GB/s\n"
    ) == {0: 1}


@pytest.mark.parametrize(
    ("machine", "topo", "nvlink", "compared"),
    [
        (
            "dgx-h100",
            NVSWITCH_TOPO,
            NVSWITCH_NVLINK,
            ["nvlink peers", "nvlink islands", "active nvlinks", "numa nodes"],
        ),
        (
            "pcie-4xL40S",
            PCIE_TOPO,
            PCIE_NVLINK,
            ["nvlink peers", "nvlink islands", "active nvlinks", "pcie roots", "numa nodes"],
        ),
        (
            "pairs-4xA100",
            PAIRS_TOPO,
            "",
            ["nvlink peers", "nvlink islands", "pcie roots", "numa nodes"],
        ),
    ],
)
def test_the_check_agrees_with_nvidia_smi_on_the_box_each_mock_machine_stands_for(
    machine: str, topo: str, nvlink: str, compared: list[str]
) -> None:
    inventory = MockBackend("gpu-check-node", machine).discover()
    result = check_topology(inventory, _smi(topo, nvlink))
    assert result["compared"] == compared
    assert result["not_read"] == {}
    first = result["gpus"][0]
    assert first["device"] == "gpu-0"
    assert first["attributes"]["resource.kubernetes.io/pcieRoot"] == "pci0000:00"
    assert first["attributes"]["resource.kubernetes.io/numaNode"] == 0
    assert first["attributes"]["resource.kubernetes.io/pciBusID"] == inventory.gpus[0].pci_bus_id
    assert first["attributes"]["nvlinkIsland"] == inventory.gpus[0].nvlink_island
    assert first["nvidia_smi"]["topo"]["GPU0"] == "X"
    assert first["nvidia_smi"]["numa_affinity"] == "0"


def test_the_record_has_the_fabric_where_the_machine_reports_one() -> None:
    inventory = MockBackend("gpu-check-node", "rack-4xH100").discover()
    result = check_topology(inventory, _smi("", ""))
    attributes = result["gpus"][3]["attributes"]
    assert attributes["fabricCliqueID"] == 1
    assert attributes["nvlinkIsland"] == f"{attributes['fabricClusterUUID']}/1"
    assert attributes["nvlinkPeerCount"] == 3
    assert result["islands"] == 1 and result["compared"] == []


def test_nvml_and_nvidia_smi_disagreeing_fails_the_check_and_says_where() -> None:
    nvswitch = MockBackend("gpu-check-node", "dgx-h100").discover()
    pcie = MockBackend("gpu-check-node", "pcie-4xL40S").discover()
    eight_pcie = "\n".join(
        ["\t" + _GPU_COLS + "\tCPU Affinity\tNUMA Affinity"]
        + [
            f"GPU{i}\t"
            + "\t".join(" X " if i == j else "SYS" for j in range(8))
            + f"\t0-1\t{i // 4}"
            for i in range(8)
        ]
    )
    with pytest.raises(
        TopologyMismatchError,
        match=r"GPU 0: NVML peers \[1, 2, 3, 4, 5, 6, 7\], nvidia-smi NV# to \[\]",
    ):
        check_topology(nvswitch, _smi(eight_pcie, ""))
    # PIX between GPUs that NVML puts behind different PCIe roots; NUMA the other way round.
    crossed = PCIE_TOPO.replace("GPU1\tPHB\t X \tSYS", "GPU1\tPHB\t X \tPIX").replace(
        "\t0\t\tN/A", "\t1\t\tN/A", 1
    )
    _, wrong = compare_topology(pcie, parse_topo_matrix(crossed), {})
    assert wrong == [
        "GPU 1 (pci0000:00) and GPU 2 (pci0000:80): nvidia-smi shows PIX",
        "GPU 0: numaNode 0, nvidia-smi NUMA 1",
    ]
    # NVML peers without an active link in nvlink -s.
    _, wrong = compare_topology(nvswitch, parse_topo_matrix(NVSWITCH_TOPO), {0: 0, 1: 18})
    assert wrong == ["GPU 0: NVML peers [1, 2, 3, 4, 5, 6, 7], no active link"]


def test_without_nvidia_smi_or_a_known_topology_nothing_is_compared_and_nothing_fails() -> None:
    def missing(args: Sequence[str]) -> str:
        raise FileNotFoundError(2, "No such file or directory", "nvidia-smi")

    def failing(args: Sequence[str]) -> str:
        raise subprocess.CalledProcessError(9, ["nvidia-smi", *args])

    inventory = MockBackend("gpu-check-node", "dgx-h100").discover()
    for smi in (missing, failing):
        result = check_topology(inventory, smi)
        assert result["compared"] == []
        assert sorted(result["not_read"]) == ["nvidia-smi nvlink -s", "nvidia-smi topo -m"]
        assert len(result["gpus"]) == 8
    # A plain profile has no NVLink topology (as when NVML lacks the calls): the NVLink
    # comparisons are left out, the PCIe ones still made; no island published.
    plain = MockBackend("gpu-check-node", "4xL40S").discover()
    result = check_topology(plain, _smi(PAIRS_TOPO, PCIE_NVLINK))
    assert result["compared"] == ["pcie roots", "numa nodes"]
    assert result["topology_known"] is False
    assert "nvlinkIsland" not in result["gpus"][0]["attributes"]
