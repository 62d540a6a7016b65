"""What the placement benchmark measures: pod rates and latencies, the controller's CPU
time and resident memory (from /proc), the API server's request counters, an optional
py-spy sample of the controller, and the summary over runs."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "api_requests",
    "cpu_seconds",
    "measure",
    "memory_mib",
    "percentile",
    "profiler",
    "ratios",
    "request_rates",
    "summary",
]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak (VmHWM) of a running process, MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mib": found.get("VmRSS", 0.0), "peak_rss_mib": found.get("VmHWM", 0.0)}


def api_requests(kube: Any) -> dict[str, float]:
    """The API server's own request counters (``apiserver_request_total``), summed per
    verb and resource, watches left out (a watch is one long request)."""
    api_client = kube._api_client
    method, url, headers, body, _ = api_client.param_serialize(
        "GET", "/metrics", auth_settings=["BearerToken"]
    )
    response = api_client.call_api(method, url, header_params=headers, body=body)
    response.read()
    totals: dict[str, float] = {}
    for line in response.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
        fields = dict(part.split("=", 1) for part in labels.split(",") if "=" in part)
        verb = fields.get("verb", "").strip('"')
        if verb in ("WATCH", "CONNECT"):
            continue
        resource = fields.get("resource", "").strip('"')
        sub = fields.get("subresource", "").strip('"')
        key = f"{verb} {resource}{'/' + sub if sub else ''}"
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def request_rates(
    before: dict[str, float], after: dict[str, float], seconds: float, pods: int
) -> dict[str, Any]:
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    delta = {k: v for k, v in delta.items() if v >= 1}
    total = sum(delta.values())
    top = sorted(delta.items(), key=lambda kv: -kv[1])[:8]
    return {
        "per_s": round(total / seconds, 1) if seconds > 0 else None,
        "per_pod": round(total / pods, 1),
        "top": {k: int(v) for k, v in top},
    }


@contextmanager
def profiler(pid: int | None, output: str | None) -> Iterator[None]:
    """py-spy sampling ``pid`` while the block runs (only with --profile; py-spy is a
    measuring tool, installed by hand, not a dependency)."""
    if pid is None or not output:
        yield
        return
    spy = subprocess.Popen(
        [
            *("py-spy", "record", "--pid", str(pid), "--rate", "50"),
            *("--format", "raw", "--nonblocking", "--output", output),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(created: dict[str, float], done: dict[str, float], started: float) -> dict[str, Any]:
    """Pods per second (first created to last done) and latency from created to done."""
    latency = [done[p] - created[p] for p in done if p in created]
    last = max(done.values(), default=started)
    return {
        "pods_per_s": round(len(done) / (last - started), 1) if last > started else None,
        "p50_ms": round(percentile(latency, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latency, 0.99) * 1000, 1),
        "mean_ms": round(statistics.fmean(latency) * 1000, 1) if latency else None,
    }


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per phase and measure, the median of each figure over the runs."""
    summary: dict[str, Any] = {}
    for phase, results in runs.items():
        summary[phase] = {
            measure: {
                key: statistics.median(r[measure][key] for r in results)
                for key in ("pods_per_s", "p50_ms", "p99_ms")
            }
            for measure in ("placed", "bound")
            if all(measure in r for r in results)
        }
        summary[phase]["runs"] = len(results)
    return summary


def ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The controller's rates over the scheduler-alone rate (medians over the runs)."""
    if "scheduler" not in runs or "controller" not in runs:
        return {}
    alone = statistics.median(r["bound"]["pods_per_s"] for r in runs["scheduler"])
    placed = statistics.median(r["placed"]["pods_per_s"] for r in runs["controller"])
    bound = statistics.median(r["bound"]["pods_per_s"] for r in runs["controller"])
    return {
        "placed_over_scheduler_alone": round(placed / alone, 2),
        "bound_over_scheduler_alone": round(bound / alone, 2),
    }
