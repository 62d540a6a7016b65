"""``dra-driver top`` / ``kubectl dra top``: live GPU usage per claim, from the kubelet plugins.

Per cluster: one list of the driver's kubelet plugin pods (in ``--namespace``, default
``dra-driver``; the chart labels them ``app.kubernetes.io/name=<release>-kubelet-plugin``),
then each plugin's ``/metrics`` read through the API server's pod proxy
(``/api/v1/namespaces/NS/pods/POD:PORT/proxy/metrics``, the port the pod names
``metrics``), a few at a time. The caller needs ``list pods`` and ``get pods/proxy`` in that
namespace. With ``-o wide|json|yaml`` one list of the driver's ResourceSlices adds each
device's product.

What the rows say (:mod:`dra_cli.usage_view`) comes from each plugin's per-claim usage
metrics as sampled at the scrape: a row per pod, container, claim and device, a row per
device and reason for usage no claim could be named for, a row per plugin that could not be
read (not running, no metrics port, the proxy's error) or that shows no usage (older than
the metrics, or without the host's PIDs: ``kubeletPlugin.hostPID``), and totals per node.
None of those rows fails the command.

Exit codes: 0 shown; 1 no cluster could be read, or no plugin pod found in any;
2 invalid flags.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Final, TextIO

from api.errors import ExitCode
from dra_cli.output import write_document
from dra_cli.usage_view import (
    PluginProblem,
    Report,
    UsageRow,
    parse_usage,
    render_table,
    rows_json,
)

__all__ = [
    "PluginPod",
    "add_top_arguments",
    "device_products",
    "plugin_pods",
    "read_cluster_usage",
    "run_top",
]

DEFAULT_NAMESPACE: Final = "dra-driver"
#: The chart names the DaemonSet, and labels its pods, ``<release>-kubelet-plugin``.
PLUGIN_SUFFIX: Final = "-kubelet-plugin"
NAME_LABEL: Final = "app.kubernetes.io/name"
METRICS_PORT_NAME: Final = "metrics"
#: Plugins scraped at once per cluster.
SCRAPERS: Final = 16

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
    from agent_kit.kube import ApiError, KubeConfigError
    from dra_cli.gpus import Clusters, connect

    out = out or sys.stdout
    clusters = Clusters.chosen(args, list(clients) if clients else None, prog)
    if isinstance(clusters, int):
        return clusters
    report = Report()
    for context in clusters.contexts:
        try:
            if clients is not None:
                client, scrape = clients[context]
            else:
                client = connect(clusters.kubeconfig, context)
                scrape = client.get_pod_proxy
            found = read_cluster_usage(
                client,
                scrape,
                cluster=clusters.column(context),
                namespace=args.namespace,
                selector=args.plugin_selector,
                nodes=args.node,
            )
            products = device_products(client, args.driver_name) if args.output != "table" else {}
        except (ApiError, KubeConfigError, LookupError) as err:
            clusters.errors[clusters.label(context)] = str(err)
            continue
        report.nodes |= found.nodes
        report.problems.extend(found.problems)
        report.rows.extend(
            _with_product(row, products)
            for row in found.rows
            if not args.namespace_filter or row.namespace in args.namespace_filter
        )
    failed = clusters.single_failure(prog)
    if failed is not None:
        return failed
    report.rows.sort(key=UsageRow.sort_key)
    report.problems.sort(key=lambda p: (p.cluster, p.node, p.pod))
    if args.output in ("json", "yaml"):
        write_document(rows_json(report, clusters.errors), args.output, out)
    else:
        out.write(render_table(report, wide=args.output == "wide", errors=clusters.errors))
    return ExitCode.FAILED if clusters.none_read() else ExitCode.OK


def _with_product(row: UsageRow, products: Mapping[tuple[str, str], str]) -> UsageRow:
    product = products.get((row.node, row.device), "")
    return replace(row, product=product) if product else row
