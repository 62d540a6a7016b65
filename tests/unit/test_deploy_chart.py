"""The Helm chart deploy/helm/dra-driver and the manifests rendered from it.

Two groups of checks:

- On deploy/manifests/dra-driver.yaml (the chart rendered with its default values; always
  present): the objects parse, the DeviceClasses are valid and the controller's own, the
  DaemonSet mounts every host path the plugin uses at the path it uses it, each component's
  environment is made of its flags' twins and parses into valid Settings, and the RBAC grants
  exactly what the code calls.
- With helm (built from its Go module by e2e/tools/helm.sh, or $HELM): ``helm lint`` and
  ``helm template`` pass with the default and the mock values, the committed manifests are what
  ``helm template`` renders now, and values the chart refuses are refused with a reason. Without
  a helm binary and no way to build one, these are skipped, and the skip says why.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.resource_v1 import DeviceClass, dump
from api.validation import ensure_valid
from controller import settings as controller_settings
from controller.pools import ClassConfig, build_device_classes, parse_config
from kubelet_plugin import settings as plugin_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "dra-driver"
MANIFESTS = ROOT / "deploy" / "manifests" / "dra-driver.yaml"
MOCK_VALUES = CHART / "ci" / "mock-values.yaml"
CONTROLLER_RBAC = ROOT / "deploy" / "controller" / "rbac.yaml"
HELM_SCRIPT = ROOT / "e2e" / "tools" / "helm.sh"
RELEASE = NAMESPACE = "dra-driver"
DRIVER = "gpu.dra-driver.io"
PLUGIN = "dra-driver-kubelet-plugin"
CONTROLLER = "dra-driver-controller"

Objects = list[dict[str, Any]]


def _documents(text: str) -> Objects:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The literal environment; downward-API variables get a stand-in value."""
    env: dict[str, str] = {}
    for var in container["env"]:
        env[var["name"]] = (
            var["value"] if "value" in var else "from-" + var["name"].lower().replace("_", "-")
        )
    return env


def _twins(flags: tuple[plugin_settings.Flag, ...]) -> set[str]:
    return {name for flag in flags for name in flag.env}


