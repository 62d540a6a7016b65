"""The rows of ``dra-driver top`` (:mod:`dra_cli.top`): one kubelet plugin's metrics text made
rows, and the rows as a table or a document, without a cluster.

The rows come from the plugin's per-claim usage families
(:mod:`kubelet_plugin.usage.collector`), parsed with prometheus_client's parser:

- a row per (namespace, pod, container, claim, device) with the memory and utilisation
  series of those labels (``-`` where a series is absent: utilisation on MIG devices);
- a row per (device, reason) of the unattributed families, ``<unattributed: REASON>``;
- a note when the plugin serves none of the families (older than them) or when usage is
  ``unreadable`` (the plugin without the host's PIDs).

Totals per node count the memory in use, of it the unattributed, and the claims using a
device. A node whose plugin was read and shows nothing is ``idle``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "NO_USAGE_METRICS",
    "UNREADABLE_NOTE",
    "PluginProblem",
    "Report",
    "UsageRow",
    "memory_text",
    "node_totals",
    "parse_usage",
    "render_table",
    "rows_json",
]

MEMORY: Final = "dra_driver_gpu_memory_used_bytes"
UTILISATION: Final = "dra_driver_gpu_utilisation"
LOST_MEMORY: Final = "dra_driver_gpu_unattributed_memory_used_bytes"
LOST_UTILISATION: Final = "dra_driver_gpu_unattributed_utilisation"

NO_USAGE_METRICS: Final = (
    "serves no per-claim usage metrics (a plugin older than them): upgrade the chart"
)
UNREADABLE_NOTE: Final = (
    "GPU processes not mapped to pods: the plugin does not see the host's PIDs "
    "(set kubeletPlugin.hostPID=true in the chart)"
)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One row: a claim's container on a device, or usage of a device no claim was named
    for (``reason`` set, ``claim`` empty)."""

    cluster: str
    node: str
    namespace: str
    pod: str
    container: str
    claim: str
    device: str
    memory_bytes: float | None
    utilisation: float | None
    reason: str = ""
    product: str = ""

    def sort_key(self) -> tuple[Any, ...]:
        from dra_driver.gpu_view import natural_key

        return (
            self.cluster,
            natural_key(self.node),
            bool(self.reason),
            self.namespace,
            self.pod,
            self.container,
            self.claim,
            natural_key(self.device),
            self.reason,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster or None,
            "node": self.node,
            "namespace": self.namespace or None,
            "pod": self.pod or None,
            "container": self.container or None,
            "claim": self.claim or None,
            "device": self.device,
            "product": self.product or None,
            "memoryBytes": self.memory_bytes,
            "utilisation": self.utilisation,
            "unattributed": self.reason or None,
        }


@dataclass(frozen=True, slots=True)
class PluginProblem:
    """A plugin that could not be read (``error``) or that shows no usage (a note)."""

    cluster: str
    node: str
    pod: str
    message: str
    error: bool


@dataclass
class Report:
    rows: list[UsageRow] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)
    nodes: set[tuple[str, str]] = field(default_factory=set)
    """(cluster, node) of every plugin read, with or without usage."""


