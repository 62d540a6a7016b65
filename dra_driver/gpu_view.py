"""The cluster's GPUs at a glance: one row per GPU this driver publishes, and who holds it.

``kubectl dra gpus`` (:mod:`dra_cli.gpus`) lists ResourceSlices, ResourceClaims and, for a
node selector, Nodes (one list per resource) and hands them to :func:`gpu_rows`; this
module decides what a row says, pure and without a cluster:

- a row per whole GPU (``type: gpu``) of the driver's slices, and per MIG device whose
  parent GPU is not published (a GPU in static MIG mode);
- who holds it: every allocated claim with a result on the GPU itself, on a share of it
  (``shareID``, consumable capacity) or on a MIG device of it (a placement whose
  ``parentUUID`` is the GPU's): the claim, its pods (``status.reservedFor``) and its age;
- ``SHARING``: ``exclusive``, ``N share(s)`` or the MIG profiles in use (``mig 1g.10gb x2``);
- ``HEALTH``: ``ok`` or the device's taints (``key=value:Effect``), from the slice;
- totals per node and per product (and per cluster when several are shown);
- with the clusters' :class:`~dra_driver.fragmentation.Fragmentation` (computed by the caller
  from the same lists), a ``fragmentation`` line per cluster and one per node in the totals,
  and a ``fragmentation`` list in the JSON.

A GPU is *free* when nobody holds any part of it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from api.resource_v1 import Device, ResourceClaim, ResourceSlice
from dra_driver.fragmentation import CLASSES, Fragmentation

__all__ = [
    "GpuRow",
    "Holder",
    "fragmentation_lines",
    "gpu_rows",
    "natural_key",
    "render_table",
    "rows_json",
    "totals",
]


@dataclass(frozen=True, slots=True)
class Holder:
    """One allocated claim's hold on (part of) a GPU."""

    claim: str
    """``namespace/name``"""
    pods: tuple[str, ...]
    created: str | None
    """The claim's creationTimestamp (RFC 3339), for its age."""
    what: str
    """``gpu``, ``share <id>`` or ``mig <profile> (<device>)``."""


@dataclass(slots=True)
class GpuRow:
    """One GPU (or MIG device without a published parent) of one cluster."""

    cluster: str
    node: str
    pool: str
    device: str
    type: str
    product: str
    memory: str
    uuid: str
    pci_bus_id: str
    numa_node: str
    multi: bool
    taints: tuple[str, ...]
    holders: list[Holder] = field(default_factory=list)

    @property
    def free(self) -> bool:
        return not self.holders

    @property
    def health(self) -> str:
        return ", ".join(self.taints) if self.taints else "ok"

    @property
    def sharing(self) -> str:
        migs = Counter(h.what.split()[1] for h in self.holders if h.what.startswith("mig "))
        if migs:
            return "mig " + ", ".join(f"{p} x{n}" for p, n in sorted(migs.items()))
        shares = sum(1 for h in self.holders if h.what.startswith("share "))
        if self.multi:
            return f"{shares} share(s)"
        return "exclusive"

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster or None,
            "node": self.node,
            "pool": self.pool,
            "device": self.device,
            "type": self.type,
            "product": self.product,
            "memory": self.memory,
            "uuid": self.uuid,
            "pciBusID": self.pci_bus_id or None,
            "numaNode": self.numa_node or None,
            "sharing": self.sharing,
            "health": self.health,
            "free": self.free,
            "holders": [
                {"claim": h.claim, "pods": list(h.pods), "created": h.created, "what": h.what}
                for h in self.holders
            ],
        }


def _attribute(device: Device, name: str) -> str:
    attribute = (device.attributes or {}).get(name)
    if attribute is None:
        return ""
    try:
        return str(attribute.value)
    except ValueError:  # no field set
        return ""


def _taint_text(device: Device) -> tuple[str, ...]:
    return tuple(
        f"{t.key}{'=' + t.value if t.value else ''}:{t.effect}" for t in device.taints or []
    )


