"""``dra-driver demo``: the example claims of ``deploy/examples`` through every placement policy.

Each feature folder (every folder but ``inventory/``, ``demo/`` and ``demo-topology/``, the
manifests of the cluster demo) is allocated together
with the shared inventory (nodes, ResourceSlices, DeviceClasses) under each
policy, and the outcome printed as a table: the node and devices chosen, or
why nothing fits. It runs offline, on mock GPUs, in about a second.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from api.errors import CelEvaluationError, InvalidInputError, UnsatisfiableError
from dra_driver.allocator import allocate
from dra_driver.manifest_read import read_documents
from dra_driver.manifests import load_inventory

INVENTORY = "inventory"
#: Folders that are not scenarios: the shared inventory, and what ``make demo`` applies
#: (``demo-topology`` with ``DEMO_MACHINE``).
NOT_SCENARIOS = frozenset({INVENTORY, "demo", "demo-topology"})


def scenario_outcome(
    inventory_dir: Path, scenario_dir: Path, policy: str, *, lenient: bool = False
) -> tuple[str, str]:
    """(node, devices) for one scenario under one policy; on failure ("-", reason)."""
    documents = read_documents([str(inventory_dir), str(scenario_dir)], sys.stdin)
    inventory = load_inventory(documents, lenient=lenient)
    snapshot = inventory.snapshot()
    try:
        result = allocate(
            snapshot, inventory.pending_claims, policy=policy, excluded=inventory.excluded_nodes
        )
    except UnsatisfiableError as exc:
        return "-", f"cannot allocate: {exc}"
    except CelEvaluationError as exc:
        return "-", f"selector error: {exc}"
    devices = [
        f"{r.request}={r.device}"
        for allocation in result.results
        for r in (allocation.devices.results if allocation.devices else None) or []
    ]
    return result.node or "(any)", ", ".join(devices)


def run_demo(examples: Path, policies: Sequence[str], out: TextIO, *, lenient: bool = False) -> int:
    """Print the table; 2 (naming the file, object and field) when an example is invalid."""
    inventory_dir = examples / INVENTORY
    if not inventory_dir.is_dir():
        print(f"dra-driver demo: {inventory_dir}: no such directory", file=sys.stderr)
        return 2
    scenarios = sorted(p for p in examples.iterdir() if p.is_dir() and p.name not in NOT_SCENARIOS)
    rows = [("SCENARIO", "POLICY", "NODE", "DEVICES (request=device)")]
    try:
        for scenario in scenarios:
            for policy in policies:
                node, devices = scenario_outcome(inventory_dir, scenario, policy, lenient=lenient)
                rows.append((scenario.name, policy, node, devices))
    except InvalidInputError as exc:
        print(f"dra-driver demo: error: {exc}", file=sys.stderr)
        return 2
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:3])]
        out.write("  ".join([*cells, row[3]]).rstrip() + "\n")
    return 0
