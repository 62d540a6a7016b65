"""``up()``'s steps, in order: the cluster directory and its state, the control plane,
then the node; each daemon is recorded in the state file as soon as it starts, and
each step is waited for (failing at once when a daemon it needs exits).

1. etcd, kube-apiserver (RBAC and Node authorization, NodeRestriction,
   resource.k8s.io/v1), then kube-controller-manager (resourceclaim,
   serviceaccount and token controllers) and kube-scheduler, all on 127.0.0.1
   on ports free at the time; certificates and keys are made fresh;
2. the node: containerd 1.7 (CRI with CDI on, the cluster's own CDI directory),
   a pause and a busybox image built here and imported, a CNI bridge, and the
   kubelet, until the Node is Ready and the ``default`` ServiceAccount exists.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from e2e.cluster import host
from e2e.cluster import node as config
from e2e.cluster.access import AdminReader
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
from e2e.cluster.processes import free_port
from e2e.cluster.state import STATE_VERSION, ClusterRecord, ClusterState, Progress

__all__ = ["create_record", "start_control_plane", "start_node"]


def _create_directory(directory: Path | None) -> Path:
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="dra-cluster-", dir="/tmp"))
    directory = directory.resolve()
    if (directory / "state.json").exists():
        raise ClusterError(
            f"{directory}: a cluster's state file is already there; run "
            f"`python -m e2e.cluster down --dir {directory}` first"
        )
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def create_record(
    directory: Path | None, *, bin_dir: Path, node_name: str, detached: bool, say: Progress
) -> ClusterRecord:
    """A new cluster id, its directory (``directory``, or a new ``/tmp/dra-cluster-XXXXXX``)
    and its first state file. Raises ClusterError when a cluster's state is already there."""
    path = _create_directory(directory)
    cluster_id = secrets.token_hex(3)
    record = ClusterRecord(
        ClusterState(
            version=STATE_VERSION,
            cluster_id=cluster_id,
            directory=str(path),
            bin_dir=str(bin_dir),
            node_name=node_name,
            owner_pid=0 if detached else os.getpid(),
        ),
        say,
    )
    record.logs_dir.mkdir(exist_ok=True)
    record.save()
    say(f"cluster {cluster_id} in {path}; binaries from {bin_dir}")
    return record


def start_control_plane(
    record: ClusterRecord, *, feature_gates: Mapping[str, bool], scheduler_qps: int | None = None
) -> Pki:
    """Certificates, etcd, kube-apiserver, kube-controller-manager and kube-scheduler,
    until resource.k8s.io/v1 is served; returns the certificates made. ``scheduler_qps``:
    see :func:`~e2e.cluster.controlplane.scheduler_argv`."""
    state, say, wait = record.state, record.say, record.wait
    directory, bin_dir = record.directory, Path(state.bin_dir)
    t0 = time.monotonic()
    pki = make_pki(directory / "pki", node_name=state.node_name, service_ip=SERVICE_IP)
    state.timings["pki"] = round(time.monotonic() - t0, 2)
    ports = ControlPlanePorts(*(free_port() for _ in range(5)))
    state.ports = asdict(ports)

    etcd = record.start("etcd", etcd_argv(bin_dir, directory / "etcd", ports))
    wait(
        "etcd /health",
        lambda: probe(f"http://127.0.0.1:{ports.etcd_client}/health", expect=b'"health":"true"'),
        60,
        etcd,
    )
    say(f"etcd ready on 127.0.0.1:{ports.etcd_client}")
    apiserver = record.start(
        "kube-apiserver", apiserver_argv(bin_dir, pki, ports=ports, feature_gates=feature_gates)
    )
    url = f"https://127.0.0.1:{ports.apiserver}"
    state.apiserver_url = url
    record.save()
    wait("kube-apiserver /readyz", lambda: probe(f"{url}/readyz", pki=pki), 180, apiserver, etcd)
    say(f"kube-apiserver ready at {url}")

    def kubeconfig(stem: str, identity_name: str) -> Path:
        return write_kubeconfig(
            directory / stem,
            server=url,
            ca_cert=pki.ca_cert,
            identity=getattr(pki, identity_name),
            user=identity_name.replace("_", "-"),
        )

    kubeconfig("kubeconfig", "admin")
    kcm = record.start(
        "kube-controller-manager",
        controller_manager_argv(
            bin_dir,
            pki,
            ports=ports,
            kubeconfig=kubeconfig("controller-manager.kubeconfig", "controller_manager"),
            cert_dir=directory / "controller-manager",
            feature_gates=feature_gates,
        ),
    )
    scheduler = record.start(
        "kube-scheduler",
        scheduler_argv(
            bin_dir,
            ports=ports,
            kubeconfig=kubeconfig("scheduler.kubeconfig", "scheduler"),
            config_path=directory / "scheduler.yaml",
            cert_dir=directory / "scheduler",
            feature_gates=feature_gates,
            client_qps=scheduler_qps,
        ),
    )
    wait(
        "kube-controller-manager /healthz",
        lambda: probe(f"https://127.0.0.1:{ports.controller_manager}/healthz"),
        120,
        kcm,
        apiserver,
    )
    wait(
        "kube-scheduler /healthz",
        lambda: probe(f"https://127.0.0.1:{ports.scheduler}/healthz"),
        120,
        scheduler,
        apiserver,
    )
    reader = AdminReader(directory, url)
    wait(
        "resource.k8s.io/v1 served",
        lambda: reader.get("/apis/resource.k8s.io/v1") is not None,
        60,
        apiserver,
    )
    state.phase = "control-plane-ready"
    state.timings["control_plane"] = round(time.monotonic() - t0, 2)
    record.save()
    say(
        "control plane ready (etcd, kube-apiserver, kube-controller-manager, "
        f"kube-scheduler) in {state.timings['control_plane']:.1f} s"
    )
    return pki


