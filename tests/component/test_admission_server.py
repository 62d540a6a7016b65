"""The admission webhook's HTTPS endpoint, over real TLS on loopback.

The certificates are made by openssl (tests/tls.py) as the chart makes them: a CA and a
serving certificate it signed. The client checks the server against the CA, as the API
server does with the webhook configuration's ``caBundle``.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent_kit.admission_server import MAX_BODY_BYTES, AdmissionServer, ServingCertificate
from api.errors import ExitCode
from controller.admission import GPU_CONFIG_PATH
from controller.app import Controller, run
from controller.settings import parse_settings
from tests.fakes.cluster import FakeCluster
from tests.tls import make_serving_certificate

pytestmark = pytest.mark.component

PATH = "/validate-things"


def _refuse_red(request: Mapping[str, Any]) -> str | None:
    obj = request.get("object") or {}
    if obj.get("colour") == "red":
        return "red is not allowed: paint it blue"
    if obj.get("colour") == "boom":
        raise RuntimeError("the reviewer's own bug")
    return None


class Endpoint:
    def __init__(self, root: Path) -> None:
        self.certs = make_serving_certificate(root / "certs")
        self.outcomes: list[tuple[str, str]] = []
        self.server = AdmissionServer(
            "127.0.0.1:0",
            ServingCertificate(self.certs),
            {PATH: _refuse_red},
            on_review=lambda path, outcome: self.outcomes.append((path, outcome)),
        )

    def connection(self, ca: Path | None = None) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(ca or self.certs / "ca.crt"))
        return http.client.HTTPSConnection(
            "127.0.0.1", self.server.port, context=context, timeout=10
        )

    def post(self, body: bytes, *, path: str = PATH, ca: Path | None = None) -> tuple[int, bytes]:
        conn = self.connection(ca)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            answer = conn.getresponse()
            return answer.status, answer.read()
        finally:
            conn.close()


def review(obj: dict[str, Any], uid: str = "3f2b7c1e-0000-4000-8000-000000000001") -> bytes:
    request = {"uid": uid, "operation": "CREATE", "object": obj}
    document = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return json.dumps(document).encode()


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    served = Endpoint(tmp_path)
    served.server.start()
    try:
        yield served
    finally:
        served.server.stop()


def test_an_allowed_and_a_refused_review_carry_the_requests_uid(endpoint: Endpoint) -> None:
    status, body = endpoint.post(review({"colour": "blue"}, uid="uid-1"))
    assert status == 200
    answer = json.loads(body)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"] == {"uid": "uid-1", "allowed": True}

    status, body = endpoint.post(review({"colour": "red"}, uid="uid-2"))
    assert status == 200
    response = json.loads(body)["response"]
    assert response["uid"] == "uid-2"
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 422,
        "reason": "Invalid",
        "message": "red is not allowed: paint it blue",
    }
    assert endpoint.outcomes == [(PATH, "allowed"), (PATH, "denied")]


def test_a_failing_reviewer_allows_with_a_warning(endpoint: Endpoint) -> None:
    status, body = endpoint.post(review({"colour": "boom"}))
    response = json.loads(body)["response"]
    assert status == 200
    assert response["allowed"] is True
    assert "could not check this object" in response["warnings"][0]
    assert endpoint.outcomes == [(PATH, "error")]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"not json", 400, "not JSON"),
        (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",'
         b' "request": {"uid": "u"}}', 400, "admissionReviewVersions: [v1]"),
        (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', 400, "request.uid"),
        (b"[]", 400, "AdmissionReview"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_review_gets_400(
    endpoint: Endpoint, body: bytes, status: int, says: str
) -> None:
    got, text = endpoint.post(body)
    assert got == status
    assert says in text.decode()
    assert endpoint.outcomes == []


def test_other_paths_and_methods_are_refused(endpoint: Endpoint) -> None:
    status, _ = endpoint.post(review({}), path="/elsewhere")
    assert status == 404
    conn = endpoint.connection()
    conn.request("GET", PATH)
    assert conn.getresponse().status == 405
    conn.close()


def test_an_oversized_body_is_refused_before_it_is_read(endpoint: Endpoint) -> None:
    conn = endpoint.connection()
    conn.putrequest("POST", PATH)
    conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 413
    conn.close()


def test_a_silent_client_does_not_hold_up_others(endpoint: Endpoint) -> None:
    idle = socket.create_connection(("127.0.0.1", endpoint.server.port))
    try:
        status, _ = endpoint.post(review({"colour": "blue"}))
        assert status == 200
    finally:
        idle.close()


def test_a_client_without_the_ca_cannot_talk_to_it(endpoint: Endpoint, tmp_path: Path) -> None:
    other = make_serving_certificate(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        endpoint.post(review({}), ca=other / "ca.crt")


def test_a_rotated_certificate_is_served_without_a_restart(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    rotated = make_serving_certificate(tmp_path / "rotated")
    for name in ("tls.crt", "tls.key"):
        shutil.copy(rotated / name, endpoint.certs / name)

    status, _ = endpoint.post(review({"colour": "blue"}), ca=rotated / "ca.crt")

    assert status == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        endpoint.post(review({}))  # the old CA no longer vouches for it


def test_a_broken_rotation_keeps_the_previous_certificate(endpoint: Endpoint) -> None:
    (endpoint.certs / "tls.key").write_text("half a key")

    status, _ = endpoint.post(review({"colour": "blue"}))

    assert status == 200


def test_a_missing_certificate_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ServingCertificate(tmp_path / "nowhere")


def test_a_rotation_caught_half_written_is_loaded_when_it_completes(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    rotated = make_serving_certificate(tmp_path / "rotated")
    shutil.copy(rotated / "tls.crt", endpoint.certs / "tls.crt")  # the key is still the old one
    status, _ = endpoint.post(review({}))  # the old pair is served meanwhile
    assert status == 200

    shutil.copy(rotated / "tls.key", endpoint.certs / "tls.key")

    status, _ = endpoint.post(review({}), ca=rotated / "ca.crt")
    assert status == 200


# --- the controller's webhook -------------------------------------------------------------


def _gpu_claim(strategy: str) -> dict[str, Any]:
    params = {
        "apiVersion": "gpu.dra-driver.io/v1alpha1",
        "kind": "GpuConfig",
        "sharing": {"strategy": strategy},
    }
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "train", "namespace": "team-a"},
        "spec": {
            "devices": {
                "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.dra-driver.io"}}],
                "config": [{"opaque": {"driver": "gpu.dra-driver.io", "parameters": params}}],
            }
        },
    }


def test_the_controller_serves_the_gpu_config_webhook_and_counts_reviews(
    tmp_path: Path,
) -> None:
    certs = make_serving_certificate(tmp_path / "certs")
    settings = parse_settings(
        ["--identity", "c0", "--webhook-address", "127.0.0.1:0", "--webhook-cert-dir", str(certs)],
        environ={},
    )
    controller = Controller(settings, FakeCluster(), workers=1)
    controller.start()
    try:
        assert controller.webhook is not None
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        answers = []
        for strategy in ("TimeSlicing", "Timeslicing"):
            conn = http.client.HTTPSConnection(
                "127.0.0.1", controller.webhook.port, context=context, timeout=10
            )
            conn.request("POST", GPU_CONFIG_PATH, review(_gpu_claim(strategy)))
            answers.append(json.loads(conn.getresponse().read())["response"])
            conn.close()
        metrics = controller.metrics.render().decode()
    finally:
        controller.shutdown()

    assert answers[0]["allowed"] is True
    assert answers[1]["allowed"] is False
    assert answers[1]["status"]["message"].startswith(
        "invalid GpuConfig of driver gpu.dra-driver.io: "
        "spec.devices.config[0].opaque.parameters.sharing.strategy: "
    )
    for outcome in ("allowed", "denied"):
        assert (
            f'dra_driver_admission_reviews_total{{outcome="{outcome}",'
            f'webhook="{GPU_CONFIG_PATH}"}} 1.0' in metrics
        )


def test_the_controller_does_not_start_without_its_webhook_certificate(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    settings = parse_settings(
        ["--identity", "c0", "--webhook-address", "127.0.0.1:0", "--webhook-cert-dir", missing],
        environ={},
    )
    assert run(settings, client=FakeCluster()) == ExitCode.INVALID
