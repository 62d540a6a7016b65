"""``KubernetesClient.get_pod_proxy`` over HTTP: the path the API server's pod proxy serves,
the body as text, and the proxy's refusals as the client's error tree (a loopback server
answers as kube-apiserver does; the real one is in tests/cluster/test_cluster_top.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from kubernetes import client as k8s_client

from agent_kit.kube import ForbiddenError, KubernetesClient, UnavailableError

METRICS = "# TYPE dra_driver_gpu_memory_used_bytes gauge\n"
#: kube-apiserver's answers: a pod it cannot dial, and RBAC without pods/proxy.
REFUSALS = {
    "dead": (503, "error trying to reach service: dial tcp 10.1.1.1:9400: connect: refused"),
    "guarded": (403, 'pods "guarded" is forbidden: cannot get resource "pods/proxy"'),
}


class _Handler(BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        pod = self.path.split("/pods/")[1].split("%3A")[0]
        if pod in REFUSALS:
            code, message = REFUSALS[pod]
            body = json.dumps({"kind": "Status", "code": code, "message": message}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
        else:
            body = METRICS.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def kube() -> Iterator[KubernetesClient]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = k8s_client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    _Handler.paths = []
    try:
        yield KubernetesClient(k8s_client.ApiClient(configuration))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_pods_port_is_read_through_the_proxy_path(kube: KubernetesClient) -> None:
    assert kube.get_pod_proxy("dra-driver", "plugin-x", 9400, "metrics") == METRICS
    # The pod and its port are one path segment, NAME:PORT (the colon escaped, as the
    # official client escapes path parameters; the API server decodes it).
    assert _Handler.paths == ["/api/v1/namespaces/dra-driver/pods/plugin-x%3A9400/proxy/metrics"]


def test_the_proxys_refusals_are_the_error_tree(kube: KubernetesClient) -> None:
    with pytest.raises(UnavailableError, match=r"dead:9400/proxy/metrics: .*dial tcp"):
        kube.get_pod_proxy("dra-driver", "dead", 9400, "metrics")
    with pytest.raises(ForbiddenError, match="pods/proxy"):
        kube.get_pod_proxy("dra-driver", "guarded", 9400, "metrics")
