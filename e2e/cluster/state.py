"""A local cluster's state file, and the daemons it records.

``state.json`` in the cluster directory holds enough to stop the cluster and
undo its host changes from another process (``python -m e2e.cluster down``),
or to start one of its daemons again with the same command line. It is
rewritten (atomically) after every step of ``up()``, so a start that failed
half way is undone exactly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from e2e.cluster.errors import ClusterError
from e2e.cluster.node import NodePaths
from e2e.cluster.processes import Daemon, start_daemon, wait_until

__all__ = [
    "STATE_VERSION",
    "ClusterRecord",
    "ClusterState",
    "Progress",
    "daemon_record",
    "stderr_progress",
]

STATE_VERSION: Final = 2
Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class ClusterState:
    """What state.json holds: enough to stop and undo everything from another process."""

    version: int
    cluster_id: str
    directory: str
    bin_dir: str
    node_name: str
    owner_pid: int
    """The process that started the cluster; 0 when it was started to outlive it (the CLI)."""
    phase: str = "starting"
    """starting, control-plane-ready, ready, stopping; stopped once down() kept the directory."""
    apiserver_url: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    daemons: list[dict[str, Any]] = field(default_factory=list)
    bridge: str = ""
    subnet: str = ""
    node_ip: str = ""
    cgroup_root: str = ""
    cni_network: str = ""
    host_recorded: bool = False
    """Whether this cluster recorded the host's state (host.HOST_RECORD) before its node."""
    timings: dict[str, float] = field(default_factory=dict)
    tier: str = ""


def daemon_record(daemon: Daemon, argv: list[str]) -> dict[str, Any]:
    """A daemon as state.json records it: enough to stop it, and to start it again."""
    return {
        "name": daemon.name,
        "pid": daemon.pid,
        "start_time": daemon.start_time,
        "log": str(daemon.log),
        "argv": list(argv),
    }


class ClusterRecord:
    """One cluster's state and its file: what every step of up, restart and down shares.

    ``say`` reports progress (the cluster's own prefix and clock); ``save()``
    writes the state file, which every step that starts something calls at once.
    """

    def __init__(self, state: ClusterState, say: Progress) -> None:
        self.state = state
        self.say = say

    @classmethod
    def load(cls, directory: Path, say: Progress) -> ClusterRecord:
        """The record whose state file is in ``directory``. Raises ClusterError without one,
        or for a file of another version."""
        path = directory / "state.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ClusterError(f"{path}: no readable cluster state ({err})") from None
        if data.get("version") != STATE_VERSION:
            raise ClusterError(
                f"{path}: state version {data.get('version')}, this harness reads "
                f"{STATE_VERSION}; stop it with the harness that started it"
            )
        return cls(ClusterState(**data), say)

    @property
    def directory(self) -> Path:
        return Path(self.state.directory)

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def node_paths(self) -> NodePaths:
        return NodePaths(self.directory / "node")

    def save(self) -> None:
        path = self.state_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2, sort_keys=True))
        tmp.replace(path)

    def daemons(self) -> list[Daemon]:
        return [
            Daemon(name=d["name"], pid=d["pid"], start_time=d["start_time"], log=Path(d["log"]))
            for d in self.state.daemons
        ]

    def daemon(self, name: str) -> Daemon | None:
        return next((d for d in self.daemons() if d.name == name), None)

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Daemon:
        """Start daemon ``name`` with its log in ``logs/``, and record it at once."""
        daemon = start_daemon(name, argv, log=self.logs_dir / f"{name}.log", env=env)
        self.state.daemons.append(daemon_record(daemon, argv))
        self.save()
        return daemon

    def replace(self, name: str, daemon: Daemon, argv: list[str]) -> None:
        """Record ``daemon`` in place of the daemon called ``name``."""
        self.state.daemons = [
            daemon_record(daemon, argv) if d["name"] == name else d for d in self.state.daemons
        ]
        self.save()

    def argv(self, name: str, daemon: Daemon) -> list[str]:
        """The command line ``name`` was started with: from the state file, or (a state
        file written before command lines were recorded) from the running process."""
        for record in self.state.daemons:
            if record["name"] == name and record.get("argv"):
                return [str(arg) for arg in record["argv"]]
        if not daemon.alive():
            raise ClusterError(f"{name}: its command line is unknown and it does not run")
        raw = Path(f"/proc/{daemon.pid}/cmdline").read_bytes()
        argv = [arg.decode() for arg in raw.split(b"\0") if arg]
        if not argv:
            raise ClusterError(f"{name} (pid {daemon.pid}): its command line cannot be read")
        return argv

    @staticmethod
    def wait(what: str, ready: Callable[[], bool], timeout_s: float, *watch: Daemon) -> None:
        """Poll ``ready()``; ClusterError on timeout or as soon as a ``watch`` daemon exits."""
        wait_until(what, ready, timeout_s=timeout_s, watch=watch)
