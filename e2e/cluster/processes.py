"""Starting, watching and stopping the cluster's daemons.

Every daemon runs in a session of its own, so its process id is also its
process-group id, and ``stop_group`` ends it together with any helper it forked
that stayed in its group. Output goes to a log file per daemon; the last lines
of that log are what an error message shows.

A daemon is identified by its pid *and* its start time (field 22 of
``/proc/PID/stat``), so a stale state file never makes ``down`` signal an
unrelated process that reused the pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from e2e.cluster.errors import ClusterError

__all__ = [
    "Daemon",
    "free_port",
    "log_tail",
    "pids_with_argument",
    "process_start_time",
    "start_daemon",
    "stop_group",
    "wait_until",
]

LOG_TAIL_LINES = 40


@dataclass(frozen=True, slots=True)
class Daemon:
    """A started daemon: what a state file records to stop it from another process."""

    name: str
    pid: int
    start_time: int
    """Clock ticks since boot at which ``pid`` started (0: unknown)."""
    log: Path

    def alive(self) -> bool:
        """Whether this very process (not a reuse of its pid) still runs and is no zombie."""
        started = process_start_time(self.pid)
        if started is None or (self.start_time and started != self.start_time):
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def describe_exit(self) -> str:
        """One line for an error message: how the daemon ended, and its log's tail."""
        return f"{self.name} (pid {self.pid}) is not running; last lines of {self.log}:\n" + (
            log_tail(self.log)
        )


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (start time in clock ticks), or None without such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, indented, or a note that it is missing."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * lines))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as err:
        return f"    ({path}: {err.strerror})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) if tail else "    (empty)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of the call.

    Another process may take it before the daemon binds it; the daemon then
    fails to start and the error says so (a retry of ``up`` helps).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_daemon(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Daemon:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log``.

    Raises ClusterError when the executable cannot be started at all.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"# {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as err:
            raise ClusterError(f"{name}: cannot start {argv[0]}: {err.strerror}") from None
    start_time = process_start_time(proc.pid) or 0
    # The Popen object is dropped on purpose: the daemon outlives this process when
    # started by `python -m e2e.cluster up`. Its exit status is collected below so
    # that a daemon that died does not stay a zombie of a long-lived pytest process.
    _REAPERS[proc.pid] = proc
    return Daemon(name=name, pid=proc.pid, start_time=start_time, log=log)


# Popen objects of daemons started by this process, to reap them when they exit.
_REAPERS: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int, *, block: bool = False) -> None:
    """Collect the exit status of a daemon this process started, once it has exited.

    ``block``: the caller knows it has exited (a zombie); wait for it.
    """
    proc = _REAPERS.get(pid)
    if proc is None:
        return
    if block:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    if proc.poll() is not None:
        del _REAPERS[pid]


def stop_group(daemon: Daemon, *, grace_s: float = 10.0) -> None:
    """Stop a daemon and its process group: SIGTERM, then SIGKILL after ``grace_s``.

    Idempotent; a daemon that is already gone (or whose pid now belongs to
    another process) is left alone.
    """
    if not daemon.alive():
        _reap(daemon.pid, block=True)
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(daemon.pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(daemon.pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(daemon.pid)
            if not daemon.alive():
                _reap(daemon.pid, block=True)
                return
            time.sleep(0.05)
    raise ClusterError(f"{daemon.name} (pid {daemon.pid}) survived SIGKILL")


def pids_with_argument(argument: str) -> list[int]:
    """Processes whose command line contains ``argument`` as one whole argument."""
    found: list[int] = []
    wanted = argument.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in argv:
            found.append(int(entry.name))
    return found


def wait_until(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    watch: Sequence[Daemon] = (),
    interval_s: float = 0.2,
) -> None:
    """Poll ``ready()`` until it is true.

    Raises ClusterError when ``timeout_s`` passes, or at once when one of the
    ``watch`` daemons exits; the message ends with the tails of their logs.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for daemon in watch:
            _reap(daemon.pid)
            if not daemon.alive():
                raise ClusterError(f"waiting for {what}: {daemon.describe_exit()}")
        if ready():
            return
        if time.monotonic() >= deadline:
            tails = "\n".join(
                f"last lines of {d.name}'s log {d.log}:\n{log_tail(d.log)}" for d in watch
            )
            raise ClusterError(f"{what}: not ready after {timeout_s:.0f} s\n{tails}".rstrip())
        time.sleep(interval_s)
