"""LocalCluster: a real one-node Kubernetes cluster on this machine, started and torn down.

``up()`` starts the control plane and then the node, each waited for
(:mod:`e2e.cluster.startup`); ``down()`` stops everything and undoes every
host change (:mod:`e2e.cluster.teardown`); ``restart_apiserver()`` restarts
one daemon in place.

Everything lives in one directory (``state.json``, ``logs/``, ``pki/``, the
admin ``kubeconfig``, ``node/``), and every host change the node makes is named
after the cluster id (see :mod:`e2e.cluster.host`). The state file
(:mod:`e2e.cluster.state`) is written after each step, so ``down()`` from
another process (``python -m e2e.cluster down``) undoes exactly what was done,
even after a start that failed half way.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from e2e.cluster.access import AdminReader
from e2e.cluster.binaries import build_binaries
from e2e.cluster.controlplane import probe
from e2e.cluster.errors import ClusterError
from e2e.cluster.node import NodePaths
from e2e.cluster.processes import Daemon, log_tail, start_daemon, stop_group
from e2e.cluster.startup import create_record, start_control_plane, start_node
from e2e.cluster.state import STATE_VERSION, ClusterRecord, Progress, stderr_progress
from e2e.cluster.teardown import tear_down

__all__ = ["DEFAULT_NODE_NAME", "LocalCluster", "reap_orphans"]

DEFAULT_NODE_NAME: Final = "dra-node-1"


class LocalCluster:
    """One local cluster: a control plane and one node with a real kubelet.

    Use as a context manager, or call ``up()`` and ``down()``. The properties
    (``kubeconfig``, ``node_name``, the node's directories) are valid once
    ``up()`` has returned, and for a cluster loaded with ``LocalCluster.load``.
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        bin_dir: Path | None = None,
        node_name: str = DEFAULT_NODE_NAME,
        feature_gates: Mapping[str, bool] | None = None,
        detached: bool = False,
        progress: Progress = stderr_progress,
        scheduler_qps: int | None = None,
    ) -> None:
        """``directory``: created if missing (default: a new ``/tmp/dra-cluster-XXXXXX``;
        kept short because unix socket paths below it are limited to 107 bytes).
        ``bin_dir``: the binaries (default: build or reuse them with build.sh at ``up()``).
        ``detached``: the cluster is meant to outlive this process (the CLI's ``up``);
        otherwise a later ``up()`` of another cluster may reap it once this process is gone.
        ``feature_gates``: passed to every component (default: none, i.e. 1.37's defaults).
        ``scheduler_qps``: the kube-scheduler's API client rate limit (default its own, 50).
        """
        self._directory = directory
        self._bin_dir = bin_dir
        self._node_name = node_name
        self._feature_gates = dict(feature_gates or {})
        self._scheduler_qps = scheduler_qps
        self._detached = detached
        self._progress = progress
        self._record: ClusterRecord | None = None
        self._started_at = 0.0

    # --- Public surface ------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path, *, progress: Progress = stderr_progress) -> LocalCluster:
        """The cluster whose state file is in ``directory``. Raises ClusterError without one."""
        cluster = cls(directory, progress=progress)
        record = ClusterRecord.load(directory, cluster._say)
        cluster._node_name = record.state.node_name
        cluster._bin_dir = Path(record.state.bin_dir)
        cluster._record = record
        return cluster

    @property
    def directory(self) -> Path:
        return self._require().directory

    @property
    def state_file(self) -> Path:
        return self._require().state_file

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group system:masters), credentials embedded."""
        return self.directory / "kubeconfig"

    @property
    def node_name(self) -> str:
        return self._node_name

    @property
    def bin_dir(self) -> Path:
        return Path(self._require().state.bin_dir)

    @property
    def logs_dir(self) -> Path:
        return self._require().logs_dir

    @property
    def node_paths(self) -> NodePaths:
        """containerd's, the kubelet's and CDI's directories."""
        return self._require().node_paths

    @property
    def cdi_dir(self) -> Path:
        """The directory containerd reads CDI specs from: a kubelet plugin's CDI root."""
        return self.node_paths.cdi

    @property
    def plugins_registry_dir(self) -> Path:
        return self.node_paths.plugins_registry

    @property
    def plugins_dir(self) -> Path:
        return self.node_paths.plugins

    @property
    def node_ip(self) -> str:
        """The node's InternalIP: the gateway address of the cluster's pod bridge."""
        return self._require().state.node_ip

    @property
    def apiserver_url(self) -> str:
        return self._require().state.apiserver_url

    @property
    def tier(self) -> str:
        """How pods run: ``kubelet`` (a real kubelet); empty before the node is up."""
        return self._require().state.tier

    @property
    def timings(self) -> dict[str, float]:
        """Seconds: ``control_plane`` and ``node`` start-up, ``pki``, ``images``..."""
        return dict(self._require().state.timings)

    def status(self) -> dict[str, bool]:
        """Whether each daemon runs, by name (daemons not started yet are absent)."""
        return {d.name: d.alive() for d in self._daemons()}

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every component's log, for a failure message."""
        return "\n".join(
            f"--- {d.name} ({d.log}):\n{log_tail(d.log, lines)}" for d in self._daemons()
        )

    def __enter__(self) -> LocalCluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- up and down ----------------------------------------------------------------------

    def up(self) -> LocalCluster:
        """Start everything and wait until the node is Ready. Raises ClusterError.

        On failure everything started so far is torn down again before the error
        propagates (the logs are kept: the error names them).
        """
        self._started_at = time.monotonic()
        if self._bin_dir is None:
            self._bin_dir = build_binaries(self._progress)
        reap_orphans(self._progress)
        try:
            record = create_record(
                self._directory,
                bin_dir=self._bin_dir,
                node_name=self._node_name,
                detached=self._detached,
                say=self._say,
            )
            self._record = record
            pki = start_control_plane(
                record, feature_gates=self._feature_gates, scheduler_qps=self._scheduler_qps
            )
            start_node(record, pki, feature_gates=self._feature_gates, started_at=self._started_at)
        except BaseException:
            self._say("start-up failed; tearing down what was started")
            with contextlib.suppress(ClusterError):
                self.down(keep_directory=True)
            raise
        timings = self._require().state.timings
        self._say(
            f"cluster ready in {timings['total']:.1f} s (control plane "
            f"{timings['control_plane']:.1f} s, node {timings['node']:.1f} s); "
            f"KUBECONFIG={self.kubeconfig}"
        )
        return self

    def down(self, *, keep_directory: bool = False) -> None:
        """Stop everything and undo every host change; remove the directory.

        Idempotent, and safe on a cluster that only half started. Every step is
        tried even when an earlier one failed; then a ClusterError lists the
        failures (and the directory is kept, for its logs). ``keep_directory``
        keeps it in any case.
        """
        if self._record is None:
            return
        if not self._started_at:
            self._started_at = time.monotonic()
        tear_down(self._record, keep_directory=keep_directory)

    def _say(self, message: str) -> None:
        elapsed = time.monotonic() - self._started_at if self._started_at else 0.0
        self._progress(f"[local-cluster {elapsed:6.1f}s] {message}")

    def _require(self) -> ClusterRecord:
        if self._record is None:
            raise ClusterError("the local cluster has not been started (call up() first)")
        return self._record

    def _daemons(self) -> list[Daemon]:
        return [] if self._record is None else self._record.daemons()

    # --- restarts ---------------------------------------------------------------------------

    def restart_apiserver(self, *, timeout_s: float = 180.0) -> float:
        """Stop kube-apiserver and start it again, as an operator's restart would.

        SIGTERM (SIGKILL after a grace period), wait for the process to exit,
        then start the same command line (flags, certificates, etcd, port) and
        wait for ``/readyz``. Clients see refused connections in between and
        their watches end; everything the cluster stored is kept in etcd. The
        state file names the new process at once, so ``down()`` (from this or
        another process) stops it. Returns the seconds the API server was not
        ready. Raises ClusterError when it cannot be stopped or does not come
        back (the message ends with its log).
        """
        record = self._require()
        reader = AdminReader(record.directory, record.state.apiserver_url)
        return self._restart(
            "kube-apiserver",
            lambda: probe(f"{reader.apiserver_url}/readyz", context=reader.ssl_context()),
            what="kube-apiserver /readyz",
            timeout_s=timeout_s,
            needs=("etcd",),
        )

    def _restart(
        self,
        name: str,
        ready: Callable[[], bool],
        *,
        what: str,
        timeout_s: float,
        needs: tuple[str, ...] = (),
    ) -> float:
        """Stop daemon ``name``, start its command line again and wait for ``ready()``
        (failing at once if it or one of the ``needs`` daemons exits); the state file
        names the new process before the wait. Returns the seconds it took."""
        record = self._require()
        old = record.daemon(name)
        if old is None:
            raise ClusterError(
                f"cluster {record.state.cluster_id}: no {name} recorded in {self.state_file}"
            )
        argv = record.argv(name, old)
        t0 = time.monotonic()
        self._say(f"restarting {name} (pid {old.pid})")
        stop_group(old)
        new = start_daemon(name, argv, log=old.log)
        record.replace(name, new, argv)
        watched = [d for d in (record.daemon(n) for n in needs) if d is not None]
        record.wait(f"{what} after a restart", ready, timeout_s, new, *watched)
        took = round(time.monotonic() - t0, 2)
        self._say(f"{name} back (pid {new.pid}) after {took:.1f} s")
        return took


def reap_orphans(progress: Progress = stderr_progress) -> list[Path]:
    """Tear down clusters whose owning process is gone (a test run that was killed).

    Only clusters started by a process that is meant to own them (a test
    session, not the CLI's detached ``up``) are considered. Returns their directories.
    """
    reaped = []
    for state_file in sorted(Path("/tmp").glob("dra-cluster-*/state.json")):
        try:
            data = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        owner = int(data.get("owner_pid") or 0)
        if not owner or data.get("version") != STATE_VERSION or Path(f"/proc/{owner}").exists():
            continue
        progress(f"[local-cluster] reaping {state_file.parent}: its owner (pid {owner}) is gone")
        try:
            LocalCluster.load(state_file.parent, progress=progress).down()
            reaped.append(state_file.parent)
        except ClusterError as err:
            progress(f"[local-cluster] could not reap {state_file.parent}: {err}")
    return reaped
