"""The offline tools on two processors (:mod:`dra_cli.parallel`): reading in a child while
the models load, checking a share of the documents in a child. Whatever the children do,
the result, every error and every warning is the serial path's."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controller_fixtures import allocation, claim, device_class, node_slice

from api.errors import InvalidInputError
from api.resource_v1 import dump
from dra_cli import parallel
from dra_driver.manifest_read import Document, read_documents
from dra_driver.manifests import Inventory, load_inventory

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "deploy" / "examples" / "inventory"


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Forking allowed, and the pids of the children forked meanwhile: a test that compares
    results asserts that a child ran, so it cannot pass by never forking.

    Two processors as far as :func:`dra_cli.parallel.can_fork` is concerned (the children
    work on one too, only slower), and this thread taken for the only one: the test process
    may hold other tests' threads (the cluster tier's session keeps its own), which the
    command never has; the children here read and check documents only, and CPython makes
    its import lock, and logging its locks, safe in a forked child."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(parallel, "_single_threaded", lambda: True)
    real_fork = os.fork
    children: list[int] = []

    def fork() -> int:
        pid = real_fork()
        if pid:
            children.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    assert parallel.can_fork()
    yield children


def _objects(nodes: int = 24, gpus: int = 8) -> list[dict[str, Any]]:
    """A class, nodes with their slices, claims holding two GPUs a node, three pending."""
    names = [f"node-{n:03d}" for n in range(nodes)]
    held = []
    for i in range(min(nodes * 2, nodes * gpus)):
        used = claim(f"used-{i:03d}")
        used["status"] = {"allocation": allocation(names[i // gpus], f"gpu-{i % gpus}")}
        held.append(used)
    return [
        device_class(),
        *({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}} for n in names),
        *(node_slice(n, gpus) for n in names),
        *held,
        *(claim(f"pending-{i}") for i in range(3)),
    ]


def _documents(objects: list[dict[str, Any]]) -> list[Document]:
    return [Document(f"input.yaml#{i}", obj) for i, obj in enumerate(objects)]


def _view(inventory: Inventory) -> dict[str, Any]:
    """Everything an inventory holds, as plain data."""
    return {
        "classes": {name: dump(c) for name, c in inventory.classes.items()},
        "kinds": [
            [dump(o) for o in objects]
            for objects in (
                inventory.slices,
                inventory.taint_rules,
                inventory.claims,
                inventory.templates,
                inventory.nodes,
                inventory.pods,
            )
        ],
        "excluded_nodes": inventory.excluded_nodes,
        "warnings": inventory.warnings,
        "sources": inventory.sources,
    }


def _outcome(load: Callable[[], Inventory]) -> tuple[str, Any]:
    try:
        return "ok", _view(load())
    except InvalidInputError as exc:
        return "error", str(exc)


def _both(documents: list[Document], *, lenient: bool = False) -> tuple[Any, Any]:
    serial = _outcome(lambda: load_inventory(documents, lenient=lenient))
    in_parallel = _outcome(
        lambda: parallel.load_inventory(documents, lenient=lenient, min_weight=0)
    )
    return serial, in_parallel


def test_the_child_share_is_spread_over_the_input() -> None:
    share = parallel._child_share(100)
    assert len(share) == 60
    # Every run of five positions gives three to the child: every kind is split alike.
    assert all(len(share & set(range(start, start + 5))) == 3 for start in range(0, 100, 5))


def test_checking_in_a_child_gives_the_serial_inventory(forks: list[int]) -> None:
    documents = _documents(_objects())
    serial, in_parallel = _both(documents)
    assert serial[0] == "ok"
    assert in_parallel == serial
    assert len(forks) == 1


def test_the_examples_give_the_serial_inventory(forks: list[int]) -> None:
    documents = read_documents([str(INVENTORY)], sys.stdin)
    serial, in_parallel = _both(documents)
    assert serial[0] == "ok"
    assert in_parallel == serial
    assert forks


def _broken(objects: list[dict[str, Any]], position: int) -> None:
    """Make the object at ``position`` invalid: an unknown field (a strict-reading error)."""
    objects[position]["spec"]["surprise"] = True


@pytest.mark.parametrize(
    "positions",
    [(0,), (1,), (30,), (31,), (40,), (30, 31), (31, 32), (2, 60)],
    ids=lambda p: "broken " + ",".join(map(str, p)),
)
def test_the_first_error_in_input_order_wins_wherever_it_is_checked(
    forks: list[int], positions: tuple[int, ...]
) -> None:
    """Broken objects in the child's share, in this process's share, and in both, the
    earlier one in either: the error is the one the serial path gives (the first in input
    order)."""
    objects = _objects()
    shift = 25  # past the class and the nodes: into the slices
    for position in positions:
        _broken(objects, shift + position)
    documents = _documents(objects)
    serial, in_parallel = _both(documents)
    assert serial[0] == "error"
    assert f"input.yaml#{shift + positions[0]}" in serial[1]
    assert in_parallel == serial
    assert forks


def test_lenient_warnings_come_in_the_serial_order(forks: list[int]) -> None:
    objects = _objects()
    for position in (26, 27, 40):
        _broken(objects, position)
    objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    serial, in_parallel = _both(_documents(objects), lenient=True)
    assert serial[0] == "ok"
    assert len(serial[1]["warnings"]) == 4
    assert in_parallel == serial
    assert forks


def test_a_duplicate_across_the_shares_is_refused_alike(forks: list[int]) -> None:
    objects = _objects()
    objects.append(objects[30])
    serial, in_parallel = _both(_documents(objects))
    assert serial[0] == "error" and "defined twice" in serial[1]
    assert in_parallel == serial
    assert forks


def test_a_child_that_dies_changes_nothing(
    forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child killed mid-way (here: it exits 9 at its first document) is no answer: this
    process checks everything itself."""
    import dra_driver.manifests

    objects = _objects()
    _broken(objects, 26)  # in the child's share: only its answer would report it
    documents = _documents(objects)
    serial = _outcome(lambda: load_inventory(documents))
    assert serial[0] == "error"
    monkeypatch.setattr(dra_driver.manifests, "document_is_clean", lambda _d: os._exit(9))
    assert _outcome(lambda: parallel.load_inventory(documents, lenient=False, min_weight=0)) == (
        serial
    )
    assert forks


