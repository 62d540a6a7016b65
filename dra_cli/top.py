"""``dra-driver top`` / ``kubectl dra top``: live GPU usage per claim, from the kubelet plugins.

Per cluster: one list of the driver's kubelet plugin pods (in ``--namespace``, default
``dra-driver``; the chart labels them ``app.kubernetes.io/name=<release>-kubelet-plugin``),
then each plugin's ``/metrics`` read through the API server's pod proxy
(``/api/v1/namespaces/NS/pods/POD:PORT/proxy/metrics``, the port the pod names
``metrics``), a few at a time. The caller needs ``list pods`` and ``get pods/proxy`` in that
namespace. With ``-o wide|json|yaml`` one list of the driver's ResourceSlices adds each
device's product.

What the rows say comes from the plugin's per-claim usage metrics
(:mod:`kubelet_plugin.usage.collector`), as sampled at the scrape:

- a row per (pod, container, claim, device): the device memory the container's processes
  use and their share of the device's SM time (``-`` where NVML gives none: MIG devices);
- a row per (device, reason) for usage no claim could be named for (``<unattributed:
  REASON>``; the reasons are :mod:`kubelet_plugin.usage.attribution`'s);
- a row per plugin that could not be read (not running, no metrics port, the proxy's
  error), and per plugin that serves no usage metrics (a plugin older than them), with
  what to do: neither fails the command;
- totals per node (and per cluster with several).

A plugin pod that sees no host PIDs (chart ``kubeletPlugin.hostPID: false``, the default)
cannot map processes to pods: its usage shows as ``<unattributed: unreadable>`` and a note
says so.

Exit codes: 0 shown; 1 no cluster could be read, or no plugin pod found in any;
2 invalid flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from api.errors import ExitCode

__all__ = [
    "PluginPod",
    "UsageRow",
    "add_top_arguments",
    "parse_usage",
    "plugin_pods",
    "render_table",
    "rows_json",
    "run_top",
]

DEFAULT_NAMESPACE: Final = "dra-driver"
#: The chart names the DaemonSet, and labels its pods, ``<release>-kubelet-plugin``.
PLUGIN_SUFFIX: Final = "-kubelet-plugin"
NAME_LABEL: Final = "app.kubernetes.io/name"
METRICS_PORT_NAME: Final = "metrics"
MEMORY: Final = "dra_driver_gpu_memory_used_bytes"
UTILISATION: Final = "dra_driver_gpu_utilisation"
LOST_MEMORY: Final = "dra_driver_gpu_unattributed_memory_used_bytes"
LOST_UTILISATION: Final = "dra_driver_gpu_unattributed_utilisation"
#: Plugins scraped at once per cluster.
SCRAPERS: Final = 16

NO_USAGE_METRICS: Final = (
    "serves no per-claim usage metrics (a plugin older than them): upgrade the chart"
)
UNREADABLE_NOTE: Final = (
    "GPU processes not mapped to pods: the plugin does not see the host's PIDs "
    "(set kubeletPlugin.hostPID=true in the chart)"
)

#: Reads ``path`` of a pod's port through the pod proxy: (namespace, pod, port, path).
Scrape = Callable[[str, str, int, str], str]


def add_top_arguments(sub: argparse.ArgumentParser) -> None:
    from dra_cli.gpus import add_cluster_arguments

    add_cluster_arguments(sub)
    sub.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get("DRA_DRIVER_NAMESPACE", DEFAULT_NAMESPACE),
        help="the driver's namespace, where its kubelet plugin pods run (env "
        f"DRA_DRIVER_NAMESPACE, as the controller's; default {DEFAULT_NAMESPACE})",
    )
    sub.add_argument(
        "--plugin-selector",
        help=f"label selector of the kubelet plugin pods (default: pods whose {NAME_LABEL} "
        f"ends in {PLUGIN_SUFFIX}, as the chart labels them)",
    )
    sub.add_argument("--node", action="append", default=[], help="only this node (repeatable)")
    sub.add_argument(
        "--namespace-filter",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="only the claims of this workload namespace (repeatable; default: every "
        "namespace, and unattributed usage)",
    )
    sub.add_argument(
        "-o",
        "--output",
        choices=("table", "wide", "json", "yaml"),
        default="table",
        help="table (default), wide (with each device's product), json or yaml",
    )


@dataclass(frozen=True, slots=True)
class PluginPod:
    """A kubelet plugin pod: where it runs and the port its metrics are served on."""

    namespace: str
    name: str
    node: str
    port: int | None
    phase: str


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


def plugin_pods(items: Iterable[Mapping[str, Any]], *, suffix_rule: bool) -> list[PluginPod]:
    """The plugin pods among listed pods (with ``suffix_rule``: those named as the chart
    names them), each with its ``metrics`` container port if it has one."""
    found = []
    for pod in items:
        meta = pod.get("metadata") or {}
        if suffix_rule and not str((meta.get("labels") or {}).get(NAME_LABEL, "")).endswith(
            PLUGIN_SUFFIX
        ):
            continue
        spec = pod.get("spec") or {}
        ports = [
            port.get("containerPort")
            for container in spec.get("containers") or []
            for port in container.get("ports") or []
            if port.get("name") == METRICS_PORT_NAME
        ]
        found.append(
            PluginPod(
                namespace=str(meta.get("namespace") or ""),
                name=str(meta.get("name") or ""),
                node=str(spec.get("nodeName") or "<unscheduled>"),
                port=int(ports[0]) if ports else None,
                phase=str((pod.get("status") or {}).get("phase") or "Unknown"),
            )
        )
    return found


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


def read_cluster_usage(
    client: Any,
    scrape: Scrape,
    *,
    cluster: str,
    namespace: str,
    selector: str | None,
    nodes: Sequence[str],
) -> Report:
    """One cluster's report: its plugin pods listed once, each read through ``scrape``.
    ApiError when the pods cannot be listed; a plugin that cannot be read is a problem of
    the report. LookupError when no plugin pod is found."""
    from agent_kit.kube import ApiError

    listed = client.list("pods", namespace=namespace, label_selector=selector or NAME_LABEL)
    pods = plugin_pods(listed.items, suffix_rule=selector is None)
    if not pods:
        how = f"selector {selector}" if selector else f"{NAME_LABEL}=*{PLUGIN_SUFFIX}"
        raise LookupError(
            f"no kubelet plugin pod in namespace {namespace} ({how}): is the chart installed "
            "there? --namespace names the driver's namespace"
        )
    pods = [p for p in pods if not nodes or p.node in nodes]
    report = Report()

    def read(pod: PluginPod) -> tuple[PluginPod, list[UsageRow], str, bool]:
        if pod.phase != "Running":
            return pod, [], f"plugin pod is {pod.phase}", True
        if pod.port is None:
            return pod, [], "no metrics port (the chart's metrics.enabled is false)", True
        try:
            text = scrape(pod.namespace, pod.name, pod.port, "metrics")
            rows, note = parse_usage(text, cluster=cluster, node=pod.node)
        except ApiError as err:
            return pod, [], str(err), True
        except ValueError as err:
            return pod, [], f"metrics unreadable: {err}", True
        return pod, rows, note, False

    with ThreadPoolExecutor(max_workers=max(1, min(SCRAPERS, len(pods)))) as pool:
        for pod, rows, message, failed in pool.map(read, pods):
            if not failed:
                report.nodes.add((cluster, pod.node))
            report.rows.extend(rows)
            if message:
                where = f"{pod.namespace}/{pod.name}"
                report.problems.append(PluginProblem(cluster, pod.node, where, message, failed))
    return report


def device_products(client: Any, driver_name: str) -> dict[tuple[str, str], str]:
    """(node, device name) to the device's ``productName``, from one list of the driver's
    ResourceSlices (GPUs and MIG devices alike)."""
    slices = client.list("resourceslices", field_selector=f"spec.driver={driver_name}")
    products: dict[tuple[str, str], str] = {}
    for item in slices.items:
        spec = item.get("spec") or {}
        node = str(spec.get("nodeName") or (spec.get("pool") or {}).get("name") or "")
        for device in spec.get("devices") or []:
            value = ((device.get("attributes") or {}).get("productName") or {}).get("string")
            if value:
                products[(node, str(device.get("name")))] = str(value)
    return products


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
    for cluster, node in sorted(report.nodes):
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


def run_top(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    prog: str = "dra-driver",
    clients: Mapping[str | None, tuple[Any, Scrape]] | None = None,
) -> int:
    """Print the live usage of the chosen clusters; ``clients`` (tests) maps a context
    (None: the current one) to a ClusterClient and a scrape function instead of loading
    the kubeconfig."""
    from agent_kit.kube import ApiError, KubeConfigError, KubernetesClient, load_api_client
    from dra_cli.gpus import cluster_contexts

    out = out or sys.stdout
    try:
        kubeconfig, contexts = (None, list(clients)) if clients else cluster_contexts(args)
    except (ValueError, KubeConfigError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return ExitCode.INVALID
    several = len(contexts) > 1 or args.all_contexts
    report = Report()
    errors: dict[str, str] = {}
    for context in contexts:
        label = context or "(current)"
        try:
            if clients is not None:
                client, scrape = clients[context]
            else:
                client = KubernetesClient(load_api_client(kubeconfig, context=context))
                scrape = client.get_pod_proxy
            found = read_cluster_usage(
                client,
                scrape,
                cluster=label if several else "",
                namespace=args.namespace,
                selector=args.plugin_selector,
                nodes=args.node,
            )
            products = device_products(client, args.driver_name) if args.output != "table" else {}
        except (ApiError, KubeConfigError, LookupError) as err:
            errors[label] = str(err)
            continue
        report.nodes |= found.nodes
        report.problems.extend(found.problems)
        report.rows.extend(
            _with_product(row, products)
            for row in found.rows
            if not args.namespace_filter or row.namespace in args.namespace_filter
        )
    if errors and not several:
        (error,) = errors.values()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return ExitCode.FAILED
    report.rows.sort(key=UsageRow.sort_key)
    report.problems.sort(key=lambda p: (p.cluster, p.node, p.pod))
    if args.output in ("json", "yaml"):
        document = rows_json(report, errors)
        if args.output == "json":
            json.dump(document, out, indent=2)
            out.write("\n")
        else:
            import yaml

            yaml.safe_dump(document, out, sort_keys=False)
    else:
        out.write(render_table(report, wide=args.output == "wide", errors=errors))
    return ExitCode.FAILED if errors and len(errors) == len(contexts) else ExitCode.OK


def _with_product(row: UsageRow, products: Mapping[tuple[str, str], str]) -> UsageRow:
    from dataclasses import replace

    product = products.get((row.node, row.device), "")
    return replace(row, product=product) if product else row
