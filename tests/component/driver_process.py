"""Runs a GpuDriver in a process of its own, for the crash tests.

Usage: ``python driver_process.py RUN.json``. RUN.json names the test root, the
claims file (a JSON list of ResourceClaims, read at start), the boot ID, the
actions (``[["prepare"|"unprepare", [[namespace, name, uid], ...]], ...]``)
and optionally a fault ``{"point": <FaultPoint>, "hit": <n>}``: at the n-th
time the driver reaches that point the process ends at once with
FAULT_EXIT_CODE, as a kill would end it (no cleanup, no flush of Python state).
Prints ``{"recovery": {...}, "steps": [...], "api_reads": n}`` as JSON. With
``"steps_file"`` it also appends each step's answer to that file as one JSON
line the moment the step returns: what the kubelet heard before a kill.

``python driver_process.py --serve`` imports everything once, then forks a
child per RUN.json path read from stdin and answers each with a line: the
child's exit status. The child is a process of its own, as a fresh
interpreter would be (the server opens none of the node's files), and writes
its output to ``RUN.json.out`` and its stderr to ``RUN.json.err``: many runs
cost a fork each instead of an interpreter start.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

# Run as a script: the repository root is not on the path for ``tests.fakes``.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import driver_fixtures as fx

from kubelet_plugin.driver import FaultPoint
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource


def main(run_path: str) -> None:
    run = json.loads(Path(run_path).read_text())
    root = Path(run["root"])
    claims = FakeClaimSource(json.loads(Path(run["claims"]).read_text()))
    fault = run.get("fault") or {}
    hits = 0

    def stop_at_fault(point: FaultPoint) -> None:
        nonlocal hits
        if point == fault.get("point"):
            hits += 1
            if hits == fault.get("hit", 1):
                os._exit(fx.FAULT_EXIT_CODE)

    driver = fx.make_driver(root, claims, boot_id=run["boot_id"], fault_hook=stop_at_fault)
    out: dict[str, Any] = {"recovery": dataclasses.asdict(driver.start()), "steps": []}
    steps_file = Path(run["steps_file"]) if run.get("steps_file") else None
    for action, raw_refs in run["actions"]:
        refs = [ClaimRef(namespace=ns, name=name, uid=uid) for ns, name, uid in raw_refs]
        if action == "prepare":
            prepared = driver.prepare(refs)
            step: dict[str, Any] = {
                uid: {
                    "error": result.error,
                    "devices": [
                        {"device": d.device, "cdi_device_ids": list(d.cdi_device_ids)}
                        for d in result.devices
                    ],
                }
                for uid, result in prepared.items()
            }
        else:
            step = dict(driver.unprepare(refs))
        out["steps"].append(step)
        if steps_file is not None:
            # Closed, so in the kernel's hands: os._exit at a later fault point keeps it.
            with steps_file.open("a") as heard:
                heard.write(json.dumps([action, step]) + "\n")
    out["api_reads"] = claims.reads
    print(json.dumps(out))


def serve() -> None:
    """Fork a child per run file named on stdin; answer each with its exit status."""
    for line in sys.stdin:
        run_path = line.strip()
        pid = os.fork()
        if pid == 0:
            run_child(run_path)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


def run_child(run_path: str) -> NoReturn:
    code = 1
    try:
        with open(f"{run_path}.out", "w") as out, open(f"{run_path}.err", "w") as err:
            os.dup2(out.fileno(), sys.stdout.fileno())
            os.dup2(err.fileno(), sys.stderr.fileno())
            try:
                main(run_path)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve()
    else:
        main(sys.argv[1])
