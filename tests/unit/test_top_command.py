"""``dra-driver top``: live usage per claim from the kubelet plugins' metrics, each read
through the pod proxy (the in-memory API server lists the pods and slices; the metrics text
is what the plugin's own usage families expose, so a renamed label or family breaks here)."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from agent_kit.kube import UnavailableError
from api.resource_v1 import dump
from dra_cli.top import add_top_arguments, run_top
from dra_cli.usage_view import (
    NO_USAGE_METRICS,
    UNREADABLE_NOTE,
    memory_text,
    parse_usage,
)
from dra_driver.discovery.mock import MockBackend
from dra_driver.slices import build_slices
from kubelet_plugin.usage.collector import usage_families
from tests.fakes.cluster import FakeCluster

DRIVER = "gpu.dra-driver.io"
GIB = 1 << 30
MIG = "gpu-0-mig-1g10gb-19-0"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_top_arguments(parser)
    return parser.parse_args(list(argv))


class _Families:
    """A registry collector exposing the plugin's usage families with the given series."""

    def __init__(
        self,
        claimed: Mapping[tuple[str, str, str, str, str], tuple[float, float | None]],
        lost: Mapping[tuple[str, str], tuple[float, float | None]],
    ) -> None:
        self.claimed, self.lost = claimed, lost

    def collect(self) -> list[GaugeMetricFamily]:
        memory, utilisation, lost_memory, lost_utilisation = families = usage_families()
        for labels, (used, util) in self.claimed.items():
            memory.add_metric(list(labels), used)
            if util is not None:
                utilisation.add_metric(list(labels), util)
        for device_reason, (used, util) in self.lost.items():
            lost_memory.add_metric(list(device_reason), used)
            if util is not None:
                lost_utilisation.add_metric(list(device_reason), util)
        return list(families)


def _exposition(
    claimed: Mapping[tuple[str, str, str, str, str], tuple[float, float | None]],
    lost: Mapping[tuple[str, str], tuple[float, float | None]] | None = None,
) -> str:
    registry = CollectorRegistry()
    registry.register(_Families(claimed, lost or {}))
    return generate_latest(registry).decode()


OLD_PLUGIN = "# HELP dra_driver_prepared_devices x\n# TYPE dra_driver_prepared_devices gauge\n"


def _plugin_pod(
    name: str, node: str, *, port: int | None = 9400, phase: str = "Running", release: str = "r"
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "plugin", "image": "i"}
    if port is not None:
        container["ports"] = [{"name": "liveness", "containerPort": 9401}]
        container["ports"].append({"name": "metrics", "containerPort": port})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "dra-driver",
            "labels": {"app.kubernetes.io/name": f"{release}-kubelet-plugin"},
        },
        "spec": {"nodeName": node, "containers": [container]},
        "status": {"phase": phase},
    }


class _Proxy:
    """The pod proxy: each pod's metrics text, or an UnavailableError as the API server
    answers for a pod it cannot dial; records what was read."""

    def __init__(self, texts: Mapping[str, str]) -> None:
        self.texts = texts
        self.read: list[tuple[str, str, int, str]] = []

    def __call__(self, namespace: str, pod: str, port: int, path: str) -> str:
        self.read.append((namespace, pod, port, path))
        if pod not in self.texts:
            raise UnavailableError(
                f"get pods {namespace}/{pod}:{port}/proxy/{path}: error trying to reach "
                "service: dial tcp 10.0.0.9:9400: connect: connection refused"
            )
        return self.texts[pod]


def _cluster(*pods: dict[str, Any]) -> FakeCluster:
    cluster = FakeCluster()
    for slice_ in build_slices(MockBackend("node-a", "2xH100-80GB").discover(), driver_name=DRIVER):
        cluster.create("resourceslices", dump(slice_))
    for pod in pods:
        cluster.create("pods", pod)
    # Another component's pod in the namespace: not a plugin.
    other = _plugin_pod("ctl-0", "node-a", release="x")
    other["metadata"]["labels"]["app.kubernetes.io/name"] = "r-controller"
    cluster.create("pods", other)
    return cluster


NODE_A = _exposition(
    {
        ("team-b", "train-0", "main", "train", "gpu-1"): (30 * GIB, 0.5),
        ("team-a", "infer-0", "server", "infer", MIG): (4 * GIB, None),
        ("team-a", "infer-0", "sidecar", "infer", MIG): (GIB / 2, None),
    },
    {("gpu-1", "not-in-a-pod"): (GIB, 0.1)},
)


def _run(*argv: str, clients: Mapping[str | None, tuple[Any, Any]]) -> tuple[int, str, Any]:
    out = io.StringIO()
    code = run_top(_args(*argv), out=out, clients=clients)
    text = out.getvalue()
    parsed = json.loads(text) if "json" in argv and text else None
    return code, text, parsed


