"""The Helm chart deploy/helm/dra-driver through helm itself.

``helm lint`` and ``helm template`` pass with the default and the mock values, the committed
manifests are what ``helm template`` renders now, values reach the components they are for,
and values the chart refuses are refused with a reason. Without a helm binary and no way to
build one, these are skipped, and the skip says why (see chart_fixtures).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chart_fixtures import (
    CHART,
    CONTROLLER,
    MANIFESTS,
    MOCK_VALUES,
    NAMESPACE,
    PLUGIN,
    RELEASE,
    container_of,
    documents,
    env_of,
    find_one,
    helm_fixture,  # noqa: F401  (pytest finds it as `helm`)
    helm_template,
    plugin_settings_of,
    run_helm,
)

from api.resource_v1 import DeviceClass, dump
from controller import settings as controller_settings
from controller.pools import ClassConfig, build_device_classes


@pytest.mark.parametrize("values", [[], ["--values", str(MOCK_VALUES)]], ids=["default", "mock"])
def test_helm_lint_passes(helm: str, values: list[str]) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *values)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_manifests_are_what_helm_renders_now(helm: str) -> None:
    # The committed file is a comment header, then helm's output byte for byte.
    header, _, body = MANIFESTS.read_text().partition("\n---\n")
    assert all(line.startswith("#") for line in header.splitlines())
    assert "---\n" + body == helm_template(helm), (
        "deploy/manifests/dra-driver.yaml is out of date: run scripts/render_manifests.sh"
    )


def test_the_mock_values_give_a_plugin_with_fake_gpus_it_can_reach(helm: str) -> None:
    objects = documents(helm_template(helm, "--values", str(MOCK_VALUES)))
    settings = plugin_settings_of(objects)
    assert settings.gpu_backend == "mock"
    assert settings.mock_profile == "4xA100-80GB:mig=3g.40gb/2x2g.20gb"
    assert settings.device_order == "largest-first" and settings.shared_gpus
    daemonset = find_one(objects, "DaemonSet", PLUGIN)
    mounts = {m["mountPath"] for m in container_of(daemonset)["volumeMounts"]}
    # The fake device nodes are made on the host, where the runtime reads the CDI specs.
    assert str(settings.dev_root) in mounts and str(settings.dev_root) != "/"
    controller = controller_settings.parse_settings(
        [], environ=env_of(container_of(find_one(objects, "Deployment", CONTROLLER)))
    )
    assert controller.policy == "topology"


def test_another_driver_name_reaches_every_component_and_class(helm: str) -> None:
    objects = documents(helm_template(helm, "--set", "driverName=gpu.example.com"))
    classes = [DeviceClass.model_validate(o) for o in objects if o["kind"] == "DeviceClass"]
    expected = build_device_classes("gpu.example.com", ClassConfig())
    assert [dump(c.spec) for c in sorted(classes, key=lambda c: c.metadata.name or "")] == [
        dump(c.spec) for c in sorted(expected, key=lambda c: c.metadata.name or "")
    ]
    assert plugin_settings_of(objects).driver_name == "gpu.example.com"
    env = env_of(container_of(find_one(objects, "Deployment", CONTROLLER)))
    assert controller_settings.parse_settings([], environ=env).driver_name == "gpu.example.com"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "kubeletPlugin.gpuBackend=cuda"], 'gpuBackend "cuda": use nvml, mock or auto'),
        (["--set", "controller.placementPolicy=random"], 'placementPolicy "random"'),
        (
            ["--set", "kubeletPlugin.privileged=maybe"],
            'privileged "maybe": use true, false or auto',
        ),
        (
            ["--set", "deviceClasses.extendedResourceNames.mps=nvidia.com/gpu"],
            '"nvidia.com/gpu" is given to several classes; give each name to one class',
        ),
    ],
)
def test_values_the_chart_refuses_are_refused_with_a_reason(
    helm: str, values: list[str], message: str
) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *values)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_driver_installed_in_the_hosts_root_is_mounted_at_driver_root(helm: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", "kubeletPlugin.driverRoot=/")
    assert result.returncode == 0, result.stderr
    objects = documents(result.stdout)
    pod = find_one(objects, "DaemonSet", PLUGIN)["spec"]["template"]["spec"]
    assert {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}["driver-root"] == "/"
    settings = plugin_settings_of(objects)
    assert (settings.driver_root, settings.host_driver_root) == (Path("/driver-root"), Path("/"))


def test_on_the_host_network_the_plugin_is_replaced_in_place(helm: str) -> None:
    # Two pods on the node's network could not both bind the liveness and metrics ports.
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "--set", "kubeletPlugin.hostNetwork=true"
    )
    assert result.returncode == 0, result.stderr
    strategy = find_one(documents(result.stdout), "DaemonSet", PLUGIN)["spec"]["updateStrategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }


def test_a_runtime_class_for_nvml_reaches_the_plugin_pod_only_when_set(helm: str) -> None:
    default = find_one(documents(helm_template(helm)), "DaemonSet", PLUGIN)
    assert "runtimeClassName" not in default["spec"]["template"]["spec"]
    objects = documents(helm_template(helm, "--set", "kubeletPlugin.runtimeClassName=nvidia"))
    pod = find_one(objects, "DaemonSet", PLUGIN)["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"


def test_host_network_and_extra_env_reach_the_plugin_pod_only_when_set(helm: str) -> None:
    plugin = find_one(documents(helm_template(helm)), "DaemonSet", PLUGIN)
    default = plugin["spec"]["template"]["spec"]
    assert "hostNetwork" not in default and "dnsPolicy" not in default
    objects = documents(
        helm_template(
            helm,
            "--set",
            "kubeletPlugin.hostNetwork=true",
            "--set",
            "kubeletPlugin.env[0].name=KUBERNETES_SERVICE_HOST",
            "--set-string",
            "kubeletPlugin.env[0].value=127.0.0.1",
        )
    )
    pod = find_one(objects, "DaemonSet", PLUGIN)["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    # Without it a host-network pod resolves names with the node's resolver, not the cluster's.
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    container = container_of(find_one(objects, "DaemonSet", PLUGIN))
    # After the chart's own variables, so that a user's entry is the one that counts.
    assert container["env"][-1] == {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}
    assert env_of(container)["DRA_DRIVER_GPU_BACKEND"] == "nvml"


def test_the_mock_plugin_runs_unprivileged_with_mknod_alone(helm: str) -> None:
    # privileged: auto. Fake GPUs need no device of the host: root (its directories are
    # root's) with every capability dropped but CAP_MKNOD, to create the fake device nodes.
    objects = documents(helm_template(helm, "--values", str(MOCK_VALUES)))
    daemonset = find_one(objects, "DaemonSet", PLUGIN)
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    context = container_of(daemonset)["securityContext"]
    assert "privileged" not in context
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["MKNOD"]}
    assert context["allowPrivilegeEscalation"] is False and context["runAsUser"] == 0
    # Without the mock backend, unprivileged means no capability at all.
    objects = documents(helm_template(helm, "--set", "kubeletPlugin.privileged=false"))
    context = container_of(find_one(objects, "DaemonSet", PLUGIN))["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"]} and "privileged" not in context
    # And the mock backend may still be run privileged, when asked.
    objects = documents(
        helm_template(helm, "--values", str(MOCK_VALUES), "--set", "kubeletPlugin.privileged=true")
    )
    context = container_of(find_one(objects, "DaemonSet", PLUGIN))["securityContext"]
    assert context["privileged"] is True and "capabilities" not in context


def test_a_bind_address_value_replaces_the_pod_ip(helm: str) -> None:
    objects = documents(
        helm_template(
            helm,
            "--set-string",
            "metrics.bindAddress=[::]",
            "--set-string",
            "kubeletPlugin.livenessBindAddress=0.0.0.0",
        )
    )
    plugin = container_of(find_one(objects, "DaemonSet", PLUGIN))
    settings = plugin_settings_of(objects)
    assert settings.metrics_address == "[::]:9400"
    assert settings.liveness_address == "0.0.0.0:51515"
    assert "POD_IP" not in {v["name"] for v in plugin["env"]}
    controller = container_of(find_one(objects, "Deployment", CONTROLLER))
    parsed = controller_settings.parse_settings([], environ=env_of(controller))
    assert (parsed.metrics_address, parsed.health_address) == ("[::]:8080", "[::]:8081")
    assert "POD_IP" not in {v["name"] for v in controller["env"]}


def test_the_metrics_network_policy_admits_only_the_monitoring_namespace(helm: str) -> None:
    assert not [o for o in documents(helm_template(helm)) if o["kind"] == "NetworkPolicy"]
    objects = documents(
        helm_template(
            helm,
            "--set",
            "metrics.networkPolicy.enabled=true",
            "--set",
            "metrics.networkPolicy.namespace=prometheus",
            "--set",
            "metrics.networkPolicy.podSelector.matchLabels.app=prometheus",
        )
    )
    for kind, name, port in (
        ("DaemonSet", PLUGIN, 9400),
        ("Deployment", CONTROLLER, 8080),
    ):
        policy = find_one(objects, "NetworkPolicy", f"{name}-metrics")
        assert policy["metadata"]["namespace"] == NAMESPACE
        spec = policy["spec"]
        # It selects the component's pods, by the labels their template carries.
        labels = find_one(objects, kind, name)["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= labels.items()
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == name
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        assert rule["from"] == [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prometheus"}},
                "podSelector": {"matchLabels": {"app": "prometheus"}},
            }
        ]
    # Without metrics there is nothing to admit.
    objects = documents(
        helm_template(
            helm, "--set", "metrics.networkPolicy.enabled=true", "--set", "metrics.enabled=false"
        )
    )
    assert not [o for o in objects if o["kind"] == "NetworkPolicy"]


def test_extended_resource_names_reach_the_classes_as_the_controller_makes_them(
    helm: str,
) -> None:
    values = {"gpu": "", "timeslicing": "nvidia.com/gpu.shared", "mps": "", "mig": ""}
    args = [f"--set=deviceClasses.extendedResourceNames.{k}={v}" for k, v in values.items()]
    objects = documents(helm_template(helm, *args))
    classes = {
        o["metadata"]["name"]: DeviceClass.model_validate(o)
        for o in objects
        if o["kind"] == "DeviceClass"
    }
    config = ClassConfig.model_validate({"extendedResourceNames": values})
    expected = build_device_classes("gpu.dra-driver.io", config)
    assert {name: dump(c.spec) for name, c in classes.items()} == {
        c.metadata.name: dump(c.spec) for c in expected
    }
    assert classes["timeslicing.gpu.dra-driver.io"].spec.extended_resource_name == (
        "nvidia.com/gpu.shared"
    )
    assert classes["gpu.dra-driver.io"].spec.extended_resource_name is None


def test_the_host_pid_namespace_for_usage_metrics_only_when_set(helm: str) -> None:
    default = find_one(documents(helm_template(helm)), "DaemonSet", PLUGIN)
    assert "hostPID" not in default["spec"]["template"]["spec"]
    objects = documents(helm_template(helm, "--set", "kubeletPlugin.hostPID=true"))
    pod = find_one(objects, "DaemonSet", PLUGIN)["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
