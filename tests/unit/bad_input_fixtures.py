"""Helpers of the bad-input tests: the offline tools run as a user runs them, in a child
process, and what a refusal must look like (exit 2, names, no traceback, bounded RSS)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from api.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
#: What one offline run may reach, at most (the issue's bound).
MAX_RSS_BYTES = 200 * 1024 * 1024
#: Address space a child gets, so that a regression fails the test rather than the machine.
CHILD_ADDRESS_SPACE = 2 * 1024 * 1024 * 1024

CLASS = """\
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: gpu.dra-driver.io}
spec:
  selectors:
  - cel: {expression: 'device.driver == "gpu.dra-driver.io"'}
"""

CLAIM = """\
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: claim-0, namespace: default}
spec:
  devices:
    requests:
    - name: gpu
      exactly: {deviceClassName: gpu.dra-driver.io}
"""

SLICE = """\
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node-a-gpus}
spec:
  driver: gpu.dra-driver.io
  nodeName: node-a
  pool: {name: node-a, generation: 1, resourceSliceCount: 1}
  devices:
  - name: gpu-0
    attributes:
      index: {int: 0}
"""


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    peak_rss: int
    """Bytes, the child's own peak resident set after its exec (``VmHWM`` of its memory
    map, written by the child as it exits). ``wait4``'s ``ru_maxrss`` would not do: Linux
    carries the forking process's peak over the exec, so a child of a big test process
    would report the test process's size."""


def run_tool(tmp_path: Path, *args: str) -> Run:
    """``dra-driver ARGS`` in a child of this interpreter, on this checkout's code."""
    out, err, peak = tmp_path / "stdout", tmp_path / "stderr", tmp_path / "peak"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("DRA_DRIVER_")}
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({CHILD_ADDRESS_SPACE}, {CHILD_ADDRESS_SPACE}))\n"
        "from dra_cli.main import main\n"
        "peak = sys.argv.pop(1)\n"
        "try:\n"
        "    status = main()\n"
        "finally:\n"
        "    with open('/proc/self/status') as proc, open(peak, 'w') as out:\n"
        "        out.write(next(line for line in proc if line.startswith('VmHWM:')))\n"
        "sys.exit(status)\n"
    )
    with out.open("wb") as stdout, err.open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(peak), *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            child.returncode = 0  # reaped by wait4; keep Popen from waiting again
    return Run(
        code=os.waitstatus_to_exitcode(status),
        stdout=out.read_text(errors="replace"),
        stderr=err.read_text(errors="replace"),
        peak_rss=_peak_bytes(peak) if peak.exists() else usage.ru_maxrss * 1024,
    )


def _peak_bytes(path: Path) -> int:
    """``VmHWM:    12345 kB`` as bytes."""
    return int(path.read_text().split()[1]) * 1024


def assert_refused(result: Run, *names: str) -> None:
    """Exit 2, nothing on stdout, no traceback, bounded memory, each name in the message."""
    assert result.code == ExitCode.INVALID, result.stderr[-2000:]
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.peak_rss < MAX_RSS_BYTES, f"peak RSS {result.peak_rss >> 20} MiB"
    for name in names:
        assert name in result.stderr, f"{name!r} not in {result.stderr!r}"
