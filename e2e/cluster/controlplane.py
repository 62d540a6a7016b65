"""The control plane's command lines and readiness probes: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, all on 127.0.0.1.

The flags are those of a stock kubeadm control plane where they matter to DRA
(RBAC and Node authorization, NodeRestriction, service-account tokens signed
by a key of our own, the resourceclaim controller), and otherwise chosen for a
short-lived test cluster: no leader election, etcd without fsync.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from e2e.cluster.pki import Pki

__all__ = [
    "POOL_STATUS_API",
    "POOL_STATUS_GATES",
    "SERVICE_CIDR",
    "SERVICE_IP",
    "WORKLOAD_API",
    "WORKLOAD_GATES",
    "ControlPlanePorts",
    "apiserver_argv",
    "controller_manager_argv",
    "etcd_argv",
    "feature_gates_flag",
    "probe",
    "scheduler_argv",
]

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
"""The ``kubernetes`` Service's cluster IP: the first address of SERVICE_CIDR."""
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
WORKLOAD_GATES: Mapping[str, bool] = {"GenericWorkload": True}
"""On in the API server, the scheduler and the controller-manager (a caller's gates win).

``GenericWorkload`` (beta, off by default in 1.37) serves Workload and PodGroup and keeps
``spec.schedulingGroup`` of pods (the API server), turns on the scheduler's gang plugin,
and starts the PodGroup protection controller. It changes nothing for a pod without
``spec.schedulingGroup``."""
WORKLOAD_API = "scheduling.k8s.io/v1beta1=true"
"""The API version of Workload and PodGroup: beta, so served only when asked for."""
POOL_STATUS_GATES: Mapping[str, bool] = {"DRAResourcePoolStatus": True}
"""On in the API server and the controller-manager (a caller's gates win).

``DRAResourcePoolStatus`` (alpha, off by default in 1.37) serves ResourcePoolStatusRequest
(the API server) and starts the ``resourcepoolstatusrequest-controller`` that fills their
status (the controller-manager; ``*`` in ``--controllers`` holds it once the gate is on).
Nothing else reads it: no scheduling or kubelet behaviour changes."""
POOL_STATUS_API = "resource.k8s.io/v1alpha3=true"
"""The API version of ResourcePoolStatusRequest (and the alpha DeviceTaintRule): alpha, so
served only when asked for."""


@dataclass(frozen=True, slots=True)
class ControlPlanePorts:
    """Loopback ports, chosen free at start-up."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


def _with_workloads(gates: Mapping[str, bool]) -> dict[str, bool]:
    return {**WORKLOAD_GATES, **gates}


def _with_pool_status(gates: Mapping[str, bool]) -> dict[str, bool]:
    return {**WORKLOAD_GATES, **POOL_STATUS_GATES, **gates}


def feature_gates_flag(gates: Mapping[str, bool]) -> list[str]:
    """``--feature-gates=A=true,B=false`` or nothing when there are none."""
    if not gates:
        return []
    return [
        "--feature-gates=" + ",".join(f"{k}={str(v).lower()}" for k, v in sorted(gates.items()))
    ]


def etcd_argv(bin_dir: Path, data_dir: Path, ports: ControlPlanePorts) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(bin_dir / "etcd"),
        "--name=dra-local",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=dra-local={peer}",
        # A cluster that lives for one test session needs no durability, and fsync on
        # a shared 2-core VM is what makes an API server slow.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_argv(
    bin_dir: Path, pki: Pki, *, ports: ControlPlanePorts, feature_gates: Mapping[str, bool]
) -> list[str]:
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # The endpoint reconciler refuses a loopback address for the `kubernetes`
        # Service. Pods here do not reach the API server through that Service (there
        # is no kube-proxy), and the driver's plugin is given a kubeconfig.
        "--endpoint-reconciler-type=none",
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki.apiserver_cert}",
        f"--tls-private-key-file={pki.apiserver_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--kubelet-client-certificate={pki.apiserver_kubelet_client.cert}",
        f"--kubelet-client-key={pki.apiserver_kubelet_client.key}",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true",
        "--profiling=false",
        f"--runtime-config={WORKLOAD_API},{POOL_STATUS_API}",
        *feature_gates_flag(_with_pool_status(feature_gates)),
    ]


def controller_manager_argv(
    bin_dir: Path,
    pki: Pki,
    *,
    ports: ControlPlanePorts,
    kubeconfig: Path,
    cert_dir: Path,
    feature_gates: Mapping[str, bool],
) -> list[str]:
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        f"--cert-dir={cert_dir}",
        "--leader-elect=false",
        # '*' holds resourceclaim-controller (claims from templates) and the
        # serviceaccount and serviceaccount-token controllers; spelled out so that a
        # future default does not silently drop them.
        "--controllers=*,resourceclaim-controller,serviceaccount-controller,"
        "serviceaccount-token-controller,root-ca-certificate-publisher-controller",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca_cert}",
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allocate-node-cidrs=false",
        "--profiling=false",
        *feature_gates_flag(_with_pool_status(feature_gates)),
    ]


def scheduler_argv(
    bin_dir: Path,
    *,
    ports: ControlPlanePorts,
    kubeconfig: Path,
    config_path: Path,
    cert_dir: Path,
    feature_gates: Mapping[str, bool],
    client_qps: int | None = None,
) -> list[str]:
    """The command line; also writes the KubeSchedulerConfiguration to ``config_path``.

    ``client_qps``: the scheduler's API client rate limit (``clientConnection.qps``, burst
    twice that); default the scheduler's own (50, burst 100)."""
    connection: dict[str, object] = {"kubeconfig": str(kubeconfig)}
    if client_qps is not None:
        connection.update(qps=client_qps, burst=2 * client_qps)
    config_path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "KubeSchedulerConfiguration",
                "clientConnection": connection,
                "leaderElection": {"leaderElect": False},
            }
        )
    )
    return [
        str(bin_dir / "kube-scheduler"),
        f"--config={config_path}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        f"--cert-dir={cert_dir}",
        "--profiling=false",
        *feature_gates_flag(_with_workloads(feature_gates)),
    ]


def probe(
    url: str,
    *,
    pki: Pki | None = None,
    context: ssl.SSLContext | None = None,
    expect: bytes = b"ok",
    timeout_s: float = 2.0,
) -> bool:
    """Whether GET ``url`` answers 200 with ``expect`` in its body.

    With ``pki`` the server's certificate is verified against the cluster CA and
    the admin certificate is presented; ``context`` is such a context made
    elsewhere (from the files of a cluster loaded from its state). Without
    either (the controller-manager's and scheduler's self-signed serving
    certificates, and their anonymously readable /healthz) nothing is verified.
    """
    if not url.startswith("https://"):
        context = None
    elif context is None and pki is not None:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
    elif context is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
            body: bytes = response.read()
            return response.status == 200 and expect in body
    except (OSError, urllib.error.URLError):
        return False
