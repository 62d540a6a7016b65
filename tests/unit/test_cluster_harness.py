"""The local cluster harness's pure parts: configuration it renders, certificates, the CLI,
state files and host-path cleanup. Starting the real cluster is tests/cluster's job."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from e2e.cluster import ClusterError, LocalCluster, controlplane, host, node, pki  # noqa: E402
from e2e.cluster import __main__ as cli  # noqa: E402
from e2e.cluster.processes import Daemon, log_tail, start_daemon, stop_group  # noqa: E402

BIN = Path("/opt/k8s/bin")
CNI = Path("/opt/k8s/cni/bin")


def test_containerd_config_turns_cdi_on_and_keeps_state_in_the_cluster(tmp_path: Path) -> None:
    paths = node.NodePaths(tmp_path)
    config = tomllib.loads(node.containerd_config(paths, bin_dir=BIN, cni_bin_dir=CNI))
    assert config["version"] == 2
    assert config["root"].startswith(str(tmp_path))
    assert config["state"] == str(paths.containerd_state)
    assert config["grpc"]["address"] == str(paths.containerd_socket)
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["enable_cdi"] is True
    assert cri["cdi_spec_dirs"] == [str(paths.cdi)]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == node.PAUSE_IMAGE
    options = cri["containerd"]["runtimes"]["runc"]["options"]
    assert options == {
        "SystemdCgroup": False,
        "BinaryName": str(BIN / "runc"),
        "Root": str(paths.containerd_state / "runc"),
    }
    assert cri["cni"] == {"bin_dir": str(CNI), "conf_dir": str(paths.cni_conf), "max_conf_num": 1}


def test_kubelet_config_allows_cgroup_v1_without_systemd_or_swap_check(tmp_path: Path) -> None:
    paths = node.NodePaths(tmp_path)
    config = yaml.safe_load(
        node.kubelet_config(
            paths,
            ca_cert=tmp_path / "ca.crt",
            port=10250,
            healthz_port=10248,
            address="10.244.3.1",
            cgroup_root="dra-cluster-abc123",
            feature_gates={"DRAFractionalCapacityRange": True},
        )
    )
    assert config["kind"] == "KubeletConfiguration"
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False
    assert config["failSwapOn"] is False
    assert config["cgroupRoot"] == "/dra-cluster-abc123"
    assert config["containerRuntimeEndpoint"] == f"unix://{paths.containerd_socket}"
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["readOnlyPort"] == 0
    assert config["featureGates"] == {"DRAFractionalCapacityRange": True}


def test_kubelet_env_hides_iptables_but_keeps_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sbin, usr_bin = tmp_path / "sbin", tmp_path / "bin"
    for directory, tool in ((sbin, "iptables"), (usr_bin, "mount")):
        directory.mkdir()
        (directory / tool).touch(mode=0o755)
    monkeypatch.setenv("PATH", f"{usr_bin}:{sbin}")
    path = node.kubelet_env(BIN)["PATH"].split(":")
    assert path == [str(BIN), str(usr_bin)]


def test_cni_conflist_is_a_bridge_without_masquerading(tmp_path: Path) -> None:
    subnet = ipaddress.IPv4Network("10.244.7.0/24")
    conf = json.loads(
        node.cni_conflist(network="dra-x", bridge="drax", subnet=subnet, ipam_dir=tmp_path)
    )
    bridge, loopback = conf["plugins"]
    assert conf["name"] == "dra-x"
    assert bridge["type"] == "bridge" and bridge["bridge"] == "drax"
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.7.0/24", "gateway": "10.244.7.1"}]]
    assert bridge["ipam"]["dataDir"] == str(tmp_path)
    assert loopback == {"type": "loopback"}


def test_feature_gates_flag() -> None:
    assert controlplane.feature_gates_flag({}) == []
    assert controlplane.feature_gates_flag({"B": False, "A": True}) == [
        "--feature-gates=A=true,B=false"
    ]


def test_the_control_plane_serves_pod_groups_and_schedules_gangs(tmp_path: Path) -> None:
    ports = controlplane.ControlPlanePorts(1, 2, 3, 4, 5)
    scheduler = controlplane.scheduler_argv(
        BIN,
        ports=ports,
        kubeconfig=tmp_path / "kc",
        config_path=tmp_path / "config.yaml",
        cert_dir=tmp_path,
        feature_gates={"DRAExtendedResource": True},
    )
    assert "--feature-gates=DRAExtendedResource=true,GenericWorkload=true" in scheduler
    made = pki.make_pki(tmp_path / "pki", node_name="node-a", service_ip="10.0.0.1")
    apiserver = controlplane.apiserver_argv(BIN, made, ports=ports, feature_gates={})
    assert (
        "--runtime-config=scheduling.k8s.io/v1beta1=true,resource.k8s.io/v1alpha3=true" in apiserver
    )
    assert "--feature-gates=DRAResourcePoolStatus=true,GenericWorkload=true" in apiserver
    manager = controlplane.controller_manager_argv(
        BIN,
        made,
        ports=ports,
        kubeconfig=tmp_path / "kc",
        cert_dir=tmp_path,
        feature_gates={"GenericWorkload": False},
    )
    # A caller's own choice wins.
    assert "--feature-gates=DRAResourcePoolStatus=true,GenericWorkload=false" in manager
    # The pool status API's controller runs in the controller-manager; the scheduler
    # does not read the gate.
    assert not any("DRAResourcePoolStatus" in flag for flag in scheduler)


def test_certificates_carry_the_identities_rbac_and_the_node_authorizer_expect(
    tmp_path: Path,
) -> None:
    made = pki.make_pki(tmp_path / "pki", node_name="node-a", service_ip="10.0.0.1")

    def subject(cert: Path) -> str:
        return subprocess.run(
            ["openssl", "x509", "-in", str(cert), "-noout", "-subject", "-nameopt", "RFC2253"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    assert subject(made.kubelet.cert) == "subject=CN=system:node:node-a,O=system:nodes"
    assert subject(made.admin.cert) == "subject=CN=dra-local-admin,O=system:masters"
    assert subject(made.scheduler.cert) == "subject=CN=system:kube-scheduler"
    for cert in (made.apiserver_cert, made.kubelet.cert, made.controller_manager.cert):
        verified = subprocess.run(
            ["openssl", "verify", "-CAfile", str(made.ca_cert), str(cert)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
    sans = subprocess.run(
        ["openssl", "x509", "-in", str(made.apiserver_cert), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:127.0.0.1" in sans and "IP Address:10.0.0.1" in sans
    assert "DNS:kubernetes.default.svc" in sans
    assert oct(made.ca_key.stat().st_mode & 0o777) == "0o600"

    kubeconfig = yaml.safe_load(
        pki.write_kubeconfig(
            tmp_path / "kc",
            server="https://127.0.0.1:6443",
            ca_cert=made.ca_cert,
            identity=made.admin,
            user="admin",
        ).read_text()
    )
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert kubeconfig["users"][0]["user"]["client-key-data"]


def test_cli_rejects_malformed_feature_gates(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["up", "--feature-gates", "DRAFoo=maybe"])
    assert exit_info.value.code == 2
    assert "expected NAME=true or NAME=false" in capsys.readouterr().err


def test_status_and_down_without_a_cluster_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--dir", str(tmp_path)]) == 1
    assert "no readable cluster state" in capsys.readouterr().err
    assert cli.main(["down", "--dir", str(tmp_path)]) == 1


def test_state_of_another_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"version": 999}))
    with pytest.raises(ClusterError, match="state version 999"):
        LocalCluster.load(tmp_path)


def test_daemon_is_stopped_by_process_group_and_identified_by_start_time(tmp_path: Path) -> None:
    log = tmp_path / "sleeper.log"
    daemon = start_daemon("sleeper", ["sh", "-c", "echo started; sleep 60 & wait"], log=log)
    assert daemon.alive()
    impostor = Daemon("sleeper", daemon.pid, daemon.start_time + 1, log)
    assert not impostor.alive(), "a reused pid must not pass for the daemon"
    stop_group(daemon, grace_s=5)
    assert not daemon.alive()
    assert "started" in log_tail(log)
    stop_group(daemon)  # idempotent


def test_created_host_paths_are_removed_only_when_unused_and_holding_no_files(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "run-containerd"
    (empty / "s").mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(empty / "s" / "shim.sock"))
    foreign = tmp_path / "var-lib-cni"
    (foreign / "results").mkdir(parents=True)
    (foreign / "results" / "someone-else").write_text("{}")
    in_use = tmp_path / "var-lib-kubelet"
    in_use.mkdir()
    this_program = Path(os.readlink("/proc/self/exe")).name

    nobody = ("no-such-program-dra",)
    kept = host.remove_created_host_paths(
        {str(empty): nobody, str(foreign): nobody, str(in_use): (this_program,)}
    )

    assert not empty.exists()
    assert sorted(kept) == sorted([str(foreign), str(in_use)])
    assert (foreign / "results" / "someone-else").exists()
    assert in_use.exists()


def test_mounts_under_reads_escaped_mount_points() -> None:
    assert host._unescape(r"/tmp/with\040space") == "/tmp/with space"
    assert host.mounts_under(Path("/nonexistent-dra-path")) == []


def test_the_scheduler_client_rate_limit_is_its_own_unless_given(tmp_path: Path) -> None:
    ports = controlplane.ControlPlanePorts(1, 2, 3, 4, 5)

    def connection(client_qps: int | None = None) -> dict[str, object]:
        config = tmp_path / "scheduler.yaml"
        controlplane.scheduler_argv(
            BIN,
            ports=ports,
            kubeconfig=tmp_path / "kc",
            config_path=config,
            cert_dir=tmp_path,
            feature_gates={},
            client_qps=client_qps,
        )
        loaded = yaml.safe_load(config.read_text())
        assert loaded["kind"] == "KubeSchedulerConfiguration"
        return dict(loaded["clientConnection"])

    assert connection() == {"kubeconfig": str(tmp_path / "kc")}
    assert connection(client_qps=200) == {
        "kubeconfig": str(tmp_path / "kc"),
        "qps": 200,
        "burst": 400,
    }
