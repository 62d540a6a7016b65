"""``make demo`` (``python -m e2e.demo``), the README's first command, run by the suite.

The demo starts a local cluster of its own beside the session's (each has its
own directory and ports), applies deploy/examples/demo with the kubelet plugin
and the controller running, prints one row per pod and tears everything down.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cluster_access import ClusterUnderTest

from e2e.demo import STAGES

REPO = Path(__file__).resolve().parents[2]
PODS = ("controller-placed", "scheduler-placed", "shared-a", "shared-b", "time-sliced")


def _rows(table: str) -> dict[str, list[str]]:
    """The table's first line per pod, split on runs of blanks (cells hold no blanks)."""
    rows: dict[str, list[str]] = {}
    for line in table.splitlines():
        cells = line.split()
        if cells and cells[0] in PODS and cells[0] not in rows:
            rows[cells[0]] = cells
    return rows


def _run_demo(
    cluster: ClusterUnderTest, *args: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``python -m e2e.demo ARGS``, which must succeed; its result and a report of its output."""
    if cluster.local is None:
        pytest.skip("the demo starts a local cluster of its own, which needs the local tier")
    result = subprocess.run(
        [sys.executable, "-m", "e2e.demo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    report = f"stdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-6000:]}"
    assert result.returncode == 0, report
    return result, report


def test_the_demo_places_every_pod_and_leaves_nothing_running(
    local_cluster: ClusterUnderTest,
) -> None:
    result, report = _run_demo(local_cluster)
    rows = _rows(result.stdout)
    assert sorted(rows) == sorted(PODS), report
    # POD CLAIM PLACED-BY NODE DEVICES ...: the gated pod by the controller, the rest by
    # the scheduler, all on the demo's node.
    assert rows["controller-placed"][2] == "controller", report
    assert {rows[p][2] for p in PODS if p != "controller-placed"} == {"scheduler"}, report
    assert "pods deleted, their claims unprepared (CDI specs gone)" in result.stderr, report
    # Each stage is announced, in order; the session built the binaries already, so the
    # build says its cache is warm.
    announced = [
        line.split("] ", 1)[1].split(" (at ")[0]
        for line in result.stderr.splitlines()
        if line.startswith("demo: [")
    ]
    assert announced == list(STAGES), report
    assert "cache warm:" in result.stderr, report


def test_the_demo_on_a_pcie_only_machine_runs_the_pcie_pair_and_shows_why_the_island_pair_waits(
    local_cluster: ClusterUnderTest,
) -> None:
    result, report = _run_demo(local_cluster, "--machine", "pcie-4xL40S")
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    # POD PLACED-BY NODE DEVICE ISLAND PCIE-ROOT OUTCOME, first line of each pod.
    assert lines["pcie-pair"].split()[1] == "controller", report
    assert "running (as expected)" in lines["pcie-pair"], report
    assert "refused (as expected)" in lines["island-pair-a"], report
    # The controller's own explanation (wrapped in its column), naming the constraint no
    # island meets.
    said = " ".join(result.stdout.split())
    assert "nvlinkIsland" in said and "the most one value offers is 1" in said, report
    assert "pods deleted, their claims unprepared (CDI specs gone)" in result.stderr, report
