"""Seeded random kills: the driver process dies at a random fault point, again and again.

One node's files live through every run. Each round the kubelet (the test)
sends a random mix of prepares and unprepares of a few claims to a driver
process that ends at a random fault point and hit (driver_process.py, as a
SIGKILL would end it), sometimes after a reboot, sometimes dying again while
recovering at start-up; then a clean run starts, and the kubelet repeats what
it last asked for each claim. After every clean run the node must be as the
kubelet was told: each claim it asked to prepare is ``PrepareCompleted`` with a
valid CDI spec and the CDI IDs it heard before, no device is held twice, no
spec lacks an entry, no temp file is left, an unprepared claim is gone from the
checkpoint and the CDI root.

``DRA_DRIVER_FAULT_SEED`` replays a seed (each failure names its seed);
``DRA_DRIVER_FAULT_SOAK=<rounds>`` runs that many rounds instead of the default
(``make soak``), with a new seed unless one is given.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, get_args

import pytest
from crash_node import SEED_ENV, Action, DriverForker, Node, forker, refs, rounds_and_seed
from driver_fixtures import (
    BOOT_ID,
    FAULT_EXIT_CODE,
    checkpoint_path,
    claim,
    claim_uid,
    expected_id,
    files_in,
    spec_path,
    validate_cdi_file,
)

from kubelet_plugin.driver import FaultPoint

__all__ = ["forker"]  # a fixture, used by name

pytestmark = pytest.mark.component

DEFAULT_ROUNDS: Final = 30

#: Claim number to its allocated devices. Claims 1 and 5 share gpu-1: only one
#: of them can be prepared at a time.
ALLOCATIONS: Final = {1: ["gpu-1"], 2: ["gpu-2"], 3: ["gpu-3"], 4: ["gpu-4", "gpu-5"], 5: ["gpu-1"]}
CONTENDERS: Final = {1: 5, 5: 1}
#: Every fault point but MIG creation (no MIG devices here; test_driver_mig covers it).
KILL_POINTS: Final = tuple(p for p in get_args(FaultPoint) if p != "mig-created")
START_POINTS: Final = tuple(p for p in KILL_POINTS if p.startswith("recovery-"))
CALL_POINTS: Final = tuple(p for p in KILL_POINTS if p not in START_POINTS)


@dataclass
class Kubelet:
    """What the kubelet last asked for each claim, and the CDI IDs it was told.

    ``told`` holds the claims whose last call the kubelet made was a prepare it
    heard succeed, with the CDI IDs of the answer.
    """

    wants: dict[int, str] = field(default_factory=dict)
    told: dict[int, list[list[str]]] = field(default_factory=dict)

    def calls(self, rng: random.Random) -> list[Action]:
        """One to four random calls, mostly changing a claim's state (those reach the
        fault points), now and then repeating a call the kubelet made already."""
        actions: list[Action] = []
        for _ in range(rng.randint(1, 4)):
            operation = "prepare" if rng.random() < 0.6 else "unprepare"
            changing = [
                n
                for n in ALLOCATIONS
                if (self.wants.get(n) == "prepare") != (operation == "prepare")
            ] or list(ALLOCATIONS)
            numbers = rng.sample(changing, rng.randint(1, min(3, len(changing))))
            if rng.random() < 0.2:
                numbers.append(rng.choice([n for n in ALLOCATIONS if n not in numbers]))
            actions.append((operation, refs(*numbers)))
            for n in numbers:
                self.wants[n] = operation
        return actions

    def hear(self, actions: list[Action], heard: Path) -> None:
        """Take in the answers the run gave before it ended (a call without one: no news)."""
        lines = heard.read_text().splitlines() if heard.exists() else []
        heard.unlink(missing_ok=True)
        answers = [json.loads(line)[1] for line in lines]
        for index, (operation, called) in enumerate(actions):
            numbers = [int(name.removeprefix("claim-")) for _, name, _ in called]
            for n in numbers:
                self.told.pop(n, None)
            if index >= len(answers) or operation != "prepare":
                continue
            for n in numbers:
                result = answers[index][claim_uid(n)]
                if result["error"] is None:
                    self.told[n] = [d["cdi_device_ids"] for d in result["devices"]]

    def retries(self) -> list[Action]:
        """The clean run's calls: unprepares first (they free devices), then prepares."""
        unprepare = [n for n in sorted(ALLOCATIONS) if self.wants.get(n) != "prepare"]
        prepare = [n for n in sorted(ALLOCATIONS) if self.wants.get(n) == "prepare"]
        return [
            (op, refs(*ns)) for op, ns in (("unprepare", unprepare), ("prepare", prepare)) if ns
        ]


def device_holders(root: Path) -> Counter[tuple[str, str]]:
    """How many checkpoint entries, in any state, record each (pool, device)."""
    path = checkpoint_path(root)
    document: dict[str, Any] = json.loads(path.read_bytes()) if path.exists() else {"claims": {}}
    return Counter(
        (d["pool"], d["device"]) for entry in document["claims"].values() for d in entry["devices"]
    )