def test_a_row_per_claims_container_and_device_and_unattributed_usage_apart() -> None:
    cluster = _cluster(_plugin_pod("p-a", "node-a"))
    proxy = _Proxy({"p-a": NODE_A})
    code, _, doc = _run("-o", "json", clients={None: (cluster, proxy)})
    assert code == 0
    assert proxy.read == [("dra-driver", "p-a", 9400, "metrics")]
    rows = [
        (r["namespace"], r["pod"], r["container"], r["claim"], r["device"], r["memoryBytes"])
        for r in doc["usage"]
    ]
    assert rows == [
        ("team-a", "infer-0", "server", "infer", MIG, 4 * GIB),
        ("team-a", "infer-0", "sidecar", "infer", MIG, GIB / 2),
        ("team-b", "train-0", "main", "train", "gpu-1", 30 * GIB),
        (None, None, None, None, "gpu-1", GIB),
    ]
    by_claim = {r["claim"]: r for r in doc["usage"]}
    assert by_claim["train"]["utilisation"] == 0.5
    assert by_claim["infer"]["utilisation"] is None, "NVML samples no MIG device per process"
    assert doc["usage"][-1]["unattributed"] == "not-in-a-pod"
    assert {r["product"] for r in doc["usage"]} == {"NVIDIA H100 80GB HBM3"}
    assert doc["totals"]["node"] == {
        "node-a": {"memoryBytes": 35.5 * GIB, "unattributedMemoryBytes": GIB, "claims": 2}
    }
    assert doc["plugins"] == [] and doc["errors"] == []


def test_the_table_is_aligned_with_totals_per_node() -> None:
    cluster = _cluster(_plugin_pod("p-a", "node-a"), _plugin_pod("p-b", "node-b"))
    proxy = _Proxy({"p-a": NODE_A, "p-b": _exposition({})})
    code, text, _ = _run(clients={None: (cluster, proxy)})
    assert code == 0
    lines = text.splitlines()
    header = lines[0]
    columns = ["NODE", "NAMESPACE", "POD", "CONTAINER", "CLAIM", "DEVICE", "MEMORY", "UTIL"]
    assert header.split() == columns
    starts = [header.index(c) for c in columns]
    body = lines[1 : lines.index("")]
    table = []
    for line in body:
        bounds = [*starts[1:], len(line) + 1]
        table.append([line[a:b].strip() for a, b in zip(starts, bounds, strict=True)])
    assert table == [
        ["node-a", "team-a", "infer-0", "server", "infer", MIG, "4.0Gi", "-"],
        ["node-a", "team-a", "infer-0", "sidecar", "infer", MIG, "512Mi", "-"],
        ["node-a", "team-b", "train-0", "main", "train", "gpu-1", "30.0Gi", "50%"],
        ["node-a", "-", "-", "-", "<unattributed: not-in-a-pod>", "gpu-1", "1.0Gi", "10%"],
    ]
    # node-b runs a plugin whose GPUs no process uses: in the totals, with nothing in use.
    assert lines[-1] == ("nodes: node-a 35.5Gi by 2 claim(s), 1.0Gi unattributed; node-b idle")


def test_plugins_that_cannot_be_read_are_rows_not_a_failed_command() -> None:
    cluster = _cluster(
        _plugin_pod("p-a", "node-a"),
        _plugin_pod("p-down", "node-b"),
        _plugin_pod("p-old", "node-c"),
        _plugin_pod("p-nometrics", "node-d", port=None),
        _plugin_pod("p-pending", "node-e", phase="Pending"),
        _plugin_pod("p-garbled", "node-f"),
    )
    proxy = _Proxy({"p-a": NODE_A, "p-old": OLD_PLUGIN, "p-garbled": "{not metrics"})
    code, text, _ = _run(clients={None: (cluster, proxy)})
    assert code == 0
    tail = [
        line.split(None, 1) for line in text.splitlines() if "<error:" in line or "<note:" in line
    ]
    assert {node: message for node, message in tail} == {
        "node-b": "<error: dra-driver/p-down: get pods dra-driver/p-down:9400/proxy/metrics: "
        "error trying to reach service: dial tcp 10.0.0.9:9400: connect: connection refused>",
        "node-c": f"<note: dra-driver/p-old: {NO_USAGE_METRICS}>",
        "node-d": "<error: dra-driver/p-nometrics: no metrics port (the chart's "
        "metrics.enabled is false)>",
        "node-e": "<error: dra-driver/p-pending: plugin pod is Pending>",
        "node-f": tail[-1][1],
    }
    assert tail[-1][1].startswith("<error: dra-driver/p-garbled: metrics unreadable: ")
    # Neither a pod that does not run nor one without a port is dialled.
    assert {pod for _, pod, _, _ in proxy.read} == {"p-a", "p-down", "p-old", "p-garbled"}
    # The old plugin was read: its node is in the totals, the others' are not.
    nodes = text.splitlines()[-1]
    assert "node-c idle" in nodes and "node-b" not in nodes


