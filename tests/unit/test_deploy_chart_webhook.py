"""The chart's optional GpuConfig webhook (``webhook.enabled``), through ``helm template``.

Off by default. On: a Service to every controller replica, the controller told where to
serve and where its certificate is, and either a CA and serving certificate the chart made
(checked with openssl: the certificate is signed by the caBundle's CA and names the
Service's DNS names) or cert-manager's Certificate with the CA injected by annotation.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chart_fixtures import (
    CHART,
    CONTROLLER,
    NAMESPACE,
    RELEASE,
    container_of,
    documents,
    env_of,
    find_one,
    helm_fixture,  # noqa: F401  (pytest finds it as `helm`)
    helm_template,
    run_helm,
)

from controller import settings as controller_settings
from controller.admission import GPU_CONFIG_PATH

NAME = f"{RELEASE}-webhook"
HOST = f"{NAME}.{NAMESPACE}.svc"
ON = ("--set", "webhook.enabled=true")


def _webhook(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (hook,) = find_one(objects, "ValidatingWebhookConfiguration", NAME)["webhooks"]
    return dict(hook)


def test_off_by_default(helm: str) -> None:
    objects = documents(helm_template(helm))
    assert not [o for o in objects if "webhook" in o["metadata"]["name"]]
    container = container_of(find_one(objects, "Deployment", CONTROLLER))
    assert "DRA_DRIVER_WEBHOOK_ADDRESS" not in env_of(container)


def test_the_webhook_reaches_the_controller_through_its_service(helm: str) -> None:
    objects = documents(helm_template(helm, *ON))
    hook = _webhook(objects)
    assert hook["name"] == "gpu-configs.gpu.dra-driver.io"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Ignore"
    (rule,) = hook["rules"]
    assert rule["operations"] == ["CREATE", "UPDATE"]
    assert set(rule["resources"]) == {"resourceclaims", "resourceclaimtemplates", "deviceclasses"}
    service_ref = hook["clientConfig"]["service"]
    assert service_ref == {
        "name": NAME,
        "namespace": NAMESPACE,
        "path": GPU_CONFIG_PATH,
        "port": 443,
    }

    service = find_one(objects, "Service", NAME)
    deployment = find_one(objects, "Deployment", CONTROLLER)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    container = container_of(deployment)
    (named,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]

    # The controller's own settings, read from the env the chart gives it.
    settings = controller_settings.settings_from_args({}, env_of(container))
    assert settings.webhook_address is not None
    assert settings.webhook_address.endswith(f":{named['containerPort']}")
    (mount,) = container["volumeMounts"]
    assert Path(mount["mountPath"]) == settings.webhook_cert_dir
    assert mount["readOnly"] is True
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["secret"]["secretName"] == f"{NAME}-tls"


def test_the_chart_made_certificate_is_signed_by_the_ca_bundle(helm: str, tmp_path: Path) -> None:
    objects = documents(helm_template(helm, *ON))
    secret = find_one(objects, "Secret", f"{NAME}-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert _webhook(objects)["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))

    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", "ca.crt", "tls.crt"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    names = subprocess.run(
        ["openssl", "x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"DNS:{HOST}," in names
    assert f"DNS:{HOST}.cluster.local" in names


def test_with_cert_manager_the_ca_is_injected(helm: str) -> None:
    objects = documents(helm_template(helm, *ON, "--set", "webhook.certManager.enabled=true"))
    assert not [o for o in objects if o["kind"] == "Secret"]
    certificate = find_one(objects, "Certificate", NAME)
    assert certificate["spec"]["secretName"] == f"{NAME}-tls"
    assert HOST in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": NAME}
    assert find_one(objects, "Issuer", NAME)["spec"] == {"selfSigned": {}}
    configuration = find_one(objects, "ValidatingWebhookConfiguration", NAME)
    annotations = configuration["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{NAME}"
    assert "caBundle" not in _webhook(objects)["clientConfig"]


def test_an_issuer_of_the_admins_replaces_the_self_signed_one(helm: str) -> None:
    objects = documents(
        helm_template(
            helm, *ON,
            "--set", "webhook.certManager.enabled=true",
            "--set", "webhook.certManager.issuerRef.name=corp-ca",
            "--set", "webhook.certManager.issuerRef.kind=ClusterIssuer",
        )
    )  # fmt: skip
    assert not [o for o in objects if o["kind"] == "Issuer"]
    certificate = find_one(objects, "Certificate", NAME)
    assert certificate["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "corp-ca"}


def test_the_network_policy_lets_the_api_server_call_the_webhook(helm: str) -> None:
    objects = documents(helm_template(helm, *ON, "--set", "metrics.networkPolicy.enabled=true"))
    policy = find_one(objects, "NetworkPolicy", f"{CONTROLLER}-metrics")
    open_rules = [rule for rule in policy["spec"]["ingress"] if "from" not in rule]
    assert open_rules == [{"ports": [{"protocol": "TCP", "port": 8443}]}]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "controller.enabled=false"], "webhook.enabled needs controller.enabled"),
        (["--set", "webhook.failurePolicy=Maybe"], 'failurePolicy "Maybe": use Ignore or Fail'),
    ],
)
def test_values_the_webhook_refuses(helm: str, values: list[str], message: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *ON, *values)
    assert result.returncode != 0
    assert message in result.stderr