def test_small_inputs_stay_in_this_process(
    forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = _documents(_objects(nodes=2, gpus=2))
    parallel.load_inventory(documents, lenient=False)  # weight 12: under MIN_WEIGHT
    assert forks == []
    monkeypatch.setattr(parallel, "_single_threaded", lambda: False)
    parallel.load_inventory(documents, lenient=False, min_weight=0)
    assert forks == []


def test_another_thread_or_one_processor_means_no_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert parallel.can_fork()
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert not parallel.can_fork()
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert not parallel.can_fork()


def _write(directory: Path, objects: list[dict[str, Any]]) -> Path:
    directory.mkdir()
    (directory / "all.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return directory


def test_reading_in_a_child_gives_the_same_documents(tmp_path: Path, forks: list[int]) -> None:
    directory = _write(tmp_path / "in", _objects())
    (directory / "more.json").write_text('{"apiVersion": "v1", "kind": "Node", "metadata": {}}')
    reading = parallel.start_reading([str(directory), str(INVENTORY)], min_bytes=0)
    assert reading is not None and len(forks) == 1
    assert reading.documents() == read_documents([str(directory), str(INVENTORY)], sys.stdin)


def test_a_file_the_child_cannot_read_is_read_here_with_the_same_error(
    tmp_path: Path, forks: list[int]
) -> None:
    directory = _write(tmp_path / "in", _objects())
    (directory / "zz-bad.yaml").write_text("kind: [unclosed\n")
    reading = parallel.start_reading([str(directory)], min_bytes=0)
    assert reading is not None
    assert reading.documents() is None
    with pytest.raises(InvalidInputError, match=r"zz-bad\.yaml"):
        read_documents([str(directory)], sys.stdin)


def test_stdin_and_small_inputs_are_read_here(tmp_path: Path, forks: list[int]) -> None:
    directory = _write(tmp_path / "in", _objects(nodes=1, gpus=1))
    assert parallel.start_reading(["-"], min_bytes=0) is None
    assert parallel.start_reading([str(directory)]) is None  # under MIN_BYTES
    assert forks == []


def _console(*args: str) -> subprocess.CompletedProcess[str]:
    """``dra-driver ARGS`` as the console script runs it (its quick exit included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRA_DRIVER_")}
    return subprocess.run(
        [sys.executable, "-c", "from dra_cli.main import console_main; console_main()", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("command", ["allocate", "explain"])
def test_the_command_says_the_same_in_parallel_and_serially(tmp_path: Path, command: str) -> None:
    """A large input (above both thresholds), valid and then with an error: the same exit
    code, output and messages with and without ``--serial``; the output is whole although
    the process skips the interpreter's teardown."""
    objects = _objects(nodes=120, gpus=10)
    directory = _write(tmp_path / "in", objects)
    assert (directory / "all.yaml").stat().st_size > parallel.MIN_BYTES
    fast, serial = (
        _console(command, "-f", str(directory)),
        _console(command, "--serial", "-f", str(directory)),
    )
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        serial.returncode,
        serial.stdout,
        serial.stderr,
    )
    assert fast.returncode == 0 and fast.stdout.strip()
    _broken(objects, 150)
    bad = _write(tmp_path / "bad", objects)
    fast, serial = _console(command, "-f", str(bad)), _console(command, "--serial", "-f", str(bad))
    assert fast.returncode == serial.returncode == 2
    assert fast.stderr == serial.stderr and "surprise" in fast.stderr