def _rules(objects: Objects, kind: str, name: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every combination a role's rules grant."""
    return {
        (group, resource, verb)
        for rule in _one(objects, kind, name)["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _plugin_settings(objects: Objects) -> plugin_settings.Settings:
    env = _env(_container(_one(objects, "DaemonSet", PLUGIN)))
    env["NODE_NAME"] = "gpu-node-0"
    return plugin_settings.parse_settings([], environ=env)


# --- The default rendering (deploy/manifests) ------------------------------------------------

DEFAULT = _documents(MANIFESTS.read_text())


def test_the_manifests_hold_both_components_and_their_access() -> None:
    kinds = sorted({(o["kind"], o["metadata"]["name"]) for o in DEFAULT})
    assert kinds == sorted(
        [
            ("ServiceAccount", PLUGIN),
            ("ServiceAccount", CONTROLLER),
            ("ConfigMap", CONTROLLER),
            ("ClusterRole", PLUGIN),
            ("ClusterRoleBinding", PLUGIN),
            ("ClusterRole", CONTROLLER),
            ("ClusterRoleBinding", CONTROLLER),
            ("Role", CONTROLLER),
            ("RoleBinding", CONTROLLER),
            ("DaemonSet", PLUGIN),
            ("Deployment", CONTROLLER),
            ("ValidatingAdmissionPolicy", f"{PLUGIN}-resourceslices"),
            ("ValidatingAdmissionPolicyBinding", f"{PLUGIN}-resourceslices"),
            ("DeviceClass", DRIVER),
            ("DeviceClass", f"timeslicing.{DRIVER}"),
            ("DeviceClass", f"mps.{DRIVER}"),
            ("DeviceClass", f"mig.{DRIVER}"),
        ]
    )
    for obj in DEFAULT:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "DeviceClass") and not (
            obj["kind"].startswith("ValidatingAdmissionPolicy")
        ):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]


def test_the_device_classes_are_valid_and_the_controllers_own() -> None:
    classes = {
        o["metadata"]["name"]: DeviceClass.model_validate(o)
        for o in DEFAULT
        if o["kind"] == "DeviceClass"
    }
    for device_class in classes.values():
        ensure_valid(device_class, source=str(MANIFESTS))
    expected = build_device_classes(DRIVER, ClassConfig(sharing=True, mig=True))
    assert sorted(classes) == sorted(c.metadata.name or "" for c in expected)
    for wanted in expected:
        assert dump(classes[wanted.metadata.name or ""].spec) == dump(wanted.spec)
    # No managed-by label of the controller's: a controller managing classes leaves them be.
    assert all(not c.metadata.labels for c in classes.values())


def test_the_plugin_mounts_every_host_path_it_uses_at_that_path() -> None:
    daemonset = _one(DEFAULT, "DaemonSet", PLUGIN)
    pod = daemonset["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(daemonset)["volumeMounts"]}
    settings = _plugin_settings(DEFAULT)
    for mount_path, volume in mounts.items():
        if volume != "driver-root":
            assert host_paths[volume] == mount_path, f"{volume} is mounted away from its host path"
    assert settings.gpu_backend == "nvml"
    assert settings.registry_dir == plugin_settings.DEFAULT_REGISTRY_DIR
    assert settings.plugins_dir == plugin_settings.DEFAULT_PLUGINS_DIR
    assert settings.cdi_root == plugin_settings.DEFAULT_CDI_ROOT
    for path in (
        settings.registration_socket.parent,
        settings.dra_socket.parent.parent,
        settings.checkpoint_file.parent.parent,
        settings.cdi_root,
        settings.driver_root,
    ):
        assert str(path) in mounts, f"{path} is not mounted"
    # The driver root is seen at /driver-root; the specs name its files on the host.
    driver_root = next(
        m for m in _container(daemonset)["volumeMounts"] if m["name"] == "driver-root"
    )
    assert driver_root["readOnly"] and "mountPropagation" not in driver_root
    assert settings.driver_root == Path("/driver-root")
    assert (
        settings.host_driver_root == Path(host_paths["driver-root"]) == Path("/run/nvidia/driver")
    )


def test_a_driver_installed_in_the_hosts_root_is_mounted_at_driver_root(helm: str) -> None:
    result = _helm(helm, "template", RELEASE, str(CHART), "--set", "kubeletPlugin.driverRoot=/")
    assert result.returncode == 0, result.stderr
    objects = _documents(result.stdout)
    pod = _one(objects, "DaemonSet", PLUGIN)["spec"]["template"]["spec"]
    assert {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}["driver-root"] == "/"
    settings = _plugin_settings(objects)
    assert (settings.driver_root, settings.host_driver_root) == (Path("/driver-root"), Path("/"))


def test_a_new_plugin_pod_surges_beside_the_old_one_named_by_its_uid() -> None:
    daemonset = _one(DEFAULT, "DaemonSet", PLUGIN)
    assert daemonset["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod_uid = next(v for v in _container(daemonset)["env"] if v["name"] == "POD_UID")
    assert pod_uid["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert _plugin_settings(DEFAULT).pod_uid == "from-pod-uid"


def test_on_the_host_network_the_plugin_is_replaced_in_place(helm: str) -> None:
    # Two pods on the node's network could not both bind the liveness and metrics ports.
    result = _helm(helm, "template", RELEASE, str(CHART), "--set", "kubeletPlugin.hostNetwork=true")
    assert result.returncode == 0, result.stderr
    strategy = _one(_documents(result.stdout), "DaemonSet", PLUGIN)["spec"]["updateStrategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }


def test_the_plugin_environment_is_made_of_its_flags_twins() -> None:
    container = _container(_one(DEFAULT, "DaemonSet", PLUGIN))
    names = {var["name"] for var in container["env"]}
    assert names <= _twins(plugin_settings.FLAGS), names - _twins(plugin_settings.FLAGS)
    node_name = next(v for v in container["env"] if v["name"] == "NODE_NAME")
    assert node_name["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    settings = _plugin_settings(DEFAULT)
    assert settings.health_policy == plugin_settings.parse_health_policy(
        plugin_settings.DEFAULT_HEALTH_POLICY
    )
    assert settings.ignored_xids == plugin_settings.DEFAULT_IGNORED_XIDS
    assert settings.liveness_address == "[::]:51515" and settings.metrics_address == ":9400"
    probe = container["livenessProbe"]["grpc"]["port"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe == ports["liveness"] == 51515 and ports["metrics"] == 9400


def test_the_controller_environment_is_made_of_its_flags_twins() -> None:
    deployment = _one(DEFAULT, "Deployment", CONTROLLER)
    assert deployment["spec"]["replicas"] == 2
    container = _container(deployment)
    env = _env(container)
    assert set(env) <= _twins(controller_settings.FLAGS), set(env) - _twins(
        controller_settings.FLAGS
    )
    settings = controller_settings.parse_settings([], environ=env)
    assert settings.leader_elect and settings.policy == "binpack"
    assert settings.namespace == "from-pod-namespace"  # the downward API's, not a literal
    assert not settings.manage_device_classes
    # The ConfigMap it is pointed at exists and holds a configuration it accepts.
    namespace, _, name = (settings.config_map or "").partition("/")
    assert namespace == NAMESPACE
    config_map = _one(DEFAULT, "ConfigMap", name)
    config = parse_config(config_map["data"]["config.yaml"], source=name)
    assert config.device_classes == ClassConfig(sharing=True, mig=True)
    assert settings.health_address == ":8081"
    probes = {
        container["livenessProbe"]["httpGet"]["path"],
        container["readinessProbe"]["httpGet"]["path"],
    }
    assert probes == {"/healthz", "/readyz"}


def test_the_controller_runs_as_the_images_non_root_user() -> None:
    pod = _one(DEFAULT, "Deployment", CONTROLLER)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532


def test_every_workload_runs_as_a_service_account_that_is_bound() -> None:
    for kind, name in (("DaemonSet", PLUGIN), ("Deployment", CONTROLLER)):
        account = _one(DEFAULT, kind, name)["spec"]["template"]["spec"]["serviceAccountName"]
        _one(DEFAULT, "ServiceAccount", account)
        binding = _one(DEFAULT, "ClusterRoleBinding", name)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]
        assert binding["roleRef"]["name"] == name


# The kubernetes client methods the plugin calls, and what each needs.
PLUGIN_CALLS = {
    "read_namespaced_resource_claim": ("resource.k8s.io", "resourceclaims", "get"),
    "list_resource_slice": ("resource.k8s.io", "resourceslices", "list"),
    "create_resource_slice": ("resource.k8s.io", "resourceslices", "create"),
    "replace_resource_slice": ("resource.k8s.io", "resourceslices", "update"),
    "delete_resource_slice": ("resource.k8s.io", "resourceslices", "delete"),
    "read_node": ("", "nodes", "get"),
}
# A client method named after a Kubernetes resource, called or passed on (the publisher hands
# methods to its error wrapper); the plugin's own ports (list_slices...) do not match.
_CLIENT_CALL = re.compile(
    r"\.((?:read|list|create|replace|patch|delete)_(?:namespaced_)?"
    r"(?:resource_claim|resource_slice|device_class|node|pod|event|lease|config_map|secret)"
    r"(?:_status)?)\b"
)


def _plugin_calls() -> set[str]:
    calls: set[str] = set()
    for path in sorted((ROOT / "kubelet_plugin").glob("*.py")):
        calls.update(_CLIENT_CALL.findall(path.read_text()))
    return calls


def test_the_call_scan_finds_client_methods_and_not_the_plugins_own() -> None:
    text = "api.create_resource_slice, x.read_node(n) self.list_slices() y.replace_resource_slice("
    assert set(_CLIENT_CALL.findall(text)) == {
        "create_resource_slice",
        "read_node",
        "replace_resource_slice",
    }


def test_the_plugin_is_granted_exactly_what_it_calls() -> None:
    calls = _plugin_calls()
    unknown = calls - set(PLUGIN_CALLS)
    assert not unknown, (
        f"kubelet_plugin calls {sorted(unknown)}: add them to PLUGIN_CALLS and the chart"
    )
    needed = {PLUGIN_CALLS[name] for name in calls}
    # The publisher watches its slices: a list with watch=True.
    publisher = (ROOT / "kubelet_plugin" / "publisher.py").read_text()
    assert "watch=True" in publisher
    needed.add(("resource.k8s.io", "resourceslices", "watch"))
    assert _rules(DEFAULT, "ClusterRole", PLUGIN) == needed


def _controller_reference() -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    reference = _documents(CONTROLLER_RBAC.read_text())
    return (
        _rules(reference, "ClusterRole", CONTROLLER),
        _rules(reference, "Role", CONTROLLER),
    )


def test_the_controller_is_granted_what_the_cluster_tests_proved_less_class_writes() -> None:
    # deploy/controller/rbac.yaml is what test_controller_rbac and the cluster tests run with.
    cluster_rules, namespace_rules = _controller_reference()
    writes = {("resource.k8s.io", "deviceclasses", verb) for verb in ("create", "update", "delete")}
    assert _rules(DEFAULT, "ClusterRole", CONTROLLER) == cluster_rules - writes
    assert _rules(DEFAULT, "Role", CONTROLLER) == namespace_rules


def test_the_admission_policy_holds_the_plugin_to_its_own_node() -> None:
    policy = _one(DEFAULT, "ValidatingAdmissionPolicy", f"{PLUGIN}-resourceslices")
    binding = _one(DEFAULT, "ValidatingAdmissionPolicyBinding", f"{PLUGIN}-resourceslices")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["resourceslices"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE"}
    (condition,) = policy["spec"]["matchConditions"]
    assert f'"system:serviceaccount:{NAMESPACE}:{PLUGIN}"' in condition["expression"]
    expressions = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert "variables.userNodeName == variables.objectNodeName" in expressions
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert "authentication.kubernetes.io/node-name" in variables["userNodeName"]
    assert "oldObject" in variables["objectNodeName"]  # a DELETE has no object


# --- With helm ---------------------------------------------------------------------------------


def _find_helm() -> tuple[str | None, str]:
    """(helm binary, why not): $HELM, else e2e/tools/helm.sh (builds it once, minutes)."""
    if os.environ.get("HELM"):
        return os.environ["HELM"], ""
    cached = subprocess.run(
        ["bash", str(HELM_SCRIPT), "--print-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(cached).is_file() and shutil.which("go") is None:
        return None, f"no helm at {cached} and no go command to build it with {HELM_SCRIPT}"
    built = subprocess.run(
        ["bash", str(HELM_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False
    )
    if built.returncode != 0:
        return None, f"{HELM_SCRIPT} could not build helm: {built.stderr.strip()[-600:]}"
    return built.stdout.strip(), ""


@pytest.fixture(scope="module")
def helm() -> Iterator[str]:
    binary, why = _find_helm()
    if binary is None:
        pytest.skip(f"HELM CHECKS SKIPPED (helm lint, helm template, manifest drift): {why}")
    yield binary


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def _template(helm: str, *args: str) -> str:
    result = _helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("values", [[], ["--values", str(MOCK_VALUES)]], ids=["default", "mock"])
def test_helm_lint_passes(helm: str, values: list[str]) -> None:
    result = _helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *values)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_manifests_are_what_helm_renders_now(helm: str) -> None:
    # The committed file is a comment header, then helm's output byte for byte.
    header, _, body = MANIFESTS.read_text().partition("\n---\n")
    assert all(line.startswith("#") for line in header.splitlines())
    assert "---\n" + body == _template(helm), (
        "deploy/manifests/dra-driver.yaml is out of date: run scripts/render_manifests.sh"
    )


def test_the_mock_values_give_a_plugin_with_fake_gpus_it_can_reach(helm: str) -> None:
    objects = _documents(_template(helm, "--values", str(MOCK_VALUES)))
    settings = _plugin_settings(objects)
    assert settings.gpu_backend == "mock"
    assert settings.mock_profile == "4xA100-80GB:mig=3g.40gb/2x2g.20gb"
    assert settings.device_order == "largest-first" and settings.shared_gpus
    daemonset = _one(objects, "DaemonSet", PLUGIN)
    mounts = {m["mountPath"] for m in _container(daemonset)["volumeMounts"]}
    # The fake device nodes are made on the host, where the runtime reads the CDI specs.
    assert str(settings.dev_root) in mounts and str(settings.dev_root) != "/"
    controller = controller_settings.parse_settings(
        [], environ=_env(_container(_one(objects, "Deployment", CONTROLLER)))
    )
    assert controller.policy == "topology"


def test_a_controller_managing_classes_gets_exactly_the_proven_rbac(helm: str) -> None:
    objects = _documents(
        _template(
            helm,
            "--set",
            "controller.manageDeviceClasses=true",
            "--set",
            "deviceClasses.create=false",
        )
    )
    cluster_rules, namespace_rules = _controller_reference()
    assert _rules(objects, "ClusterRole", CONTROLLER) == cluster_rules
    assert _rules(objects, "Role", CONTROLLER) == namespace_rules
    assert not [o for o in objects if o["kind"] == "DeviceClass"]
    env = _env(_container(_one(objects, "Deployment", CONTROLLER)))
    assert controller_settings.parse_settings([], environ=env).manage_device_classes


def test_another_driver_name_reaches_every_component_and_class(helm: str) -> None:
    objects = _documents(_template(helm, "--set", "driverName=gpu.example.com"))
    classes = [DeviceClass.model_validate(o) for o in objects if o["kind"] == "DeviceClass"]
    expected = build_device_classes("gpu.example.com", ClassConfig())
    assert [dump(c.spec) for c in sorted(classes, key=lambda c: c.metadata.name or "")] == [
        dump(c.spec) for c in sorted(expected, key=lambda c: c.metadata.name or "")
    ]
    assert _plugin_settings(objects).driver_name == "gpu.example.com"
    env = _env(_container(_one(objects, "Deployment", CONTROLLER)))
    assert controller_settings.parse_settings([], environ=env).driver_name == "gpu.example.com"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "kubeletPlugin.gpuBackend=cuda"], 'gpuBackend "cuda": use nvml, mock or auto'),
        (["--set", "controller.placementPolicy=random"], 'placementPolicy "random"'),
    ],
)
def test_values_the_chart_refuses_are_refused_with_a_reason(
    helm: str, values: list[str], message: str
) -> None:
    result = _helm(helm, "template", RELEASE, str(CHART), *values)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_runtime_class_for_nvml_reaches_the_plugin_pod_only_when_set(helm: str) -> None:
    default = _one(_documents(_template(helm)), "DaemonSet", PLUGIN)
    assert "runtimeClassName" not in default["spec"]["template"]["spec"]
    objects = _documents(_template(helm, "--set", "kubeletPlugin.runtimeClassName=nvidia"))
    pod = _one(objects, "DaemonSet", PLUGIN)["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"


def test_host_network_and_extra_env_reach_the_plugin_pod_only_when_set(helm: str) -> None:
    default = _one(_documents(_template(helm)), "DaemonSet", PLUGIN)["spec"]["template"]["spec"]
    assert "hostNetwork" not in default and "dnsPolicy" not in default
    objects = _documents(
        _template(
            helm,
            "--set",
            "kubeletPlugin.hostNetwork=true",
            "--set",
            "kubeletPlugin.env[0].name=KUBERNETES_SERVICE_HOST",
            "--set-string",
            "kubeletPlugin.env[0].value=127.0.0.1",
        )
    )
    pod = _one(objects, "DaemonSet", PLUGIN)["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    # Without it a host-network pod resolves names with the node's resolver, not the cluster's.
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    env = _container(_one(objects, "DaemonSet", PLUGIN))["env"]
    # After the chart's own variables, so that a user's entry is the one that counts.
    assert env[-1] == {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}
    assert _env(_container(_one(objects, "DaemonSet", PLUGIN)))["DRA_DRIVER_GPU_BACKEND"] == "nvml"


def test_the_liveness_address_is_one_grpc_can_listen_on() -> None:
    # gRPC refuses ":port" (an empty host), which the plugin's settings accept: with it the
    # plugin exited 1 at start-up in the cluster tests' pod.
    import grpc

    address = _env(_container(_one(DEFAULT, "DaemonSet", PLUGIN)))["DRA_DRIVER_LIVENESS_ADDRESS"]
    host, _, _ = address.rpartition(":")
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    try:
        assert server.add_insecure_port(f"{host}:0") > 0
    finally:
        server.stop(None)
