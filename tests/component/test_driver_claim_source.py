"""KubernetesClaimSource through the agents' API client (the official client underneath)
against a local HTTP server.

The server answers the one path the client asks for
(``/apis/resource.k8s.io/v1/namespaces/<ns>/resourceclaims/<name>``) the way
the API server does: the object, a 404 Status, or a 500.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from driver_fixtures import claim, claim_uid
from kubernetes import client

from agent_kit.kube import KubernetesClient
from api.errors import PrepareError
from kubelet_plugin.claim_source import KubernetesClaimSource

pytestmark = pytest.mark.component

PREFIX = "/apis/resource.k8s.io/v1/namespaces/"


class _Handler(BaseHTTPRequestHandler):
    objects: ClassVar[dict[str, Any]] = {}
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        if self.path.endswith("/broken"):
            self._answer(500, {"kind": "Status", "code": 500, "message": "etcd timeout"})
        elif self.path in self.objects:
            self._answer(200, self.objects[self.path])
        else:
            self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})

    def _answer(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


@pytest.fixture
def api_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"objects": {}, "paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def source(url: str) -> KubernetesClaimSource:
    configuration = client.Configuration()
    configuration.host = url
    return KubernetesClaimSource(KubernetesClient(client.ApiClient(configuration)))


def test_reads_a_claim(api_server: tuple[str, type[_Handler]]) -> None:
    url, handler = api_server
    document = claim(1)
    document["metadata"]["resourceVersion"] = "42"
    document["status"]["futureField"] = {"kept": True}
    handler.objects[f"{PREFIX}team-a/resourceclaims/claim-1"] = document

    found = source(url).get("team-a", "claim-1")

    assert handler.paths == [f"{PREFIX}team-a/resourceclaims/claim-1"]
    assert found is not None
    assert found.metadata.uid == claim_uid(1)
    assert found.status is not None and found.status.allocation is not None
    assert found.model_dump(mode="json", by_alias=True, exclude_none=True)["status"][
        "futureField"
    ] == {"kept": True}


def test_missing_claim_is_none(api_server: tuple[str, type[_Handler]]) -> None:
    url, _ = api_server
    assert source(url).get("default", "gone") is None


def test_server_error_is_a_retryable_error_not_none(
    api_server: tuple[str, type[_Handler]],
) -> None:
    url, _ = api_server
    with pytest.raises(PrepareError) as caught:
        source(url).get("default", "broken")
    assert caught.value.retryable
    assert str(caught.value) == (
        "claim default/broken: reading it from the API server failed: "
        "get resourceclaims default/broken: 500 Internal Server Error: etcd timeout"
    )


def test_unreachable_server_is_a_retryable_error() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = 0
    with pytest.raises(PrepareError) as caught:
        KubernetesClaimSource(KubernetesClient(client.ApiClient(configuration), timeout_s=2)).get(
            "default", "c"
        )
    assert caught.value.retryable