def _row(cluster: str, node: str, pool: str, device: Device) -> GpuRow:
    memory = (device.capacity or {}).get("memory")
    return GpuRow(
        cluster=cluster,
        node=node,
        pool=pool,
        device=device.name,
        type=_attribute(device, "type"),
        product=_attribute(device, "productName"),
        memory=str(memory.value) if memory is not None else "",
        uuid=_attribute(device, "uuid"),
        pci_bus_id=_attribute(device, "resource.kubernetes.io/pciBusID"),
        numa_node=_attribute(device, "resource.kubernetes.io/numaNode"),
        multi=bool(device.allow_multiple_allocations),
        taints=_taint_text(device),
    )


def gpu_rows(
    slices: Iterable[ResourceSlice],
    claims: Iterable[ResourceClaim],
    *,
    driver_name: str,
    cluster: str = "",
) -> list[GpuRow]:
    """The rows of one cluster, sorted by node and device (see the module docstring)."""
    rows: dict[tuple[str, str], GpuRow] = {}
    by_uuid: dict[tuple[str, str], GpuRow] = {}
    migs: dict[tuple[str, str], tuple[Device, str]] = {}
    for slice_ in slices:
        spec = slice_.spec
        if spec.driver != driver_name:
            continue
        node = spec.node_name or "(cluster pool)"
        for device in spec.devices or []:
            kind = _attribute(device, "type")
            if kind == "gpu":
                row = _row(cluster, node, spec.pool.name, device)
                rows[(spec.pool.name, device.name)] = row
                by_uuid[(spec.pool.name, row.uuid)] = row
            elif kind == "mig":
                migs[(spec.pool.name, device.name)] = (device, node)
    mig_parent: dict[tuple[str, str], GpuRow] = {}
    for (pool, name), (device, node) in migs.items():
        parent = by_uuid.get((pool, _attribute(device, "parentUUID")))
        if parent is None:  # static MIG: the GPU itself is not published
            parent = rows[(pool, name)] = _row(cluster, node, pool, device)
        mig_parent[(pool, name)] = parent
    for claim in claims:
        allocation = claim.status.allocation if claim.status else None
        if allocation is None or allocation.devices is None:
            continue
        meta = claim.metadata
        ref = f"{meta.namespace}/{meta.name}"
        pods = tuple(
            sorted(
                r.name
                for r in (claim.status.reserved_for if claim.status else None) or []
                if r.resource == "pods"
            )
        )
        created = str(meta.creation_timestamp) if meta.creation_timestamp else None
        for result in allocation.devices.results or []:
            if result.driver != driver_name:
                continue
            key = (result.pool, result.device)
            if key in rows and rows[key].type == "gpu":
                row = rows[key]
                what = f"share {result.share_id}" if result.share_id else "gpu"
            elif key in mig_parent:
                row = mig_parent[key]
                device, _ = migs[key]
                what = f"mig {_attribute(device, 'profile') or '?'} ({result.device})"
            elif key in rows:
                row, what = rows[key], "gpu"
            else:
                continue  # a device that is not published (any more)
            row.holders.append(Holder(ref, pods, created, what))
    return sorted(rows.values(), key=lambda r: (r.cluster, r.node, natural_key(r.device)))


def natural_key(name: str) -> tuple[Any, ...]:
    """``gpu-2`` before ``gpu-10``."""
    parts: list[Any] = []
    for chunk in name.replace("-", " - ").split():
        parts.append((0, int(chunk), "") if chunk.isdigit() else (1, 0, chunk))
    return tuple(parts)