def parse_usage(text: str, *, cluster: str, node: str) -> tuple[list[UsageRow], str]:
    """The usage rows of one plugin's metrics text and a note ("" when none): the plugin
    serves no usage families, or attributed nothing for want of the host's PIDs.
    ValueError when the text is not Prometheus' text format."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {family.name: family for family in text_string_to_metric_families(text)}
    if MEMORY not in families and UTILISATION not in families:
        return [], NO_USAGE_METRICS
    claimed: dict[tuple[str, ...], dict[str, float]] = {}
    for name in (MEMORY, UTILISATION):
        for sample in families[name].samples if name in families else ():
            labels = sample.labels
            key = tuple(labels.get(k, "") for k in ("namespace", "pod", "container", "claim"))
            claimed.setdefault((*key, labels.get("device", "")), {})[name] = sample.value
    lost: dict[tuple[str, str], dict[str, float]] = {}
    for name in (LOST_MEMORY, LOST_UTILISATION):
        for sample in families[name].samples if name in families else ():
            key2 = (sample.labels.get("device", ""), sample.labels.get("reason", ""))
            lost.setdefault(key2, {})[name] = sample.value
    rows = [
        UsageRow(
            cluster, node, ns, pod, container, claim, device, v.get(MEMORY), v.get(UTILISATION)
        )
        for (ns, pod, container, claim, device), v in claimed.items()
    ]
    rows += [
        UsageRow(
            cluster,
            node,
            "",
            "",
            "",
            "",
            device,
            v.get(LOST_MEMORY),
            v.get(LOST_UTILISATION),
            reason=reason,
        )
        for (device, reason), v in lost.items()
    ]
    note = UNREADABLE_NOTE if any(reason == "unreadable" for _, reason in lost) else ""
    return rows, note


def memory_text(value: float | None) -> str:
    """Bytes as kubectl top shows memory: ``512Mi``, ``12.5Gi``; ``-`` for none."""
    if value is None:
        return "-"
    if value >= 1 << 30:
        return f"{value / (1 << 30):.1f}Gi"
    return f"{value / (1 << 20):.0f}Mi"


def _util_text(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def node_totals(report: Report) -> dict[str, dict[str, Any]]:
    """Per node read (``cluster/node`` with several clusters): memory in use, of it the
    unattributed memory, and the claims using a device."""
    several = any(cluster for cluster, _ in report.nodes)
    totals: dict[str, dict[str, Any]] = {}
    claims: dict[str, set[tuple[str, str]]] = {}
    from dra_driver.gpu_view import natural_key

    for cluster, node in sorted(report.nodes, key=lambda n: (n[0], natural_key(n[1]))):
        key = f"{cluster}/{node}" if several else node
        totals[key] = {"memoryBytes": 0.0, "unattributedMemoryBytes": 0.0, "claims": 0}
        claims[key] = set()
    for row in report.rows:
        key = f"{row.cluster}/{row.node}" if several else row.node
        if key not in totals:
            continue
        totals[key]["memoryBytes"] += row.memory_bytes or 0.0
        if row.reason:
            totals[key]["unattributedMemoryBytes"] += row.memory_bytes or 0.0
        else:
            claims[key].add((row.namespace, row.claim))
    for key, found in claims.items():
        totals[key]["claims"] = len(found)
    return totals


def rows_json(report: Report, errors: Mapping[str, str]) -> dict[str, Any]:
    """``-o json|yaml``: the rows, the totals per node, each plugin's note or error, and the
    clusters that could not be read."""
    return {
        "usage": [row.to_json() for row in report.rows],
        "totals": {"node": node_totals(report)},
        "plugins": [
            {
                "cluster": p.cluster or None,
                "node": p.node,
                "pod": p.pod,
                ("error" if p.error else "note"): p.message,
            }
            for p in report.problems
        ],
        "errors": [{"cluster": c, "error": e} for c, e in sorted(errors.items())],
    }


def render_table(
    report: Report, *, wide: bool = False, errors: Mapping[str, str] | None = None
) -> str:
    """kubectl-like columns, a line per row, a line per plugin note or error, then the
    totals per node."""
    clusters = (
        any(r.cluster for r in report.rows)
        or bool(errors)
        or any(cluster for cluster, _ in report.nodes)
    )
    header = ["NODE", "NAMESPACE", "POD", "CONTAINER", "CLAIM", "DEVICE", "MEMORY", "UTIL"]
    if wide:
        header.append("PRODUCT")
    if clusters:
        header.insert(0, "CLUSTER")
    lines: list[list[str]] = [header]
    for row in report.rows:
        cells = [
            row.node,
            row.namespace or "-",
            row.pod or "-",
            row.container or "-",
            f"<unattributed: {row.reason}>" if row.reason else row.claim,
            row.device,
            memory_text(row.memory_bytes),
            _util_text(row.utilisation),
        ]
        if wide:
            cells.append(row.product or "-")
        if clusters:
            cells.insert(0, row.cluster)
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [_aligned(line, widths) for line in lines]
    # A plugin's note or error, and a cluster's error, after its node (or cluster): as
    # wide as it needs, outside the columns.
    lead = 2 if clusters else 1
    for problem in report.problems:
        kind = "error" if problem.error else "note"
        cells = [problem.cluster, problem.node] if clusters else [problem.node]
        message = f"<{kind}: {problem.pod}: {problem.message}>"
        text.append(_aligned([*cells, message], [*widths[:lead], 0]))
    for cluster, error in sorted((errors or {}).items()):
        text.append(_aligned([cluster, f"<error: {error}>"], [widths[0], 0]))
    totals = node_totals(report)
    if totals:
        text.append("")
        parts = []
        for node, found in totals.items():
            if not found["memoryBytes"] and not found["claims"]:
                parts.append(f"{node} idle")
                continue
            part = f"{node} {memory_text(found['memoryBytes'])} by {found['claims']} claim(s)"
            if found["unattributedMemoryBytes"]:
                part += f", {memory_text(found['unattributedMemoryBytes'])} unattributed"
            parts.append(part)
        text.append("nodes: " + "; ".join(parts))
    return "\n".join(text) + "\n"


def _aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()
