"""The GpuConfig checks refuse a bad opaque config at the API server's door.

Two gates, each test run once through each (the ``gate`` parameter):

- ``policy``: the chart's ValidatingAdmissionPolicy dra-driver-gpu-configs and its binding,
  installed from deploy/manifests/dra-driver.yaml (the chart's default rendering) as they
  are, so the API server compiles and runs their CEL;
- ``webhook``: ``dra-driver controller`` run as a process with ``--webhook-address`` on
  loopback and a certificate made by openssl, registered in a ValidatingWebhookConfiguration
  (by URL, with the CA as caBundle) that the API server calls over TLS. Loopback is only
  reachable from the local cluster's API server: against an external cluster this gate is
  skipped, and the skip says why.

Before the gate, a DeviceClass with a bad config is made, as one written before the chart
was installed. Then, as a user would see it:

- a ResourceClaim, a ResourceClaimTemplate or a DeviceClass whose GpuConfig of this driver is
  invalid is refused, and the refusal carries each message `dra-driver allocate` gives for the
  same object (dra_driver.manifests.load_inventory computes them here);
- a valid GpuConfig, and any config of another driver, are accepted;
- an update that breaks a class's config is refused; one that leaves the configs alone is
  not, even on the class made before the gate, which can also be deleted.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import itertools
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_access import (
    ClusterUnderTest,
    admission_policies,
    core_api,
    resource_api,
    wait_for,
)
from kubernetes import client

from api.errors import InvalidInputError
from controller.admission import GPU_CONFIG_PATH
from dra_driver.manifest_read import Document
from dra_driver.manifests import load_inventory
from tests.tls import make_serving_certificate

NAME = "dra-driver-gpu-configs"
DRIVER = "gpu.dra-driver.io"
POLICY = admission_policies(lambda name: name == NAME)
GPU_CONFIG: dict[str, Any] = {"apiVersion": "gpu.dra-driver.io/v1alpha1", "kind": "GpuConfig"}
BAD_STRATEGY: dict[str, Any] = {**GPU_CONFIG, "sharing": {"strategy": "Timeslicing"}}
PRE_POLICY_CLASS = f"pre-policy-{uuid.uuid4().hex[:8]}"


def _config(params: dict[str, Any], driver: str = DRIVER) -> list[dict[str, Any]]:
    other = {"opaque": {"driver": "other.example.com", "parameters": {"anything": ["goes"]}}}
    return [other, {"opaque": {"driver": driver, "parameters": params}}]


def _claim(name: str, namespace: str, params: dict[str, Any], **kw: Any) -> dict[str, Any]:
    request = {"name": "gpu", "exactly": {"deviceClassName": DRIVER}}
    devices = {"requests": [request], "config": _config(params, **kw)}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": devices},
    }


def _template(name: str, namespace: str, params: dict[str, Any]) -> dict[str, Any]:
    claim = _claim(name, namespace, params)
    return {**claim, "kind": "ResourceClaimTemplate", "spec": {"spec": claim["spec"]}}


def _class(name: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"config": _config(params)},
    }


def _cli_messages(obj: dict[str, Any]) -> list[str]:
    """What `dra-driver allocate` says of ``obj``: one line per field."""
    with pytest.raises(InvalidInputError) as raised:
        load_inventory([Document("test", obj)])
    return [str(e) for e in raised.value.errors]


def _refusal(call: Callable[[], Any]) -> str | None:
    """The API server's message when it refuses the call, or None when it accepts it."""
    try:
        call()
    except client.ApiException as err:
        assert err.status in (400, 403, 422), (err.status, err.body)
        message: str = json.loads(err.body or "{}")["message"]
        return message
    return None


@pytest.fixture(scope="module")
def api(local_cluster: ClusterUnderTest) -> Any:
    return resource_api(local_cluster.api_client)


#: The name the API server gives the webhook in its refusals.
WEBHOOK = f"gpu-configs.{DRIVER}"
DRA_DRIVER = str(Path(sys.executable).parent / "dra-driver")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _policy(admission: Any) -> Iterator[None]:
    policy, binding = sorted(POLICY, key=lambda d: d["kind"])
    admission.create_validating_admission_policy(policy)
    try:
        admission.create_validating_admission_policy_binding(binding)
        yield
    finally:
        with contextlib.suppress(client.ApiException):
            admission.delete_validating_admission_policy_binding(NAME)
        admission.delete_validating_admission_policy(NAME)


