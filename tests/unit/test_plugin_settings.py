"""Settings of dra-driver kubelet-plugin: flags, environment twins, defaults, validation."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from api.errors import InvalidInputError
from dra_cli.main import build_parser, main
from kubelet_plugin.settings import (
    FLAGS,
    Settings,
    parse_health_policy,
    parse_settings,
    parse_xids,
    split_host_port,
)


def settings(*argv: str, **env: str) -> Settings:
    return parse_settings(list(argv), env)


def error(*argv: str, **env: str) -> str:
    with pytest.raises(InvalidInputError) as caught:
        parse_settings(list(argv), env)
    return str(caught.value)


def test_defaults_are_the_documented_ones() -> None:
    s = settings()
    assert s.driver_name == "gpu.dra-driver.io"
    assert s.node_name == socket.gethostname().lower()
    assert s.kubeconfig is None
    assert s.registry_dir == Path("/var/lib/kubelet/plugins_registry")
    assert s.plugins_dir == Path("/var/lib/kubelet/plugins")
    assert s.cdi_root == Path("/var/run/cdi")
    assert (s.driver_root, s.dev_root, s.hook_path) == (Path("/"), Path("/"), None)
    assert (s.gpu_backend, s.mock_profile, s.device_order) == ("auto", "8xH100-80GB", "index")
    assert s.partitionable is True
    assert s.checkpoint_file == Path("/var/lib/kubelet/plugins/gpu.dra-driver.io/checkpoint.json")
    assert (s.liveness_address, s.metrics_address) == (None, None)
    assert s.health_policy == {
        "xid": "NoSchedule",
        "ecc-double-bit": "NoExecute",
        "gpu-lost": "NoExecute",
    }
    assert s.ignored_xids == {13, 31, 43, 45, 68, 109}
    assert s.health_recovery_seconds == 300
    assert (s.log_format, s.log_level) == ("text", "info")


def test_every_setting_has_a_flag_and_an_environment_twin() -> None:
    assert sorted(f.field for f in FLAGS) == sorted(Settings.model_fields)
    assert all(f.env for f in FLAGS)
    twins = [name for f in FLAGS for name in f.env]
    assert len(twins) == len(set(twins))


def test_environment_twins_fill_in_absent_flags() -> None:
    s = settings(
        NODE_NAME="node-b",
        KUBECONFIG="/etc/kube/config",
        DRA_DRIVER_NAME="gpu.example.com",
        DRA_DRIVER_GPU_BACKEND="mock",
        DRA_DRIVER_MOCK_PROFILE="4xA100-40GB,4xL4",
        DRA_DRIVER_PARTITIONABLE="false",
        DRA_DRIVER_METRICS_ADDRESS=":9400",
        DRA_DRIVER_HEALTH_POLICY="gpu-lost=NoSchedule",
        DRA_DRIVER_IGNORED_XIDS="",
        DRA_DRIVER_HEALTH_RECOVERY_SECONDS="30",
        DRA_DRIVER_LOG_FORMAT="JSON",
    )
    assert (s.node_name, s.kubeconfig, s.driver_name) == (
        "node-b",
        Path("/etc/kube/config"),
        "gpu.example.com",
    )
    assert (s.gpu_backend, s.mock_profile, s.partitionable) == ("mock", "4xA100-40GB,4xL4", False)
    assert s.metrics_address == ":9400"
    assert s.health_policy == {"gpu-lost": "NoSchedule"}
    assert s.ignored_xids == frozenset()
    assert (s.health_recovery_seconds, s.log_format) == (30, "json")
    assert s.checkpoint_file == Path("/var/lib/kubelet/plugins/gpu.example.com/checkpoint.json")


def test_a_flag_wins_over_its_twin_and_node_name_prefers_the_upstream_twin() -> None:
    s = settings(
        "--driver-name",
        "gpu.example.com",
        "--no-partitionable",
        DRA_DRIVER_NAME="other.example.com",
        DRA_DRIVER_PARTITIONABLE="true",
        NODE_NAME="from-downward-api",
        DRA_DRIVER_NODE_NAME="second-choice",
    )
    assert (s.driver_name, s.partitionable, s.node_name) == (
        "gpu.example.com",
        False,
        "from-downward-api",
    )
    assert settings(DRA_DRIVER_NODE_NAME="second-choice").node_name == "second-choice"


def test_an_empty_twin_turns_an_address_off_and_relative_paths_become_absolute() -> None:
    s = settings(
        "--liveness-address",
        "",
        "--cdi-root",
        "cdi",
        DRA_DRIVER_METRICS_ADDRESS="",
        DRA_DRIVER_CHECKPOINT_PATH="state/checkpoint.json",
    )
    assert (s.liveness_address, s.metrics_address) == (None, None)
    assert s.cdi_root == Path.cwd() / "cdi"
    assert s.checkpoint_file == Path.cwd() / "state/checkpoint.json"


def test_errors_name_the_flag_the_environment_variable_and_the_fix() -> None:
    message = error(
        "--gpu-backend",
        "cuda",
        "--node-name",
        "Node_A",
        DRA_DRIVER_HEALTH_POLICY="xid=Cordon",
        DRA_DRIVER_PARTITIONABLE="maybe",
    )
    assert message.startswith("kubelet-plugin settings: ")
    assert "--gpu-backend: Input should be 'auto', 'nvml' or 'mock'" in message
    assert "--node-name: invalid node name 'Node_A': must be a lower-case DNS subdomain" in message
    assert (
        "--health-policy (from env DRA_DRIVER_HEALTH_POLICY): unknown taint effect 'Cordon' "
        "in 'xid=Cordon': use None, NoSchedule, NoExecute" in message
    )
    assert "--partitionable (from env DRA_DRIVER_PARTITIONABLE): " in message


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--driver-name", "GPU"], "--driver-name: invalid driver name 'GPU'"),
        (["--driver-name", "a" * 64], "at most 63 characters"),
        (["--mock-profile", "3xV100"], "--mock-profile: mock profile '3xV100': unknown GPU model"),
        (["--device-order", "random"], "--device-order: Input should be 'index'"),
        (["--metrics-address", "9400"], "--metrics-address: '9400' has no port"),
        (["--metrics-address", "::1:9400"], "write an IPv6 host in brackets"),
        (["--metrics-address", "127.0.0.1:70000"], "port 70000 is out of range"),
        (["--liveness-address", "unix://live.sock"], "use an absolute path"),
        (["--liveness-address", "unix:///" + "x" * 120], "over the unix limit of 107 bytes"),
        (["--ignored-xids", "13,x"], "--ignored-xids: 'x' is not an XID number"),
        (["--ignored-xids", "-4"], "XID -4 must be a positive number"),
        (["--health-recovery-seconds", "0"], "--health-recovery-seconds: Input should be greater"),
        (["--health-recovery-seconds", "soon"], "--health-recovery-seconds: Input should be"),
        (["--log-level", "verbose"], "--log-level: Input should be 'debug'"),
        (["--node-name", ""], "--node-name: the node name is required"),
    ],
)
def test_invalid_values_are_refused(argv: list[str], expected: str) -> None:
    assert expected in error(*argv)


def test_socket_paths_over_the_unix_limit_name_the_directory_flag() -> None:
    long_dir = "/" + "d" * 90
    message = error("--registry-dir", long_dir, DRA_DRIVER_PLUGINS_DIR=long_dir)
    assert f"--registry-dir: socket path '{long_dir}/gpu.dra-driver.io-reg.sock' is" in message
    assert "--plugins-dir (from env DRA_DRIVER_PLUGINS_DIR): socket path" in message
    assert "use a shorter directory" in message


def test_the_checkpoint_may_not_live_in_the_cdi_root() -> None:
    message = error("--cdi-root", "/run/cdi", "--checkpoint-path", "/run/cdi/checkpoint.json")
    assert "--checkpoint-path: /run/cdi/checkpoint.json is in the CDI root /run/cdi" in message


def test_health_policy_syntax() -> None:
    assert parse_health_policy(" xid = NoExecute , ecc-single-bit=None,") == {
        "xid": "NoExecute",
        "ecc-single-bit": "None",
    }
    assert parse_health_policy("") == {}
    with pytest.raises(ValueError, match="entry 'xid' is not KIND=EFFECT"):
        parse_health_policy("xid")
    with pytest.raises(ValueError, match=r"unknown event kind 'thermal'.*use xid, ecc-double-bit"):
        parse_health_policy("thermal=NoSchedule")
    with pytest.raises(ValueError, match="event kind 'xid' appears twice"):
        parse_health_policy("xid=NoSchedule,xid=NoExecute")


def test_xid_lists() -> None:
    assert parse_xids("13, 31,,43") == {13, 31, 43}
    assert parse_xids(" ") == frozenset()


def test_host_port_forms() -> None:
    assert split_host_port("127.0.0.1:9400") == ("127.0.0.1", 9400)
    assert split_host_port(":0") == ("", 0)
    assert split_host_port("[::1]:9400") == ("::1", 9400)
    assert split_host_port("metrics.local:80") == ("metrics.local", 80)
    with pytest.raises(ValueError, match="'x' is not a number"):
        split_host_port("host:x")
    with pytest.raises(ValueError, match="'zz' is not an IPv6 address"):
        split_host_port("[zz]:1")


def test_the_cli_offers_every_flag_with_its_twin_and_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside names such as gpu.dra-driver.io
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["kubelet-plugin", "--help"])
    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in FLAGS:
        assert flag.flag in help_text
        assert f"env {', '.join(flag.env)}; default {flag.default}" in help_text


def test_the_cli_refuses_invalid_settings_with_status_2_before_running(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRA_DRIVER_IGNORED_XIDS", "thirteen")
    assert main(["kubelet-plugin", "--node-name", "node-a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dra-driver kubelet-plugin: error: kubelet-plugin settings: ")
    assert "--ignored-xids (from env DRA_DRIVER_IGNORED_XIDS): 'thirteen' is not" in err


def test_summary_is_text_for_the_start_up_log() -> None:
    summary = settings("--node-name", "node-a", "--ignored-xids", "45,13").summary()
    assert summary["ignored_xids"] == "13,45"
    assert summary["health_policy"] == "xid=NoSchedule,ecc-double-bit=NoExecute,gpu-lost=NoExecute"
    assert summary["checkpoint_path"].endswith("/gpu.dra-driver.io/checkpoint.json")
    assert summary["kubeconfig"] == ""


def test_a_pod_uid_names_the_sockets_of_one_instance_of_a_rolling_update() -> None:
    alone = settings()
    assert alone.pod_uid is None
    assert alone.registration_socket.name == "gpu.dra-driver.io-reg.sock"
    assert alone.dra_socket == Path("/var/lib/kubelet/plugins/gpu.dra-driver.io/dra.sock")

    uid = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
    pod = settings(POD_UID=uid)
    assert pod.pod_uid == uid
    # The UID's first 12 hex digits: unique enough, and short for the unix socket limit.
    assert pod.registration_socket == Path(
        "/var/lib/kubelet/plugins_registry/gpu.dra-driver.io-6f1c2d3e4a5b-reg.sock"
    )
    assert pod.dra_socket.name == "dra-6f1c2d3e4a5b.sock"
    assert pod.dra_socket.parent == pod.serialize_lock.parent == pod.publisher_lock.parent
    assert settings("--pod-uid", "", POD_UID=uid).pod_uid is None  # an empty flag turns it off


def test_a_pod_uid_that_is_not_a_uid_is_refused_with_the_fix() -> None:
    message = error("--pod-uid", "../../etc")
    assert "--pod-uid" in message
    assert "metadata.uid" in message


def test_a_liveness_address_without_host_listens_on_every_interface() -> None:
    assert settings("--liveness-address", ":51515").liveness_address == "[::]:51515"
    assert settings("--liveness-address", "127.0.0.1:0").liveness_address == "127.0.0.1:0"