def test_without_the_hosts_pids_the_plugin_says_what_to_set() -> None:
    unreadable = _exposition({}, {("gpu-0", "unreadable"): (8 * GIB, 0.9)})
    rows, note = parse_usage(unreadable, cluster="", node="node-a")
    assert note == UNREADABLE_NOTE and "hostPID=true" in note
    assert [(r.reason, r.device, r.memory_bytes, r.utilisation) for r in rows] == [
        ("unreadable", "gpu-0", 8 * GIB, 0.9)
    ]
    cluster = _cluster(_plugin_pod("p-a", "node-a"))
    code, _, doc = _run("-o", "json", clients={None: (cluster, _Proxy({"p-a": unreadable}))})
    assert code == 0
    assert doc["plugins"] == [
        {"cluster": None, "node": "node-a", "pod": "dra-driver/p-a", "note": UNREADABLE_NOTE}
    ]


def test_node_and_namespace_filters() -> None:
    cluster = _cluster(_plugin_pod("p-a", "node-a"), _plugin_pod("p-b", "node-b"))
    proxy = _Proxy({"p-a": NODE_A, "p-b": NODE_A})
    code, _, doc = _run(
        "--node",
        "node-a",
        "--namespace-filter",
        "team-b",
        "-o",
        "json",
        clients={None: (cluster, proxy)},
    )
    assert code == 0
    assert [p for _, p, _, _ in proxy.read] == ["p-a"], "only the chosen node's plugin is read"
    assert [(r["node"], r["claim"]) for r in doc["usage"]] == [("node-a", "train")]


def test_plugin_selector_and_namespace_flags() -> None:
    cluster = _cluster(_plugin_pod("p-a", "node-a"))
    relabelled = _plugin_pod("mine", "node-b")
    relabelled["metadata"]["namespace"] = "gpu-system"
    relabelled["metadata"]["labels"] = {"app": "gpu-plugin"}
    cluster.create("pods", relabelled)
    proxy = _Proxy({"mine": NODE_A})
    code, _, doc = _run(
        "-n",
        "gpu-system",
        "--plugin-selector",
        "app=gpu-plugin",
        "-o",
        "json",
        clients={None: (cluster, proxy)},
    )
    assert code == 0 and proxy.read == [("gpu-system", "mine", 9400, "metrics")]
    assert {r["node"] for r in doc["usage"]} == {"node-b"}


def test_no_plugin_pod_is_an_error_naming_the_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    cluster = _cluster()
    code, text, _ = _run("-n", "gpu", clients={None: (cluster, _Proxy({}))})
    assert code == 1 and text == ""
    err = capsys.readouterr().err
    assert "no kubelet plugin pod in namespace gpu" in err and "--namespace" in err


def test_several_clusters_get_a_column_and_a_bad_one_is_one_error_row() -> None:
    class Unreachable:
        def list(self, *args: Any, **kwargs: Any) -> Any:
            raise UnavailableError("list pods: connection refused")

    good = _cluster(_plugin_pod("p-a", "node-a"))
    clients: dict[str | None, tuple[Any, Any]] = {
        "prod": (good, _Proxy({"p-a": NODE_A})),
        "lab": (Unreachable(), _Proxy({})),
    }
    code, text, _ = _run("-o", "wide", clients=clients)
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["CLUSTER", "NODE"] and lines[0].split()[-1] == "PRODUCT"
    assert lines[1].split()[:2] == ["prod", "node-a"]
    assert "NVIDIA H100 80GB HBM3" in lines[1]
    assert any(
        line.split(None, 1) == ["lab", "<error: list pods: connection refused>"] for line in lines
    )
    assert lines[-1].startswith("nodes: prod/node-a 35.5Gi by 2 claim(s)")
    code, text, _ = _run("-o", "yaml", clients={"lab": clients["lab"]})
    assert code == 1 and text == ""
    code, text, _ = _run("-o", "yaml", clients=clients)
    assert yaml.safe_load(text)["errors"] == [
        {"cluster": "lab", "error": "list pods: connection refused"}
    ]


def test_memory_reads_as_kubectl_top_writes_it() -> None:
    assert [memory_text(v) for v in (None, 0, 300 << 20, 1.5 * GIB)] == [
        "-",
        "0Mi",
        "300Mi",
        "1.5Gi",
    ]


def test_the_command_line_runs_top(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from dra_cli.main import main

    missing = tmp_path / "no-such-kubeconfig"
    assert main(["top", "--kubeconfig", str(missing)], prog="kubectl dra") == 1
    err = capsys.readouterr().err
    assert err.startswith("kubectl dra: error: ") and "no-such-kubeconfig" in err