@contextlib.contextmanager
def _webhook(cluster: ClusterUnderTest, admission: Any, root: Path) -> Iterator[None]:
    """The controller serving the webhook on loopback, and the configuration calling it."""
    certs = make_serving_certificate(root / "certs")
    port = _free_port()
    with (root / "controller.log").open("w") as log:
        controller = subprocess.Popen(
            [
                DRA_DRIVER, "controller", "--kubeconfig", str(cluster.kubeconfig),
                "--identity", "webhook-test", "--no-leader-elect", "--no-manage-device-classes",
                "--webhook-address", f"127.0.0.1:{port}", "--webhook-cert-dir", str(certs),
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [
            {
                "name": WEBHOOK,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                "rules": [
                    {
                        "apiGroups": ["resource.k8s.io"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["resourceclaims", "resourceclaimtemplates", "deviceclasses"],
                    }
                ],
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}{GPU_CONFIG_PATH}",
                    "caBundle": base64.b64encode((certs / "ca.crt").read_bytes()).decode(),
                },
            }
        ],
    }

    def serving() -> bool:
        assert controller.poll() is None, (root / "controller.log").read_text()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        return False

    try:
        wait_for("the controller to serve its webhook", serving, cluster=cluster)
        admission.create_validating_webhook_configuration(configuration)
        try:
            yield
        finally:
            admission.delete_validating_webhook_configuration(NAME)
    finally:
        controller.terminate()
        assert controller.wait(timeout=30) == 0, (root / "controller.log").read_text()


@pytest.fixture(scope="module", params=["policy", "webhook"])
def gate(request: pytest.FixtureRequest, local_cluster: ClusterUnderTest) -> str:
    if request.param == "webhook" and local_cluster.local is None:
        pytest.skip("the webhook gate needs the local cluster: its API server calls loopback")
    return str(request.param)


