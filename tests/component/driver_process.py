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
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

# Run as a script: the repository root is not on the path for ``tests.fakes``.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import driver_fixtures as fx

from kubelet_plugin.driver import FaultPoint
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource


def main() -> None:
    run = json.loads(Path(sys.argv[1]).read_text())
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


if __name__ == "__main__":
    main()
