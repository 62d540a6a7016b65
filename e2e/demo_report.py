"""What ``make demo`` prints: one row per pod, from the objects the API server stored.

Pure functions over raw JSON (pods, claims, CDI specs, pod logs), so the table
is the same whatever produced the objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Environment entries of the container worth showing: the GPUs it may use and how they are shared.
SHOWN_ENV_PREFIXES = ("DRA_GPU_",)
SHOWN_ENV_SUFFIXES = (
    "_UUID",
    "_SHARING_STRATEGY",
    "_TIME_SLICE_INTERVAL",
    "_MPS_ACTIVE_THREAD_PERCENTAGE",
)

HEADER = ("POD", "CLAIM", "PLACED BY", "NODE", "DEVICES", "CDI IDS", "CONTAINER SAW")


@dataclass(frozen=True)
class PodRow:
    """One line of the demo's table."""

    pod: str
    claims: tuple[str, ...]
    placed_by: str
    node: str
    devices: tuple[str, ...]
    cdi_ids: tuple[str, ...]
    saw: tuple[str, ...]

    def cells(self) -> tuple[tuple[str, ...], ...]:
        """The row's cells, each a tuple of lines (one value a line; ``-`` for none)."""
        return tuple(
            values or ("-",)
            for values in (
                (self.pod,),
                self.claims,
                (self.placed_by,),
                (self.node,) if self.node else (),
                self.devices,
                self.cdi_ids,
                self.saw,
            )
        )


def claim_names(pod: Mapping[str, Any]) -> list[str]:
    """The ResourceClaims a pod uses: named ones, and those made from its templates (once made)."""
    spec = pod.get("spec") or {}
    generated = {
        s.get("name"): s.get("resourceClaimName")
        for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
    }
    names: list[str] = []
    for entry in spec.get("resourceClaims") or []:
        name = entry.get("resourceClaimName") or generated.get(entry.get("name"))
        if name:
            names.append(str(name))
    return names


def placed_by(claim: Mapping[str, Any], driver: str) -> str:
    """``controller`` when the controller allocated the claim (its placed-for annotation),
    ``scheduler`` for any other allocation, ``-`` when the claim is not allocated."""
    if not (claim.get("status") or {}).get("allocation"):
        return "-"
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    return "controller" if f"{driver}/placed-for" in annotations else "scheduler"


def allocated_devices(claim: Mapping[str, Any]) -> list[str]:
    """``pool/device`` of every allocated device of the claim."""
    allocation = (claim.get("status") or {}).get("allocation") or {}
    results = (allocation.get("devices") or {}).get("results") or []
    return [f"{r['pool']}/{r['device']}" for r in results]


def devices_held_twice(claims: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``pool/device`` -> names of the claims holding it whole, where more than one does.

    Results with ``adminAccess`` or a ``shareID`` (a share of the device) are not whole
    holdings. Empty when every device belongs to at most one claim, which is what the
    controller's confirm step guarantees for the claims it placed.
    """
    holders: dict[str, list[str]] = {}
    for claim in claims:
        name = str((claim.get("metadata") or {}).get("name"))
        allocation = (claim.get("status") or {}).get("allocation") or {}
        for result in (allocation.get("devices") or {}).get("results") or []:
            if result.get("adminAccess") or result.get("shareID"):
                continue
            device = f"{result['pool']}/{result['device']}"
            if name not in holders.setdefault(device, []):
                holders[device].append(name)
    return {device: names for device, names in holders.items() if len(names) > 1}


def cdi_device_ids(specs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The fully qualified CDI device IDs (``kind=name``) the specs define."""
    return [f"{spec['kind']}={d['name']}" for spec in specs for d in spec.get("devices") or []]


def log_sections(log: str) -> dict[str, list[str]]:
    """The lines between ``--- NAME`` markers that the demo's containers print, by NAME."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in log.splitlines():
        if line.startswith("--- "):
            current = line[4:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def container_view(log: str) -> list[str]:
    """What the container saw of its GPUs: one line ``/dev: nvidia0 nvidiactl ...`` (its
    ``/dev/nvidia*`` entries, if any), then the GPU environment entries, sorted."""
    sections = log_sections(log)
    nodes = sorted(e for e in sections.get("dev", []) if e.startswith("nvidia"))
    devices = [f"/dev: {' '.join(nodes)}"] if nodes else []
    env = sorted(
        e
        for e in sections.get("env", [])
        if e.startswith(SHOWN_ENV_PREFIXES) and e.partition("=")[0].endswith(SHOWN_ENV_SUFFIXES)
    )
    return devices + env


def format_table(header: Sequence[str], rows: Iterable[Sequence[Sequence[str]]]) -> str:
    """A text table: each cell is a list of lines, columns padded to their widest line,
    the last column not padded, one blank-free block of lines per row."""
    grid: list[list[str]] = [list(header)]
    for row in rows:
        height = max((len(cell) for cell in row), default=1)
        grid += [[cell[i] if i < len(cell) else "" for cell in row] for i in range(height)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(header) - 1)]
    out = []
    for line in grid:
        cells = [text.ljust(widths[i]) for i, text in enumerate(line[:-1])]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    return "\n".join(out)