@pytest.fixture(scope="module")
def config_policy(
    local_cluster: ClusterUnderTest, api: Any, gate: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The class made before the gate, then the gate, until the module's tests of this gate
    end; waits until the API server enforces it."""
    admission: Any = client.AdmissionregistrationV1Api(local_cluster.api_client)
    # The other gate's removal takes a moment to reach the API server's admission chain.
    wait_for(
        "a class with a bad config to be accepted (no gate yet)",
        lambda: (
            _refusal(lambda: api.create_device_class(_class(PRE_POLICY_CLASS, BAD_STRATEGY)))
            is None
        ),
        cluster=local_cluster,
    )
    try:
        with contextlib.ExitStack() as stack:
            if gate == "policy":
                stack.enter_context(_policy(admission))
            else:
                root = tmp_path_factory.mktemp("webhook")
                stack.enter_context(_webhook(local_cluster, admission, root))
            tries = itertools.count()

            def refused() -> str | None:
                name = f"probe-{next(tries)}"
                message = _refusal(lambda: api.create_device_class(_class(name, BAD_STRATEGY)))
                if message is None:
                    api.delete_device_class(name)
                return message

            wait_for(f"the GpuConfig {gate} to be enforced", refused, cluster=local_cluster)
            yield
    finally:
        with contextlib.suppress(client.ApiException):
            api.delete_device_class(PRE_POLICY_CLASS)


@pytest.fixture
def ns(local_cluster: ClusterUnderTest, config_policy: None) -> Iterator[str]:
    core: Any = core_api(local_cluster.api_client)
    name = f"gpu-config-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


def test_the_manifests_hold_the_policy_and_its_binding() -> None:
    assert sorted(d["kind"] for d in POLICY) == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]


BAD: dict[str, dict[str, Any]] = {
    "unknown strategy": BAD_STRATEGY,
    "unknown interval": {
        **GPU_CONFIG,
        "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Never"}},
    },
    "MPS settings with time-slicing": {
        **GPU_CONFIG,
        "sharing": {"strategy": "TimeSlicing", "mpsConfig": {"defaultActiveThreadPercentage": 50}},
    },
    "percentage out of range, memory limit zero": {
        **GPU_CONFIG,
        "sharing": {
            "strategy": "MPS",
            "mpsConfig": {
                "defaultActiveThreadPercentage": 101,
                "defaultPinnedDeviceMemoryLimit": "0",
                "defaultPerDevicePinnedMemoryLimit": {"0": "-1Gi"},
            },
        },
    },
    "a typo in a field name": {**GPU_CONFIG, "sharing": {"strategy": "MPS", "mpsconfig": {}}},
    "a string for an integer": {
        **GPU_CONFIG,
        "sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": "50"}},
    },
    "another kind": {"apiVersion": "gpu.dra-driver.io/v1", "kind": "GpuConfig"},
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_claim_with_a_bad_gpu_config_is_refused_with_the_clis_message(
    api: Any, ns: str, gate: str, case: str
) -> None:
    claim = _claim("bad", ns, BAD[case])
    refusal = _refusal(lambda: api.create_namespaced_resource_claim(ns, claim))
    assert refusal is not None, f"{case}: accepted"
    denied = {
        "policy": f"ValidatingAdmissionPolicy '{NAME}' with binding '{NAME}' denied request: ",
        "webhook": f'admission webhook "{WEBHOOK}" denied the request: ',
    }[gate]
    assert f"{denied}invalid GpuConfig of driver {DRIVER}: " in refusal, refusal
    expected = _cli_messages(claim)
    assert expected and all(
        e.startswith("spec.devices.config[1].opaque.parameters.") for e in expected
    )
    for message in expected:
        assert message in refusal, f"{case}: {message!r} not in {refusal!r}"


def test_the_refusal_names_the_field_and_the_fix(api: Any, ns: str) -> None:
    refusal = _refusal(
        lambda: api.create_namespaced_resource_claim(ns, _claim("bad", ns, BAD_STRATEGY))
    )
    assert refusal is not None
    assert refusal.endswith(
        "invalid GpuConfig of driver gpu.dra-driver.io: spec.devices.config[1].opaque.parameters"
        '.sharing.strategy: unsupported value "Timeslicing": supported values "TimeSlicing", '
        '"MPS" (the driver would refuse it at prepare)'
    ), refusal


GOOD: dict[str, dict[str, Any]] = {
    "exclusive": GPU_CONFIG,
    "time-slicing": {
        **GPU_CONFIG,
        "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}},
    },
    "MPS": {
        **GPU_CONFIG,
        "sharing": {
            "strategy": "MPS",
            "mpsConfig": {
                "defaultActiveThreadPercentage": 50,
                "defaultPinnedDeviceMemoryLimit": "10Gi",
                "defaultPerDevicePinnedMemoryLimit": {"0": "5Gi", "GPU-1234": 1073741824},
            },
        },
    },
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_a_claim_with_a_good_gpu_config_is_accepted(api: Any, ns: str, case: str) -> None:
    claim = _claim("good", ns, GOOD[case])
    assert _refusal(lambda: api.create_namespaced_resource_claim(ns, claim)) is None


def test_a_config_of_another_driver_is_left_alone(api: Any, ns: str) -> None:
    claim = _claim("other", ns, {"sharing": "whatever"}, driver="gpu.example.com")
    assert _refusal(lambda: api.create_namespaced_resource_claim(ns, claim)) is None


def test_a_template_with_a_bad_gpu_config_is_refused(api: Any, ns: str) -> None:
    bad = _template("bad", ns, BAD_STRATEGY)
    refusal = _refusal(lambda: api.create_namespaced_resource_claim_template(ns, bad))
    assert refusal is not None
    (message,) = _cli_messages(bad)
    assert message.startswith("spec.spec.devices.config[1].opaque.parameters.sharing.strategy: ")
    assert message in refusal, refusal
    good = _template("good", ns, GOOD["MPS"])
    assert _refusal(lambda: api.create_namespaced_resource_claim_template(ns, good)) is None


def test_a_device_class_is_checked_on_create_and_update(api: Any, config_policy: None) -> None:
    name = f"config-{uuid.uuid4().hex[:8]}"
    bad = _class(name, BAD["percentage out of range, memory limit zero"])
    refusal = _refusal(lambda: api.create_device_class(bad))
    assert refusal is not None
    for message in _cli_messages(bad):
        assert message.startswith("spec.config[1].opaque.parameters.sharing.mpsConfig.")
        assert message in refusal, refusal
    good = _class(name, GOOD["time-slicing"])
    api.create_device_class(good)
    try:
        stored = api.read_device_class(name).to_dict()
        broken = copy.deepcopy(good)
        broken["metadata"]["resourceVersion"] = stored["metadata"]["resource_version"]
        broken["spec"]["config"][1]["opaque"]["parameters"] = BAD_STRATEGY
        refusal = _refusal(lambda: api.replace_device_class(name, broken))
        assert refusal is not None and "sharing.strategy: unsupported value" in refusal
        label = {"metadata": {"labels": {"example.com/team": "a"}}}
        assert _refusal(lambda: api.patch_device_class(name, label)) is None
    finally:
        api.delete_device_class(name)


def test_a_class_written_before_the_policy_can_still_be_labelled_and_deleted(
    api: Any, config_policy: None
) -> None:
    label = {"metadata": {"labels": {"example.com/team": "b"}}}
    assert _refusal(lambda: api.patch_device_class(PRE_POLICY_CLASS, label)) is None
    # Changing its configs is checked: still bad, so refused.
    stored = api.read_device_class(PRE_POLICY_CLASS).to_dict()
    params = copy.deepcopy(BAD_STRATEGY)
    params["sharing"]["strategy"] = "Mps"
    patch = {"spec": {"config": _config(params)}}
    assert stored["spec"]["config"] is not None
    refusal = _refusal(lambda: api.patch_device_class(PRE_POLICY_CLASS, patch))
    assert refusal is not None and 'unsupported value "Mps"' in refusal, refusal
    assert _refusal(lambda: api.delete_device_class(PRE_POLICY_CLASS)) is None
