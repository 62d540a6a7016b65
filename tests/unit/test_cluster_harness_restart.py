"""LocalCluster's daemon restart, on stand-in daemons: the same command line comes back,
the state file names the new process (so ``down()`` stops it), and a daemon that does
not come back is an error carrying its log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from e2e.cluster import ClusterError, LocalCluster  # noqa: E402
from e2e.cluster.processes import Daemon, start_daemon, stop_group, wait_until  # noqa: E402
from e2e.cluster.state import STATE_VERSION  # noqa: E402

SLEEPER = ["sleep", "300"]


def _cluster(directory: Path, daemon: Daemon, argv: list[str] | None) -> LocalCluster:
    """A cluster state with one daemon recorded as kube-apiserver (``argv``: as a state
    file of this harness records it; None: as older state files did, without it)."""
    record: dict[str, Any] = {
        "name": daemon.name,
        "pid": daemon.pid,
        "start_time": daemon.start_time,
        "log": str(daemon.log),
    }
    if argv is not None:
        record["argv"] = argv
    state = {
        "version": STATE_VERSION,
        "cluster_id": "test00",
        "directory": str(directory),
        "bin_dir": str(directory / "bin"),
        "node_name": "node-x",
        "owner_pid": 0,
        "daemons": [record],
    }
    (directory / "state.json").write_text(json.dumps(state))
    return LocalCluster.load(directory, progress=lambda line: None)


def _cmdline(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [arg.decode() for arg in raw.split(b"\0") if arg]


@pytest.mark.parametrize("recorded", [True, False], ids=["argv-recorded", "argv-from-proc"])
def test_a_restarted_daemon_runs_its_command_line_again_and_down_stops_it(
    tmp_path: Path, recorded: bool
) -> None:
    old = start_daemon("kube-apiserver", SLEEPER, log=tmp_path / "logs" / "apiserver.log")
    # Between fork and exec a process has no command line yet.
    wait_until("sleep to run", lambda: _cmdline(old.pid) == SLEEPER, timeout_s=10)
    cluster = _cluster(tmp_path, old, SLEEPER if recorded else None)
    try:
        import time

        # Ready half a second after the call: the restart waits for it and says how long it took.
        started = time.monotonic()
        ready_at = started + 0.5
        took = cluster._restart(
            "kube-apiserver", lambda: time.monotonic() >= ready_at, what="ready", timeout_s=10
        )
        elapsed = time.monotonic() - started
        assert time.monotonic() >= ready_at
        assert 0.4 <= took <= elapsed + 0.01
        assert not old.alive()
        (record,) = json.loads((tmp_path / "state.json").read_text())["daemons"]
        assert record["pid"] != old.pid
        assert record["argv"] == SLEEPER
        new = Daemon("kube-apiserver", record["pid"], record["start_time"], Path(record["log"]))
        assert new.alive()
        wait_until("sleep to run", lambda: _cmdline(new.pid) == SLEEPER, timeout_s=10)
        assert cluster.status() == {"kube-apiserver": True}
        cluster.down(keep_directory=True)
        assert not new.alive()
    finally:
        stop_group(old)


def test_a_daemon_that_does_not_come_back_is_an_error_with_its_log(tmp_path: Path) -> None:
    old = start_daemon("kube-apiserver", SLEEPER, log=tmp_path / "logs" / "apiserver.log")
    failing = ["sh", "-c", "echo 'etcd is unreachable'; exit 1"]
    cluster = _cluster(tmp_path, old, failing)
    try:
        with pytest.raises(ClusterError, match="etcd is unreachable"):
            cluster._restart("kube-apiserver", lambda: False, what="ready", timeout_s=10)
        assert cluster.status() == {"kube-apiserver": False}
        cluster.down(keep_directory=True)
    finally:
        stop_group(old)


def test_restarting_a_daemon_that_was_never_started_is_an_error(tmp_path: Path) -> None:
    old = start_daemon("etcd", SLEEPER, log=tmp_path / "logs" / "etcd.log")
    cluster = _cluster(tmp_path, old, SLEEPER)
    try:
        with pytest.raises(ClusterError, match="no kube-apiserver recorded"):
            cluster.restart_apiserver(timeout_s=1)
        assert old.alive()
    finally:
        stop_group(old)
