"""The Helm chart deploy/helm/dra-driver as rendered with its default values.

On deploy/manifests/dra-driver.yaml (always present): the objects parse, the DeviceClasses
are valid and the controller's own, the DaemonSet mounts every host path the plugin uses at
the path it uses it, and each component's environment is made of its flags' twins and
parses into valid Settings. The RBAC is checked in test_deploy_chart_rbac, other values
(with helm) in test_deploy_chart_helm.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

from chart_fixtures import (
    CONTROLLER,
    DEFAULT,
    DRIVER,
    MANIFESTS,
    NAMESPACE,
    PLUGIN,
    POD_IP,
    container_of,
    env_of,
    find_one,
    plugin_settings_of,
    twins_of,
)

from api.resource_v1 import DeviceClass, dump
from api.validation import ensure_valid
from controller import settings as controller_settings
from controller.pools import ClassConfig, build_device_classes, parse_config
from kubelet_plugin import settings as plugin_settings


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
            ("ValidatingAdmissionPolicy", f"{CONTROLLER}-pods"),
            ("ValidatingAdmissionPolicyBinding", f"{CONTROLLER}-pods"),
            ("ValidatingAdmissionPolicy", f"{CONTROLLER}-resourceclaims"),
            ("ValidatingAdmissionPolicyBinding", f"{CONTROLLER}-resourceclaims"),
            ("ValidatingAdmissionPolicy", f"{CONTROLLER}-resourceslices"),
            ("ValidatingAdmissionPolicyBinding", f"{CONTROLLER}-resourceslices"),
            ("ValidatingAdmissionPolicy", "dra-driver-gpu-configs"),
            ("ValidatingAdmissionPolicyBinding", "dra-driver-gpu-configs"),
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


def test_the_plugin_mounts_every_host_path_it_uses_at_that_path_and_no_other() -> None:
    daemonset = find_one(DEFAULT, "DaemonSet", PLUGIN)
    pod = daemonset["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container_of(daemonset)["volumeMounts"]}
    settings = plugin_settings_of(DEFAULT)
    for mount_path, volume in mounts.items():
        if volume != "driver-root":
            assert host_paths[volume] == mount_path, f"{volume} is mounted away from its host path"
    assert settings.gpu_backend == "nvml"
    assert settings.registry_dir == plugin_settings.DEFAULT_REGISTRY_DIR
    assert settings.plugins_dir == plugin_settings.DEFAULT_PLUGINS_DIR
    assert settings.cdi_root == plugin_settings.DEFAULT_CDI_ROOT
    for path in (
        settings.registration_socket.parent,
        settings.dra_socket.parent,
        settings.checkpoint_file.parent,
        settings.serialize_lock.parent,
        settings.publisher_lock.parent,
        settings.cdi_root,
        settings.driver_root,
        settings.device_plugins_dir,
    ):
        assert str(path) in mounts, f"{path} is not mounted"
    # Of the kubelet's plugins directory only the plugin's own: not the other drivers'.
    assert settings.dra_socket.parent == settings.plugin_dir
    assert sorted(mounts) == sorted(
        str(p)
        for p in (
            settings.registration_socket.parent,
            settings.plugin_dir,
            settings.cdi_root,
            settings.driver_root,
            settings.device_plugins_dir,
        )
    )
    # The device plugins' directory is only looked at.
    (device_plugins,) = [
        m for m in container_of(daemonset)["volumeMounts"] if m["name"] == "device-plugins"
    ]
    assert device_plugins["readOnly"] is True
    assert settings.device_plugin_coexistence == "refuse"
    # The driver root is seen at /driver-root; the specs name its files on the host.
    driver_root = next(
        m for m in container_of(daemonset)["volumeMounts"] if m["name"] == "driver-root"
    )
    assert driver_root["readOnly"] and "mountPropagation" not in driver_root
    assert settings.driver_root == Path("/driver-root")
    assert (
        settings.host_driver_root == Path(host_paths["driver-root"]) == Path("/run/nvidia/driver")
    )


def test_a_new_plugin_pod_surges_beside_the_old_one_named_by_its_uid() -> None:
    daemonset = find_one(DEFAULT, "DaemonSet", PLUGIN)
    assert daemonset["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod_uid = next(v for v in container_of(daemonset)["env"] if v["name"] == "POD_UID")
    assert pod_uid["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert plugin_settings_of(DEFAULT).pod_uid == "from-pod-uid"


def test_the_plugin_environment_is_made_of_its_flags_twins() -> None:
    container = container_of(find_one(DEFAULT, "DaemonSet", PLUGIN))
    names = {var["name"] for var in container["env"]} - {"POD_IP"}
    assert names <= twins_of(plugin_settings.FLAGS), names - twins_of(plugin_settings.FLAGS)
    node_name = next(v for v in container["env"] if v["name"] == "NODE_NAME")
    assert node_name["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    settings = plugin_settings_of(DEFAULT)
    assert settings.health_policy == plugin_settings.parse_health_policy(
        plugin_settings.DEFAULT_HEALTH_POLICY
    )
    assert settings.ignored_xids == plugin_settings.DEFAULT_IGNORED_XIDS
    # On the pod's IP, not every interface (which with hostNetwork are the node's).
    assert settings.liveness_address == f"{POD_IP}:51515"
    assert settings.metrics_address == f"{POD_IP}:9400"
    pod_ip = next(v for v in container["env"] if v["name"] == "POD_IP")
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    probe = container["livenessProbe"]["grpc"]["port"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe == ports["liveness"] == 51515 and ports["metrics"] == 9400


def test_the_controller_environment_is_made_of_its_flags_twins() -> None:
    deployment = find_one(DEFAULT, "Deployment", CONTROLLER)
    assert deployment["spec"]["replicas"] == 2
    container = container_of(deployment)
    env = env_of(container)
    # POD_IP serves only the addresses' $(POD_IP).
    names = set(env) - {"POD_IP"}
    assert names <= twins_of(controller_settings.FLAGS), names - twins_of(controller_settings.FLAGS)
    settings = controller_settings.parse_settings([], environ=env)
    assert settings.leader_elect and settings.policy == "binpack"
    assert settings.namespace == "from-pod-namespace"  # the downward API's, not a literal
    assert not settings.manage_device_classes
    # The ConfigMap it is pointed at exists and holds a configuration it accepts.
    namespace, _, name = (settings.config_map or "").partition("/")
    assert namespace == NAMESPACE
    config_map = find_one(DEFAULT, "ConfigMap", name)
    config = parse_config(config_map["data"]["config.yaml"], source=name)
    assert config.device_classes == ClassConfig(sharing=True, mig=True)
    assert settings.health_address == f"{POD_IP}:8081"
    assert settings.metrics_address == f"{POD_IP}:8080"
    probes = {
        container["livenessProbe"]["httpGet"]["path"],
        container["readinessProbe"]["httpGet"]["path"],
    }
    assert probes == {"/healthz", "/readyz"}


def test_the_controller_runs_as_the_images_non_root_user_without_capabilities() -> None:
    deployment = find_one(DEFAULT, "Deployment", CONTROLLER)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container_of(deployment)["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert "privileged" not in context


def test_the_plugin_is_privileged_for_real_gpus_under_the_runtimes_seccomp_profile() -> None:
    # The default gpuBackend is nvml: NVML needs every /dev/nvidia* node (a privileged
    # container's) and CAP_SYS_ADMIN for MIG. See test_deploy_chart_helm for the mock's.
    daemonset = find_one(DEFAULT, "DaemonSet", PLUGIN)
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    context = container_of(daemonset)["securityContext"]
    assert context["privileged"] is True and context["runAsUser"] == 0
    assert context["readOnlyRootFilesystem"] is True
    assert plugin_settings_of(DEFAULT).gpu_backend == "nvml"


def test_every_workload_runs_as_a_service_account_that_is_bound() -> None:
    for kind, name in (("DaemonSet", PLUGIN), ("Deployment", CONTROLLER)):
        account = find_one(DEFAULT, kind, name)["spec"]["template"]["spec"]["serviceAccountName"]
        find_one(DEFAULT, "ServiceAccount", account)
        binding = find_one(DEFAULT, "ClusterRoleBinding", name)
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]
        assert binding["roleRef"]["name"] == name


def test_the_liveness_address_is_one_grpc_can_listen_on() -> None:
    # gRPC refuses ":port" (an empty host), which the plugin's settings accept: with it the
    # plugin exited 1 at start-up in the cluster tests' pod. Here the pod's IP is loopback,
    # an address of this machine.
    import grpc

    env = env_of(container_of(find_one(DEFAULT, "DaemonSet", PLUGIN)), pod_ip="127.0.0.1")
    address = env["DRA_DRIVER_LIVENESS_ADDRESS"]
    host, _, _ = address.rpartition(":")
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    try:
        assert server.add_insecure_port(f"{host}:0") > 0
    finally:
        server.stop(None)
