"""The crash tests' node: its files, and driver processes (driver_process.py) run on them.

Each run is a Python process of its own, forked from one that imported
everything (``driver_process.py --serve``), that may end with ``os._exit`` at
a fault point, as a SIGKILL would end it. Used by test_driver_crash.py (chosen
kills) and test_driver_fault_kills.py (seeded random kills).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from driver_fixtures import BOOT_ID, FAULT_EXIT_CODE, claim_uid, files_in

PROCESS = Path(__file__).with_name("driver_process.py")
#: Replays the seed of a random kill test (each failure names its seed).
SEED_ENV: Final = "DRA_DRIVER_FAULT_SEED"
#: Rounds of the seeded random kill test for a soak run (``make soak``).
SOAK_ENV: Final = "DRA_DRIVER_FAULT_SOAK"
DEFAULT_SEED: Final = 18

#: One kubelet call of a run: ``("prepare" | "unprepare", refs(...))``.
Action = tuple[str, list[list[str]]]


def rounds_and_seed(default_rounds: int) -> tuple[int, int]:
    """Rounds and seed of a random kill test: the defaults, or what the environment says.

    A soak (``SOAK_ENV`` set) without ``SEED_ENV`` takes a new seed each time.
    """
    soak = os.environ.get(SOAK_ENV)
    seed = os.environ.get(SEED_ENV)
    rounds = int(soak) if soak else default_rounds
    if seed is not None:
        return rounds, int(seed)
    if soak is not None:
        return rounds, random.SystemRandom().randrange(2**32)
    return rounds, DEFAULT_SEED


def refs(*numbers: int) -> list[list[str]]:
    """Claim references of ``claim-<n>`` as driver_process.py reads them."""
    return [["default", f"claim-{n}", claim_uid(n)] for n in numbers]


class DriverForker:
    """``driver_process.py --serve``: a driver process per run, forked, not started afresh."""

    def __init__(self) -> None:
        self._server = subprocess.Popen(
            [sys.executable, str(PROCESS), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, run_file: Path) -> tuple[int, str, str]:
        """One run: the child's exit status, stdout and stderr."""
        assert self._server.stdin is not None and self._server.stdout is not None
        self._server.stdin.write(f"{run_file}\n")
        self._server.stdin.flush()
        answer = self._server.stdout.readline()
        if not answer:
            raise AssertionError(f"the driver fork server exited ({self._server.wait()})")
        out, err = (Path(f"{run_file}.{suffix}") for suffix in ("out", "err"))
        result = int(answer), out.read_text(), err.read_text()
        out.unlink()
        err.unlink()
        return result

    def close(self) -> None:
        assert self._server.stdin is not None and self._server.stdout is not None
        self._server.stdin.close()
        self._server.wait(timeout=30)
        self._server.stdout.close()


@pytest.fixture(scope="module")
def forker() -> Iterator[DriverForker]:
    """One fork server for a test module's driver runs (import it into the module to use it)."""
    started = DriverForker()
    try:
        yield started
    finally:
        started.close()


class Node:
    """The files of one node, and driver processes (forked by ``forker``) run against them."""

    def __init__(self, root: Path, claims: list[dict[str, Any]], forker: DriverForker) -> None:
        self.root = root
        self.claims_file = root / "claims.json"
        self.set_claims(claims)
        self.runs = 0
        self._forker = forker

    def set_claims(self, claims: list[dict[str, Any]]) -> None:
        self.claims_file.write_text(json.dumps(claims))

    def run(
        self,
        actions: list[Action],
        *,
        fault: dict[str, Any] | None = None,
        boot_id: str = BOOT_ID,
        heard: Path | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Run a driver process; its exit status (0 or FAULT_EXIT_CODE) and its output.

        ``heard``: a file each step's answer is appended to as it returns (one
        JSON line ``[action, answers]``), so what a killed run answered is known.
        """
        self.runs += 1
        run_file = self.root / f"run-{self.runs}.json"
        run_file.write_text(
            json.dumps(
                {
                    "root": str(self.root),
                    "claims": str(self.claims_file),
                    "boot_id": boot_id,
                    "actions": actions,
                    "fault": fault,
                    "steps_file": str(heard) if heard is not None else None,
                }
            )
        )
        code, stdout, stderr = self._forker.run(run_file)
        if code not in (0, FAULT_EXIT_CODE):
            raise AssertionError(f"driver process failed ({code}):\n{stderr}")
        output = json.loads(stdout) if code == 0 else {}
        return code, output

    def temp_files(self) -> list[str]:
        """Temp files (dot-files) left in the CDI root or the state directory."""
        return [
            f"{directory.name}/{f}"
            for directory in (self.root / "cdi", self.root / "state")
            for f in files_in(directory)
            if f.startswith(".")
        ]

    def no_temp_files(self) -> None:
        assert not self.temp_files()