def check_clean_run(node: Node, kubelet: Kubelet, out: dict[str, Any], why: str) -> None:
    """Every invariant of the module docstring, after a clean run's calls returned."""
    recovery = out["recovery"]
    assert recovery["removed"] == [], why
    for n in kubelet.told:
        assert claim_uid(n) not in recovery["rolled_back"], f"{why}: told prepared, rolled back"
    answers: dict[str, Any] = {}
    for step in out["steps"]:
        answers.update(step)
    prepared: list[int] = []
    for n in sorted(ALLOCATIONS):
        answer = answers[claim_uid(n)]
        if kubelet.wants.get(n) != "prepare":
            assert answer is None, f"{why}: unprepare of claim-{n}: {answer}"
            continue
        if answer["error"] is not None:
            # Only a claim whose contender the kubelet also wants prepared may fail, and
            # only for the device the contender holds; never one the kubelet was told is.
            other = CONTENDERS.get(n)
            assert n not in kubelet.told, f"{why}: claim-{n}: {answer['error']}"
            assert other is not None and kubelet.wants.get(other) == "prepare", why
            assert answers[claim_uid(other)]["error"] is None, f"{why}: {answer['error']}"
            assert f"already prepared for claim default/claim-{other}" in answer["error"], why
            continue
        ids = [d["cdi_device_ids"] for d in answer["devices"]]
        assert ids == [[expected_id(n, d)] for d in ALLOCATIONS[n]], f"{why}: claim-{n}"
        if n in kubelet.told:
            assert ids == kubelet.told[n], f"{why}: claim-{n} answered other CDI IDs than before"
        prepared.append(n)
    states = json.loads(checkpoint_path(node.root).read_bytes())["claims"]
    assert {uid: e["state"] for uid, e in states.items()} == {
        claim_uid(n): "PrepareCompleted" for n in prepared
    }, why
    assert files_in(node.root / "cdi") == sorted(spec_path(node.root, n).name for n in prepared), (
        why
    )
    for n in prepared:
        validate_cdi_file(spec_path(node.root, n))
    held_twice = [device for device, count in device_holders(node.root).items() if count > 1]
    assert held_twice == [], f"{why}: devices held twice"
    assert node.temp_files() == [], why


def start_point(killed_at: str, rng: random.Random) -> str:
    """A start-up fault point that the recovery of a kill at ``killed_at`` reaches."""
    if killed_at in ("checkpoint-started", "spec-written"):
        return "recovery-spec-removed"  # it rolls back the PrepareStarted entry
    if killed_at == "spec-removed":
        return "recovery-spec-rewritten"  # the claim is still there: its spec comes back
    return rng.choice(START_POINTS)


def test_random_kills_never_break_what_the_kubelet_was_told(
    tmp_path: Path, forker: DriverForker
) -> None:
    rounds, seed = rounds_and_seed(DEFAULT_ROUNDS)
    rng = random.Random(seed)
    node = Node(tmp_path, [claim(n, devices) for n, devices in ALLOCATIONS.items()], forker)
    kubelet = Kubelet()
    heard = tmp_path / "heard.jsonl"
    boot_id = BOOT_ID
    kills: Counter[str] = Counter()
    points: list[FaultPoint] = []
    for round_number in range(rounds):
        why = f"seed {seed} ({SEED_ENV}={seed} replays it), round {round_number}"
        if round_number % len(CALL_POINTS) == 0:  # each point in turn, in a random order
            points = rng.sample(CALL_POINTS, len(CALL_POINTS))
        hit = 1 if rng.random() < 0.7 else 2
        faults = [{"point": points[round_number % len(CALL_POINTS)], "hit": hit}]
        if rng.random() < 0.25:  # a reboot: a new boot ID, the CDI root (a tmpfs) empty
            boot_id = f"boot-{round_number}"
            for name in files_in(tmp_path / "cdi"):
                (tmp_path / "cdi" / name).unlink()
            # The start-up writes every prepared claim's spec again: die while it does.
            faults.insert(0, {"point": "recovery-spec-rewritten", "hit": rng.randint(1, 2)})
        while faults:
            fault = faults.pop(0)
            actions = kubelet.calls(rng)
            code, _ = node.run(actions, fault=fault, boot_id=boot_id, heard=heard)
            kubelet.hear(actions, heard)
            if code != FAULT_EXIT_CODE:
                continue
            kills[fault["point"]] += 1
            if not faults and rng.random() < 0.6:
                # Die again while the start-up repairs what this kill left.
                faults.append({"point": start_point(fault["point"], rng), "hit": 1})
        retries = kubelet.retries()
        code, out = node.run(retries, boot_id=boot_id, heard=heard)
        assert code == 0, why
        check_clean_run(node, kubelet, out, why)
        kubelet.hear(retries, heard)
    # The test kills: at least one kill at each point once the rounds are enough to tell.
    if rounds >= DEFAULT_ROUNDS:
        assert set(kills) == set(KILL_POINTS), f"seed {seed}: kills by point {dict(kills)}"
