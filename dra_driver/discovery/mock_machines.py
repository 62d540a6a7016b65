"""Named mock machines: GPU profiles with an NVLink topology, for tests and the demo.

A mock profile (:mod:`dra_driver.discovery.mock`) may be one of these names
instead of a ``[COUNT x]MODEL`` list. The GPUs are those of the listed profile,
with PCI bus IDs, PCIe roots and NUMA nodes as for any mock profile (first half
of the GPUs on ``pci0000:00`` / NUMA 0, second half on ``pci0000:80`` / NUMA 1);
the name adds the NVLink topology:

================  ================  =====================================================
name              GPUs              topology
================  ================  =====================================================
``dgx-h100``      ``8xH100-80GB``   NVSwitch box: one NVLink island, every GPU a peer of
                                    the seven others
``pairs-4xA100``  ``4xA100-80GB``   two NVLink-bridged pairs (GPUs 0+1, 2+3), one pair
                                    per PCIe root and NUMA node
``pcie-4xL40S``   ``4xL40S``        PCIe only: no NVLink, each GPU its own island
``rack-4xH100``   ``4xH100-80GB``   a rack-scale (multi-node NVLink) compute tray: one
                                    island spanning the fabric, with a fabric cluster
                                    UUID and clique ID
================  ================  =====================================================

Island IDs: a node-local island is named after the UUID of its first GPU (so
islands of two nodes never share an ID); a fabric island is
``<cluster UUID>/<clique ID>``, shared by every node of the clique. Plain
``[COUNT x]MODEL`` profiles report no topology (no NVLink attributes are
published), as before.

Tests pick a machine by name (``MockBackend(node, "dgx-h100")``); the plugin
with ``--gpu-backend=mock --mock-profile=dgx-h100``. The demo runs each on the
local cluster (as root) with the topology scene of deploy/examples/demo-topology,
pods the controller places under the ``topology`` policy with claims that keep
their GPUs on one NVLink island (its README says what each machine shows)::

    make demo DEMO_MACHINE=dgx-h100      # two pairs and a quad, all on the one island
    make demo DEMO_MACHINE=pairs-4xA100  # each pair pod on its own NVLink pair
    make demo DEMO_MACHINE=pcie-4xL40S   # the island pair refused, with the reason
    make demo DEMO_MACHINE=rack-4xH100   # both pairs on the fabric island
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Final

from dra_driver.discovery.model import Gpu

__all__ = ["MOCK_MACHINES", "MockMachine", "apply_topology", "machine_profile"]


@dataclass(frozen=True, slots=True)
class MockMachine:
    """A named mock machine: its GPUs and how NVLink joins them."""

    profile: str
    """A ``[COUNT x]MODEL`` mock profile."""
    islands: tuple[tuple[int, ...], ...]
    """GPU indexes of each NVLink island (all GPUs of one island are peers)."""
    fabric_clique: int | None = None
    """Clique ID of a rack-scale fabric (then all GPUs are one fabric island)."""


MOCK_MACHINES: Final = {
    "dgx-h100": MockMachine("8xH100-80GB", ((0, 1, 2, 3, 4, 5, 6, 7),)),
    "pairs-4xA100": MockMachine("4xA100-80GB", ((0, 1), (2, 3))),
    "pcie-4xL40S": MockMachine("4xL40S", ((0,), (1,), (2,), (3,))),
    "rack-4xH100": MockMachine("4xH100-80GB", ((0, 1, 2, 3),), fabric_clique=1),
}

# The fabric cluster of every rack-scale mock node: one cluster, so nodes of
# the same clique share an island.
_FABRIC_CLUSTER: Final = str(uuid.uuid5(uuid.NAMESPACE_DNS, "dra-driver/mock-fabric"))


def machine_profile(text: str) -> str:
    """The ``[COUNT x]MODEL`` profile a machine name stands for; other text as it is."""
    machine = MOCK_MACHINES.get(text.strip())
    return text if machine is None else machine.profile


def apply_topology(text: str, gpus: tuple[Gpu, ...]) -> tuple[Gpu, ...]:
    """``gpus`` with the NVLink topology of machine ``text``; unchanged for a plain profile."""
    machine = MOCK_MACHINES.get(text.strip())
    if machine is None:
        return gpus
    by_index = {gpu.index: gpu for gpu in gpus}
    result = dict(by_index)
    for members in machine.islands:
        if machine.fabric_clique is not None:
            island = f"{_FABRIC_CLUSTER}/{machine.fabric_clique}"
        else:
            island = by_index[members[0]].uuid
        for index in members:
            result[index] = replace(
                by_index[index],
                nvlink_peers=tuple(i for i in members if i != index),
                nvlink_island=island,
                fabric_cluster_uuid=_FABRIC_CLUSTER if machine.fabric_clique is not None else None,
                fabric_clique_id=machine.fabric_clique,
            )
    return tuple(result[gpu.index] for gpu in gpus)
