"""LocalCluster: a real one-node Kubernetes cluster on this machine, started and torn down.

``up()`` starts, in order and each waited for:

1. etcd, kube-apiserver (RBAC and Node authorization, NodeRestriction,
   resource.k8s.io/v1), then kube-controller-manager (resourceclaim,
   serviceaccount and token controllers) and kube-scheduler, all on 127.0.0.1
   on ports free at the time; certificates and keys are made fresh;
2. the node: containerd 1.7 (CRI with CDI on, the cluster's own CDI directory),
   a pause and a busybox image built here and imported, a CNI bridge, and the
   kubelet, until the Node is Ready and the ``default`` ServiceAccount exists.

Everything lives in one directory (``state.json``, ``logs/``, ``pki/``, the
admin ``kubeconfig``, ``node/``), and every host change the node makes is named
after the cluster id (see :mod:`e2e.cluster.node`). The state file is written
after each step, so ``down()`` from another process (``python -m e2e.cluster
down``) undoes exactly what was done, even after a start that failed half way.

``down()`` never stops at the first problem: it stops the kubelet, kills what
runs in the cluster's cgroups, stops containerd and its shims, unmounts, removes
cgroups, the bridge, CNI cache entries and log links, restores the host's
sysctls and shared paths when no other cluster's kubelet runs any more, stops
the control plane, and finally removes the directory; then it raises one
ClusterError listing whatever could not be undone.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from e2e.cluster import node as host
from e2e.cluster.controlplane import (
    SERVICE_IP,
    ControlPlanePorts,
    apiserver_argv,
    controller_manager_argv,
    etcd_argv,
    probe,
    scheduler_argv,
)
from e2e.cluster.errors import ClusterError
from e2e.cluster.images import build_and_import_images
from e2e.cluster.pki import Pki, make_pki, write_kubeconfig
from e2e.cluster.processes import Daemon, free_port, pids_with_argument, start_daemon, stop_group
from e2e.cluster.processes import wait_until as _wait_until

__all__ = [
    "DEFAULT_NODE_NAME",
    "STATE_VERSION",
    "LocalCluster",
    "build_binaries",
    "reap_orphans",
]

STATE_VERSION: Final = 2
DEFAULT_NODE_NAME: Final = "dra-node-1"
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILD_SCRIPT: Final = REPO_ROOT / "e2e" / "cluster" / "build.sh"
Progress = Callable[[str], None]


def _stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_binaries(progress: Progress = _stderr_progress) -> Path:
    """Run e2e/cluster/build.sh (build or reuse the cached binaries); return the bin directory.

    A cold build compiles Kubernetes and takes minutes; the script's progress lines
    are passed to ``progress`` as they come. Raises ClusterError when it fails.
    """
    progress(f"building or reusing the cluster binaries with {BUILD_SCRIPT} (cold: minutes)")
    tail: list[str] = []
    with subprocess.Popen(
        ["bash", str(BUILD_SCRIPT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    ) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            progress(line.rstrip())
            tail = [*tail[-39:], line.rstrip()]
        out = proc.stdout.read().strip().splitlines()
    if proc.returncode != 0 or not out:
        raise ClusterError(
            f"{BUILD_SCRIPT} exited {proc.returncode}; last lines:\n"
            + "\n".join(f"    {line}" for line in tail)
        )
    return Path(out[-1])


@dataclass
class _State:
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
    """Whether this cluster recorded the host's state (node.HOST_RECORD) before its node."""
    timings: dict[str, float] = field(default_factory=dict)
    tier: str = ""


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
        progress: Progress = _stderr_progress,
    ) -> None:
        """``directory``: created if missing (default: a new ``/tmp/dra-cluster-XXXXXX``;
        kept short because unix socket paths below it are limited to 107 bytes).
        ``bin_dir``: the binaries (default: build or reuse them with build.sh at ``up()``).
        ``detached``: the cluster is meant to outlive this process (the CLI's ``up``);
        otherwise a later ``up()`` of another cluster may reap it once this process is gone.
        ``feature_gates``: passed to every component (default: none, i.e. 1.37's defaults).
        """
        self._directory = directory
        self._bin_dir = bin_dir
        self._node_name = node_name
        self._feature_gates = dict(feature_gates or {})
        self._detached = detached
        self._progress = progress
        self._state: _State | None = None
        self._started_at = 0.0

    # --- Public surface ------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path, *, progress: Progress = _stderr_progress) -> LocalCluster:
        """The cluster whose state file is in ``directory``. Raises ClusterError without one."""
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
        cluster = cls(directory, node_name=data["node_name"], progress=progress)
        cluster._state = _State(**data)
        cluster._bin_dir = Path(data["bin_dir"])
        return cluster

    @property
    def directory(self) -> Path:
        return Path(self._require().directory)

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group system:masters), credentials embedded."""
        return self.directory / "kubeconfig"

    @property
    def node_name(self) -> str:
        return self._node_name

    @property
    def bin_dir(self) -> Path:
        return Path(self._require().bin_dir)

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def node_paths(self) -> host.NodePaths:
        """containerd's, the kubelet's and CDI's directories."""
        return host.NodePaths(self.directory / "node")

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
        return self._require().node_ip

    @property
    def apiserver_url(self) -> str:
        return self._require().apiserver_url

    @property
    def tier(self) -> str:
        """How pods run: ``kubelet`` (a real kubelet); empty before the node is up."""
        return self._require().tier

    @property
    def timings(self) -> dict[str, float]:
        """Seconds: ``control_plane`` and ``node`` start-up, ``pki``, ``images``..."""
        return dict(self._require().timings)

    def status(self) -> dict[str, bool]:
        """Whether each daemon runs, by name (daemons not started yet are absent)."""
        return {d.name: d.alive() for d in self._daemons()}

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every component's log, for a failure message."""
        from e2e.cluster.processes import log_tail

        return "\n".join(
            f"--- {d.name} ({d.log}):\n{log_tail(d.log, lines)}" for d in self._daemons()
        )

    def __enter__(self) -> LocalCluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- up ---------------------------------------------------------------------------

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
            self._start_control_plane()
            self._start_node()
        except BaseException:
            self._say("start-up failed; tearing down what was started")
            with contextlib.suppress(ClusterError):
                self.down(keep_directory=True)
            raise
        timings = self._require().timings
        self._say(
            f"cluster ready in {timings['total']:.1f} s (control plane "
            f"{timings['control_plane']:.1f} s, node {timings['node']:.1f} s); "
            f"KUBECONFIG={self.kubeconfig}"
        )
        return self

    def _say(self, message: str) -> None:
        elapsed = time.monotonic() - self._started_at if self._started_at else 0.0
        self._progress(f"[local-cluster {elapsed:6.1f}s] {message}")

    def _require(self) -> _State:
        if self._state is None:
            raise ClusterError("the local cluster has not been started (call up() first)")
        return self._state

    def _save(self) -> None:
        state = self._require()
        path = Path(state.directory) / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2, sort_keys=True))
        tmp.replace(path)

    def _daemons(self) -> list[Daemon]:
        if self._state is None:
            return []
        return [
            Daemon(name=d["name"], pid=d["pid"], start_time=d["start_time"], log=Path(d["log"]))
            for d in self._state.daemons
        ]

    def _daemon(self, name: str) -> Daemon | None:
        return next((d for d in self._daemons() if d.name == name), None)

    def _start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Daemon:
        daemon = start_daemon(name, argv, log=self.logs_dir / f"{name}.log", env=env)
        state = self._require()
        state.daemons.append(_daemon_record(daemon, argv))
        self._save()
        return daemon

    def _wait(self, what: str, ready: Callable[[], bool], timeout_s: float, *watch: Daemon) -> None:
        _wait_until(what, ready, timeout_s=timeout_s, watch=watch)

    def _create_directory(self) -> Path:
        if self._directory is None:
            return Path(tempfile.mkdtemp(prefix="dra-cluster-", dir="/tmp"))
        directory = self._directory.resolve()
        if (directory / "state.json").exists():
            raise ClusterError(
                f"{directory}: a cluster's state file is already there; run "
                f"`python -m e2e.cluster down --dir {directory}` first"
            )
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _start_control_plane(self) -> None:
        directory = self._create_directory()
        cluster_id = secrets.token_hex(3)
        assert self._bin_dir is not None
        self._state = _State(
            version=STATE_VERSION,
            cluster_id=cluster_id,
            directory=str(directory),
            bin_dir=str(self._bin_dir),
            node_name=self._node_name,
            owner_pid=0 if self._detached else os.getpid(),
        )
        self.logs_dir.mkdir(exist_ok=True)
        self._save()
        self._say(f"cluster {cluster_id} in {directory}; binaries from {self._bin_dir}")

        t0 = time.monotonic()
        pki = make_pki(directory / "pki", node_name=self._node_name, service_ip=SERVICE_IP)
        self._state.timings["pki"] = round(time.monotonic() - t0, 2)
        ports = ControlPlanePorts(*(free_port() for _ in range(5)))
        self._state.ports = asdict(ports)
        bin_dir = self._bin_dir
        gates = self._feature_gates

        etcd = self._start("etcd", etcd_argv(bin_dir, directory / "etcd", ports))
        self._wait(
            "etcd /health",
            lambda: probe(
                f"http://127.0.0.1:{ports.etcd_client}/health", expect=b'"health":"true"'
            ),
            60,
            etcd,
        )
        self._say(f"etcd ready on 127.0.0.1:{ports.etcd_client}")
        apiserver = self._start(
            "kube-apiserver", apiserver_argv(bin_dir, pki, ports=ports, feature_gates=gates)
        )
        url = f"https://127.0.0.1:{ports.apiserver}"
        self._state.apiserver_url = url
        self._save()
        self._wait(
            "kube-apiserver /readyz", lambda: probe(f"{url}/readyz", pki=pki), 180, apiserver, etcd
        )
        self._say(f"kube-apiserver ready at {url}")

        def kubeconfig(stem: str, identity_name: str) -> Path:
            return write_kubeconfig(
                directory / stem,
                server=url,
                ca_cert=pki.ca_cert,
                identity=getattr(pki, identity_name),
                user=identity_name.replace("_", "-"),
            )

        kubeconfig("kubeconfig", "admin")
        kcm = self._start(
            "kube-controller-manager",
            controller_manager_argv(
                bin_dir,
                pki,
                ports=ports,
                kubeconfig=kubeconfig("controller-manager.kubeconfig", "controller_manager"),
                cert_dir=directory / "controller-manager",
                feature_gates=gates,
            ),
        )
        scheduler = self._start(
            "kube-scheduler",
            scheduler_argv(
                bin_dir,
                ports=ports,
                kubeconfig=kubeconfig("scheduler.kubeconfig", "scheduler"),
                config_path=directory / "scheduler.yaml",
                cert_dir=directory / "scheduler",
                feature_gates=gates,
            ),
        )
        self._wait(
            "kube-controller-manager /healthz",
            lambda: probe(f"https://127.0.0.1:{ports.controller_manager}/healthz"),
            120,
            kcm,
            apiserver,
        )
        self._wait(
            "kube-scheduler /healthz",
            lambda: probe(f"https://127.0.0.1:{ports.scheduler}/healthz"),
            120,
            scheduler,
            apiserver,
        )
        self._pki = pki
        self._wait(
            "resource.k8s.io/v1 served",
            lambda: self._get("/apis/resource.k8s.io/v1") is not None,
            60,
            apiserver,
        )
        self._state.phase = "control-plane-ready"
        self._state.timings["control_plane"] = round(time.monotonic() - t0, 2)
        self._save()
        self._say(
            "control plane ready (etcd, kube-apiserver, kube-controller-manager, "
            f"kube-scheduler) in {self._state.timings['control_plane']:.1f} s"
        )

    def _start_node(self) -> None:
        state = self._require()
        t0 = time.monotonic()
        bin_dir = self.bin_dir
        paths = self.node_paths
        for directory in (
            paths.containerd,
            paths.cdi,
            paths.cni_conf,
            paths.cni_ipam,
            paths.kubelet_root,
            paths.pod_logs,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        state.cgroup_root = f"dra-cluster-{state.cluster_id}"
        state.bridge = f"dra{state.cluster_id}"
        state.cni_network = f"dra-{state.cluster_id}"
        subnet = host.choose_subnet(state.cluster_id)
        state.subnet = str(subnet)
        host.record_host_state()
        state.host_recorded = True
        self._save()

        host.create_cgroup_root(state.cgroup_root)
        state.node_ip = host.create_bridge(state.bridge, subnet)
        self._save()
        cni_bin = bin_dir.parent / "cni" / "bin"
        paths.cni_conf.joinpath("10-dra-local.conflist").write_text(
            host.cni_conflist(
                network=state.cni_network,
                bridge=state.bridge,
                subnet=subnet,
                ipam_dir=paths.cni_ipam,
            )
        )
        paths.containerd_config.write_text(
            host.containerd_config(paths, bin_dir=bin_dir, cni_bin_dir=cni_bin)
        )
        # The shim (containerd-shim-runc-v2) is found on PATH: ours must come first.
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        containerd = self._start(
            "containerd", [str(bin_dir / "containerd"), f"--config={paths.containerd_config}"], env
        )
        ctr = [str(bin_dir / "ctr"), "--address", str(paths.containerd_socket)]
        self._wait(
            "containerd",
            lambda: (
                subprocess.run([*ctr, "version"], capture_output=True, check=False).returncode == 0
            ),
            60,
            containerd,
        )
        self._say(f"containerd ready on {paths.containerd_socket} (CDI specs from {paths.cdi})")
        t_images = time.monotonic()
        build_and_import_images(bin_dir, paths.images, containerd_socket=paths.containerd_socket)
        state.timings["images"] = round(time.monotonic() - t_images, 2)
        self._say(f"images {host.BUSYBOX_IMAGE} and {host.PAUSE_IMAGE} built and imported")

        directory = self.directory
        pki = self._pki
        kubelet_kubeconfig = write_kubeconfig(
            directory / "kubelet.kubeconfig",
            server=state.apiserver_url,
            ca_cert=pki.ca_cert,
            identity=pki.kubelet,
            user=f"system:node:{self._node_name}",
        )
        port, healthz = free_port(), free_port()
        state.ports.update(kubelet=port, kubelet_healthz=healthz)
        paths.kubelet_config.write_text(
            host.kubelet_config(
                paths,
                ca_cert=pki.ca_cert,
                port=port,
                healthz_port=healthz,
                address=state.node_ip,
                cgroup_root=state.cgroup_root,
                feature_gates=self._feature_gates,
            )
        )
        kubelet = self._start(
            "kubelet",
            host.kubelet_argv(
                bin_dir,
                paths,
                kubeconfig=kubelet_kubeconfig,
                node_name=self._node_name,
                node_ip=state.node_ip,
            ),
            host.kubelet_env(bin_dir),
        )
        apiserver = self._daemon("kube-apiserver")
        assert apiserver is not None
        self._wait(
            f"node {self._node_name} Ready", self._node_ready, 180, kubelet, containerd, apiserver
        )
        self._wait(
            "ServiceAccount default/default and ConfigMap default/kube-root-ca.crt",
            lambda: (
                self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None
                and self._get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt") is not None
            ),
            60,
            apiserver,
        )
        state.tier = "kubelet"
        state.phase = "ready"
        state.timings["node"] = round(time.monotonic() - t0, 2)
        state.timings["total"] = round(time.monotonic() - self._started_at, 2)
        self._save()
        self._say(
            f"node {self._node_name} Ready with a real kubelet (InternalIP {state.node_ip}, "
            f"pods in {state.subnet}) in {state.timings['node']:.1f} s"
        )

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
        state = self._require()
        return self._restart(
            "kube-apiserver",
            lambda: probe(f"{state.apiserver_url}/readyz", context=self._ssl_context()),
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
        state = self._require()
        old = self._daemon(name)
        if old is None:
            raise ClusterError(
                f"cluster {state.cluster_id}: no {name} recorded in {self.state_file}"
            )
        argv = self._argv(name, old)
        t0 = time.monotonic()
        self._say(f"restarting {name} (pid {old.pid})")
        stop_group(old)
        new = start_daemon(name, argv, log=old.log)
        state.daemons = [
            _daemon_record(new, argv) if d["name"] == name else d for d in state.daemons
        ]
        self._save()
        watched = [d for d in (self._daemon(n) for n in needs) if d is not None]
        self._wait(f"{what} after a restart", ready, timeout_s, new, *watched)
        took = round(time.monotonic() - t0, 2)
        self._say(f"{name} back (pid {new.pid}) after {took:.1f} s")
        return took

    def _argv(self, name: str, daemon: Daemon) -> list[str]:
        """The command line ``name`` was started with: from the state file, or (a state
        file written before command lines were recorded) from the running process."""
        for record in self._require().daemons:
            if record["name"] == name and record.get("argv"):
                return [str(arg) for arg in record["argv"]]
        if not daemon.alive():
            raise ClusterError(f"{name}: its command line is unknown and it does not run")
        raw = Path(f"/proc/{daemon.pid}/cmdline").read_bytes()
        argv = [arg.decode() for arg in raw.split(b"\0") if arg]
        if not argv:
            raise ClusterError(f"{name} (pid {daemon.pid}): its command line cannot be read")
        return argv

    # --- API reads without the kubernetes client ------------------------------------------

    _pki: Pki

    def _ssl_context(self) -> ssl.SSLContext:
        pki_dir = self.directory / "pki"
        context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
        return context

    def _get(self, path: str) -> Any:
        """GET ``path`` as admin; the decoded JSON, or None on any error (404 included)."""
        try:
            with urllib.request.urlopen(
                self.apiserver_url + path, timeout=5, context=self._ssl_context()
            ) as response:
                return json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def _node_ready(self) -> bool:
        node = self._get(f"/api/v1/nodes/{self._node_name}")
        if not node:
            return False
        conditions = node.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    # --- down ------------------------------------------------------------------------------

    def down(self, *, keep_directory: bool = False) -> None:
        """Stop everything and undo every host change; remove the directory.

        Idempotent, and safe on a cluster that only half started. Every step is
        tried even when an earlier one failed; then a ClusterError lists the
        failures (and the directory is kept, for its logs). ``keep_directory``
        keeps it in any case.
        """
        if self._state is None:
            return
        state = self._state
        if not self._started_at:
            self._started_at = time.monotonic()
        state.phase = "stopping"
        with contextlib.suppress(OSError):
            self._save()
        directory = Path(state.directory)
        failures: list[str] = []

        @contextlib.contextmanager
        def step(what: str) -> Iterator[None]:
            try:
                yield
            except (ClusterError, OSError, subprocess.SubprocessError) as err:
                failures.append(f"{what}: {err}")
                self._say(f"teardown: {what} failed: {err}")

        t0 = time.monotonic()
        self._say(f"tearing down cluster {state.cluster_id} in {directory}")
        daemons = {d.name: d for d in self._daemons()}
        if "kubelet" in daemons:
            with step("stop kubelet"):
                stop_group(daemons["kubelet"])
        if state.cgroup_root:
            with step(f"kill the processes of cgroup /{state.cgroup_root}"):
                killed = host.kill_cgroup_processes(state.cgroup_root)
                if killed:
                    self._say(f"teardown: killed {killed} container processes")
        if "containerd" in daemons:
            with step("stop containerd"):
                stop_group(daemons["containerd"])
            with step("stop containerd's shims"):
                socket = str(host.NodePaths(directory / "node").containerd_socket)
                for pid in pids_with_argument(socket):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 9)
        with step(f"unmount everything below {directory}"):
            count = host.unmount_under(directory)
            if count:
                self._say(f"teardown: {count} mounts removed")
        if state.cgroup_root:
            with step(f"remove cgroup /{state.cgroup_root}"):
                host.remove_cgroup_root(state.cgroup_root)
        if state.bridge:
            with step(f"delete bridge {state.bridge}"):
                host.delete_link(state.bridge)
        if state.cni_network:
            with step("remove CNI cache entries"):
                host.remove_cni_cache(state.cni_network)
        with step("remove /var/log/containers links"):
            host.remove_container_log_links(host.NodePaths(directory / "node").pod_logs)
        if state.host_recorded:
            with step("restore the host's sysctls and shared paths"):
                restored = host.restore_host_state()
                if restored is None:
                    self._say(
                        "teardown: sysctls and shared paths left to another cluster's kubelet"
                    )
                else:
                    if restored.sysctls:
                        self._say(f"teardown: restored {', '.join(restored.sysctls)}")
                    if restored.kept_paths:
                        self._say(
                            f"teardown: kept {', '.join(restored.kept_paths)}: "
                            "in use or holding files of others"
                        )
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            if name in daemons:
                with step(f"stop {name}"):
                    stop_group(daemons[name])
        leftovers = [d.name for d in daemons.values() if d.alive()]
        if leftovers:
            failures.append(f"still running: {', '.join(leftovers)}")
        if failures:
            with contextlib.suppress(OSError):
                self._save()
            raise ClusterError(
                f"cluster {state.cluster_id}: teardown incomplete (state and logs kept in "
                f"{directory}):\n  " + "\n  ".join(failures)
            )
        if keep_directory:
            state.phase = "stopped"
            self._save()
        else:
            shutil.rmtree(directory, ignore_errors=True)
        self._say(f"cluster {state.cluster_id} torn down in {time.monotonic() - t0:.1f} s")


def _daemon_record(daemon: Daemon, argv: list[str]) -> dict[str, Any]:
    """A daemon as state.json records it: enough to stop it, and to start it again."""
    return {
        "name": daemon.name,
        "pid": daemon.pid,
        "start_time": daemon.start_time,
        "log": str(daemon.log),
        "argv": list(argv),
    }


def reap_orphans(progress: Progress = _stderr_progress) -> list[Path]:
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