def _age(created: str | None, now: datetime) -> str:
    if not created:
        return "-"
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    seconds = max(int((now - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def totals(rows: Sequence[GpuRow]) -> dict[str, dict[str, dict[str, int]]]:
    """GPUs and free GPUs per node, per product and per cluster."""
    found: dict[str, dict[str, dict[str, int]]] = {
        "node": defaultdict(lambda: {"gpus": 0, "free": 0}),
        "product": defaultdict(lambda: {"gpus": 0, "free": 0}),
        "cluster": defaultdict(lambda: {"gpus": 0, "free": 0}),
    }
    for row in rows:
        for kind, key in (
            ("node", f"{row.cluster}/{row.node}" if row.cluster else row.node),
            ("product", row.product or "(unknown)"),
            ("cluster", row.cluster),
        ):
            found[kind][key]["gpus"] += 1
            found[kind][key]["free"] += int(row.free)
    return {kind: dict(values) for kind, values in found.items()}


def rows_json(
    rows: Sequence[GpuRow],
    errors: Mapping[str, str],
    fragmentation: Mapping[str, Fragmentation] | None = None,
) -> dict[str, Any]:
    """``-o json|yaml``: the rows, the totals, the clusters that could not be read and, per
    cluster (``cluster`` null for the only one), its fragmentation."""
    summary = totals(rows)
    if not any(r.cluster for r in rows) and not errors:
        summary.pop("cluster")
    return {
        "gpus": [r.to_json() for r in rows],
        "totals": summary,
        "fragmentation": [
            {"cluster": cluster or None, **found.to_json()}
            for cluster, found in sorted((fragmentation or {}).items())
        ],
        "errors": [{"cluster": c, "error": e} for c, e in sorted(errors.items())],
    }


def fragmentation_lines(fragmentation: Mapping[str, Fragmentation]) -> list[str]:
    """Per cluster: ``fragmentation: gpu 0.33 (...)``, then ``fragmentation by node: ...``."""
    lines: list[str] = []
    for cluster, found in sorted(fragmentation.items()):
        where = f" {cluster}" if cluster else ""
        lines.append(f"fragmentation{where}: {found.summary()}")
        nodes = [
            f"{n.node} " + " ".join(f"{kind} {n.ratio(kind):.2f}" for kind in CLASSES)
            for n in found.nodes
        ]
        if nodes:
            lines.append(f"fragmentation by node{where}: " + "; ".join(nodes))
    return lines


def render_table(
    rows: Sequence[GpuRow],
    *,
    wide: bool = False,
    errors: Mapping[str, str] | None = None,
    now: datetime | None = None,
    fragmentation: Mapping[str, Fragmentation] | None = None,
) -> str:
    """kubectl-like columns, one line per holder (a free GPU has one line), then totals
    and the clusters' fragmentation (:func:`fragmentation_lines`)."""
    now = now or datetime.now(UTC)
    clusters = any(r.cluster for r in rows) or bool(errors)
    header = ["NODE", "DEVICE", "PRODUCT", "MEMORY", "SHARING", "HEALTH", "CLAIM", "PODS", "AGE"]
    if wide:
        header += ["UUID", "PCI", "NUMA"]
    if clusters:
        header.insert(0, "CLUSTER")
    lines: list[list[str]] = [header]
    for row in rows:
        for index, holder in enumerate(row.holders or [None]):
            first = index == 0
            cells = [
                row.node if first else "",
                row.device if first else "",
                row.product if first else "",
                row.memory if first else "",
                row.sharing if first else "",
                row.health if first else "",
                holder.claim if holder else "<free>",
                ",".join(holder.pods) or "-" if holder else "-",
                _age(holder.created, now) if holder else "-",
            ]
            if wide:
                cells += (
                    [row.uuid, row.pci_bus_id or "-", row.numa_node or "-"]
                    if first
                    else [
                        "",
                        "",
                        "",
                    ]
                )
            if clusters:
                cells.insert(0, row.cluster if first else "")
            lines.append(cells)
    for cluster, error in sorted((errors or {}).items()):
        cells = ["" for _ in header]
        cells[0], cells[1] = cluster, f"<error: {error}>"
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines
    ]
    summary = totals(rows)
    text.append("")
    for kind in ("cluster", "node", "product") if clusters else ("node", "product"):
        parts = [
            f"{key or '-'} {v['free']}/{v['gpus']} free" for key, v in sorted(summary[kind].items())
        ]
        if parts:
            text.append(f"{kind}s: " + "; ".join(parts))
    text.extend(fragmentation_lines(fragmentation or {}))
    return "\n".join(text) + "\n"