def _prepare_host(record: ClusterRecord, cni_bin: Path) -> None:
    """The node's directories, host record, cgroup root, bridge, CNI network and
    containerd config; the state file names each host change before it is made."""
    state, paths = record.state, record.node_paths
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
    record.save()

    host.create_cgroup_root(state.cgroup_root)
    state.node_ip = host.create_bridge(state.bridge, subnet)
    record.save()
    paths.cni_conf.joinpath("10-dra-local.conflist").write_text(
        config.cni_conflist(
            network=state.cni_network,
            bridge=state.bridge,
            subnet=subnet,
            ipam_dir=paths.cni_ipam,
        )
    )
    paths.containerd_config.write_text(
        config.containerd_config(paths, bin_dir=Path(state.bin_dir), cni_bin_dir=cni_bin)
    )


def start_node(
    record: ClusterRecord, pki: Pki, *, feature_gates: Mapping[str, bool], started_at: float
) -> None:
    """containerd, the node's images, the pods' network and the kubelet, until the Node
    is Ready and pods in ``default`` can be admitted. ``started_at``: when ``up()`` began
    (for the total in the timings)."""
    state, say, wait = record.state, record.say, record.wait
    t0 = time.monotonic()
    bin_dir, paths = Path(state.bin_dir), record.node_paths
    _prepare_host(record, cni_bin=bin_dir.parent / "cni" / "bin")
    # The shim (containerd-shim-runc-v2) is found on PATH: ours must come first.
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    containerd = record.start(
        "containerd", [str(bin_dir / "containerd"), f"--config={paths.containerd_config}"], env
    )
    ctr = [str(bin_dir / "ctr"), "--address", str(paths.containerd_socket)]
    wait(
        "containerd",
        lambda: subprocess.run([*ctr, "version"], capture_output=True, check=False).returncode == 0,
        60,
        containerd,
    )
    say(f"containerd ready on {paths.containerd_socket} (CDI specs from {paths.cdi})")
    t_images = time.monotonic()
    build_and_import_images(bin_dir, paths.images, containerd_socket=paths.containerd_socket)
    state.timings["images"] = round(time.monotonic() - t_images, 2)
    say(f"images {config.BUSYBOX_IMAGE} and {config.PAUSE_IMAGE} built and imported")

    kubelet_kubeconfig = write_kubeconfig(
        record.directory / "kubelet.kubeconfig",
        server=state.apiserver_url,
        ca_cert=pki.ca_cert,
        identity=pki.kubelet,
        user=f"system:node:{state.node_name}",
    )
    port, healthz = free_port(), free_port()
    state.ports.update(kubelet=port, kubelet_healthz=healthz)
    paths.kubelet_config.write_text(
        config.kubelet_config(
            paths,
            ca_cert=pki.ca_cert,
            port=port,
            healthz_port=healthz,
            address=state.node_ip,
            cgroup_root=state.cgroup_root,
            feature_gates=feature_gates,
        )
    )
    kubelet = record.start(
        "kubelet",
        config.kubelet_argv(
            bin_dir,
            paths,
            kubeconfig=kubelet_kubeconfig,
            node_name=state.node_name,
            node_ip=state.node_ip,
        ),
        config.kubelet_env(bin_dir),
    )
    apiserver = record.daemon("kube-apiserver")
    assert apiserver is not None
    reader = AdminReader(record.directory, state.apiserver_url)
    wait(
        f"node {state.node_name} Ready",
        lambda: reader.node_ready(state.node_name),
        180,
        kubelet,
        containerd,
        apiserver,
    )
    wait(
        "ServiceAccount default/default and ConfigMap default/kube-root-ca.crt",
        reader.default_namespace_usable,
        60,
        apiserver,
    )
    state.tier = "kubelet"
    state.phase = "ready"
    state.timings["node"] = round(time.monotonic() - t0, 2)
    state.timings["total"] = round(time.monotonic() - started_at, 2)
    record.save()
    say(
        f"node {state.node_name} Ready with a real kubelet (InternalIP {state.node_ip}, "
        f"pods in {state.subnet}) in {state.timings['node']:.1f} s"
    )
