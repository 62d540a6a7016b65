"""The node's configuration: where it keeps things, containerd's config.toml, the
pods' CNI network and the kubelet's configuration, command line and environment.

What this VM needs (see the notes on running runtimes here) and where it is set:

- no systemd: the kubelet and runc use the ``cgroupfs`` driver;
- cgroup v1: the kubelet refuses it unless ``failCgroupV1: false``;
- no CAP_SYS_RESOURCE: containerd must not lower the sandbox's oom_score_adj
  (``restrict_oom_score_adj``), or runc fails with "can't get final child's PID";
- no swap accounting wanted: ``failSwapOn: false``;
- CDI: containerd 1.7 with ``enable_cdi`` and the cluster's own CDI directory;
- network namespaces kept under containerd's state directory
  (``netns_mounts_under_state_dir``) instead of /var/run/netns.

Everything here is text or paths; what the node changes on the host, and the
code that undoes it, is :mod:`e2e.cluster.host`.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = [
    "BUSYBOX_IMAGE",
    "PAUSE_IMAGE",
    "NodePaths",
    "cni_conflist",
    "containerd_config",
    "kubelet_argv",
    "kubelet_config",
    "kubelet_env",
]

PAUSE_IMAGE = "docker.io/local/pause:dra-e2e"
BUSYBOX_IMAGE = "docker.io/local/busybox:dra-e2e"
"""The test image, a static busybox; pods name it ``local/busybox:dra-e2e``."""


@dataclass(frozen=True, slots=True)
class NodePaths:
    """Where the node keeps everything, below the cluster directory."""

    root: Path

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def containerd_state(self) -> Path:
        return self.containerd / "state"

    @property
    def cdi(self) -> Path:
        """containerd's CDI spec directory: the kubelet plugin's CDI root."""
        return self.root / "cdi"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def plugins_registry(self) -> Path:
        """Where DRA plugins put their registration sockets."""
        return self.kubelet_root / "plugins_registry"

    @property
    def plugins(self) -> Path:
        """Where DRA plugins put their service sockets (``<dir>/<driver>/dra.sock``)."""
        return self.kubelet_root / "plugins"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def images(self) -> Path:
        return self.root / "images"


# --- containerd and CNI ------------------------------------------------------------------


def _toml_string(value: str | Path) -> str:
    return json.dumps(str(value))


def containerd_config(paths: NodePaths, *, bin_dir: Path, cni_bin_dir: Path) -> str:
    """containerd 1.7's config.toml (version 2) for this node."""
    state = paths.containerd_state
    return "\n".join(
        [
            "version = 2",
            f"root = {_toml_string(paths.containerd / 'root')}",
            f"state = {_toml_string(state)}",
            # Storage drivers this VM lacks only add errors to the log.
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", '
            '"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", '
            '"io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", '
            '"io.containerd.internal.v1.tracing"]',
            "[grpc]",
            f"  address = {_toml_string(paths.containerd_socket)}",
            "[ttrpc]",
            f"  address = {_toml_string(str(paths.containerd_socket) + '.ttrpc')}",
            '[plugins."io.containerd.internal.v1.opt"]',
            f"  path = {_toml_string(paths.containerd / 'opt')}",
            '[plugins."io.containerd.grpc.v1.cri"]',
            f"  sandbox_image = {_toml_string(PAUSE_IMAGE)}",
            "  enable_cdi = true",
            f"  cdi_spec_dirs = [{_toml_string(paths.cdi)}]",
            "  restrict_oom_score_adj = true",
            "  netns_mounts_under_state_dir = true",
            '[plugins."io.containerd.grpc.v1.cri".containerd]',
            '  default_runtime_name = "runc"',
            '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
            '  runtime_type = "io.containerd.runc.v2"',
            '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
            "  SystemdCgroup = false",
            f"  BinaryName = {_toml_string(bin_dir / 'runc')}",
            # runc's state, by default /run/containerd/runc, stays under our state dir.
            f"  Root = {_toml_string(state / 'runc')}",
            '[plugins."io.containerd.grpc.v1.cri".cni]',
            f"  bin_dir = {_toml_string(cni_bin_dir)}",
            f"  conf_dir = {_toml_string(paths.cni_conf)}",
            "  max_conf_num = 1",
            "",
        ]
    )


def cni_conflist(
    *, network: str, bridge: str, subnet: ipaddress.IPv4Network, ipam_dir: Path
) -> str:
    """A bridge network for pods, without masquerading or port maps (no iptables)."""
    gateway = next(subnet.hosts())
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(subnet), "gateway": str(gateway)}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(ipam_dir),
                    },
                },
                {"type": "loopback"},
            ],
        },
        indent=2,
    )


# --- the kubelet --------------------------------------------------------------------------------


def kubelet_config(
    paths: NodePaths,
    *,
    ca_cert: Path,
    port: int,
    healthz_port: int,
    address: str,
    cgroup_root: str,
    feature_gates: Mapping[str, bool],
) -> str:
    """The KubeletConfiguration (kubelet.config.k8s.io/v1beta1) of the node."""
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "podLogsDir": str(paths.pod_logs),
        # A test cluster on a shared disk must not evict its pods or delete its
        # images (which cannot be pulled back: there is no registry).
        "evictionHard": {
            "memory.available": "10Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "featureGates": dict(feature_gates),
    }
    return yaml.safe_dump(config, sort_keys=False)


def kubelet_env(bin_dir: Path) -> dict[str, str]:
    """The kubelet's environment: PATH without the directories that hold iptables.

    A kubelet that finds iptables creates KUBE-* chains and a KUBE-FIREWALL rule
    in the host's tables, which outlive it. Pods here need none of them (no
    kube-proxy, no masquerading), so the kubelet does not see iptables and says
    so once in its log. mount, umount, nsenter, du and find stay reachable.
    """
    system = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin").split(":")
    kept = [d for d in system if d and not (Path(d) / "iptables").exists()]
    return dict(os.environ, PATH=":".join([str(bin_dir), *kept]))


def kubelet_argv(
    bin_dir: Path, paths: NodePaths, *, kubeconfig: Path, node_name: str, node_ip: str
) -> list[str]:
    return [
        str(bin_dir / "kubelet"),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.kubelet_root / 'pki'}",
        f"--hostname-override={node_name}",
        f"--node-ip={node_ip}",
    ]
