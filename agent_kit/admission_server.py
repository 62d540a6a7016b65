"""A validating admission webhook endpoint: AdmissionReview v1 over HTTPS.

:class:`AdmissionServer` answers the API server's ``POST <path>`` with an
``admission.k8s.io/v1`` AdmissionReview: the request goes to the reviewer registered
for the path, which says allowed (None) or why not (a message); the answer carries the
request's ``uid``, as the API server requires. What is judged is the agent's business;
this module is the wire.

TLS: the serving certificate and key are read from ``tls.crt`` and ``tls.key`` of a
directory (a mounted ``kubernetes.io/tls`` Secret, written by the chart or by
cert-manager). Each new connection checks the files' modification times and loads them
again when they changed, so a rotated certificate is served without a restart; a pair
that cannot be loaded is logged once and the previous one kept until the files change
again. TLS 1.2 at least.

Bounds, since anyone who reaches the port may send anything: a body over
:data:`MAX_BODY_BYTES` (the API server's own request limit) gets 413, a connection that
does not finish its request within :data:`IO_TIMEOUT_S` is closed; a body that is not an
AdmissionReview gets 400 naming what is wrong; a reviewer that raises answers "allowed"
with a warning, so the webhook never blocks the cluster on its own bug (the
ValidatingWebhookConfiguration's ``failurePolicy`` decides what an unreachable webhook
means). Requests are counted by the ``on_review`` callback (path, allowed or denied or
error), not logged one by one.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from agent_kit.flags import split_host_port
from agent_kit.metrics_server import best_family, shut_down

__all__ = [
    "CERT_FILE",
    "IO_TIMEOUT_S",
    "KEY_FILE",
    "MAX_BODY_BYTES",
    "AdmissionServer",
    "Reviewer",
    "ServingCertificate",
]

log = logging.getLogger(__name__)

CERT_FILE: Final = "tls.crt"
KEY_FILE: Final = "tls.key"
#: The API server refuses requests over 3 MiB, so no review of a stored object is larger.
MAX_BODY_BYTES: Final = 3 * 1024 * 1024 + 64 * 1024
IO_TIMEOUT_S: Final = 10.0
REVIEW_API_VERSION: Final = "admission.k8s.io/v1"

#: A reviewer: the AdmissionReview's ``request`` to None (allowed) or the refusal's message.
Reviewer = Callable[[Mapping[str, Any]], str | None]
#: Called once per answered review: (path, "allowed" | "denied" | "error").
ReviewCounter = Callable[[str, str], None]


class ServingCertificate:
    """The TLS context of ``tls.crt``/``tls.key`` in ``directory``, reloaded when they change.

    The constructor loads the pair and raises OSError or ssl.SSLError when it cannot:
    an agent told to serve a webhook must not start without a certificate.
    """

    def __init__(self, directory: Path) -> None:
        self.cert = directory / CERT_FILE
        self.key = directory / KEY_FILE
        self._lock = threading.Lock()
        self._stamp = self._read_stamp()
        self._context = self._load()

    def _read_stamp(self) -> tuple[int, int]:
        return (os.stat(self.cert).st_mtime_ns, os.stat(self.key).st_mtime_ns)

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        return context

    def context(self) -> ssl.SSLContext:
        """The current context; the files are loaded again when they changed."""
        with self._lock:
            try:
                stamp = self._read_stamp()
                if stamp != self._stamp:
                    # Tried once per change: a pair caught half-written is tried again
                    # when its second file lands, not on every connection meanwhile.
                    self._stamp = stamp
                    self._context = self._load()
                    log.info("loaded the rotated webhook certificate %s", self.cert)
            except (OSError, ssl.SSLError) as exc:
                log.warning(
                    "cannot load the webhook certificate %s (%s); serving the previous one",
                    self.cert,
                    exc,
                )
            return self._context


class _Handler(BaseHTTPRequestHandler):
    server_version = "dra-driver-admission"
    endpoint: AdmissionServer

    def setup(self) -> None:
        self.request.settimeout(IO_TIMEOUT_S)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # every review is counted; the log would only repeat the API server's rate

    def do_GET(self) -> None:
        self._plain(405, "POST an admission.k8s.io/v1 AdmissionReview")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        reviewer = self.endpoint.reviewers.get(path)
        if reviewer is None:
            self._plain(404, f"no webhook at {path}")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._plain(411, "Content-Length is required")
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self._plain(413, f"an AdmissionReview is at most {MAX_BODY_BYTES} bytes")
            return
        try:
            review = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError) as exc:
            self._plain(400, f"the body is not JSON: {exc}")
            return
        request = review.get("request") if isinstance(review, dict) else None
        if (
            not isinstance(review, dict)
            or review.get("apiVersion") != REVIEW_API_VERSION
            or review.get("kind") != "AdmissionReview"
            or not isinstance(request, dict)
            or not isinstance(request.get("uid"), str)
        ):
            self._plain(
                400,
                f"expected an {REVIEW_API_VERSION} AdmissionReview with request.uid; set "
                "admissionReviewVersions: [v1] in the webhook configuration",
            )
            return
        self._review(path, reviewer, request)

    def _review(self, path: str, reviewer: Reviewer, request: Mapping[str, Any]) -> None:
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        try:
            refusal = reviewer(request)
        except Exception:
            log.exception("the webhook %s failed on %s; allowed", path, _describe(request))
            response["warnings"] = [
                "the dra-driver webhook could not check this object; see the controller's log"
            ]
            outcome = "error"
        else:
            if refusal is not None:
                response["allowed"] = False
                response["status"] = {"code": 422, "reason": "Invalid", "message": refusal}
            outcome = "allowed" if refusal is None else "denied"
        if self.endpoint.on_review is not None:
            self.endpoint.on_review(path, outcome)
        body = json.dumps(
            {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": response}
        ).encode()
        self._send(200, "application/json", body)

    def _plain(self, status: int, text: str) -> None:
        self._send(status, "text/plain; charset=utf-8", (text + "\n").encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _describe(request: Mapping[str, Any]) -> str:
    kind = request.get("kind")
    name = request.get("name") or "(generated name)"
    namespace = request.get("namespace")
    kind_name = kind.get("kind") if isinstance(kind, dict) else "object"
    return f"{kind_name} {namespace + '/' if namespace else ''}{name}"


class _TlsServer(ThreadingHTTPServer):
    """Each accepted connection is wrapped in the certificate's current context; the
    handshake runs in the connection's own thread, under its timeout."""

    daemon_threads = True
    certificate: ServingCertificate

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        sock.settimeout(IO_TIMEOUT_S)
        try:
            wrapped = self.certificate.context().wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ssl.SSLError):
            sock.close()
            raise
        return wrapped, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.do_handshake()
        except (OSError, ssl.SSLError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class AdmissionServer:
    """Serve ``reviewers`` (path to reviewer) over HTTPS on ``address``.

    ``address`` is ``host:port``, ``[v6]:port`` or ``:port``; port 0 picks a free one
    (:attr:`port` says which once started). :meth:`start` raises OSError when the
    address cannot be bound.
    """

    def __init__(
        self,
        address: str,
        certificate: ServingCertificate,
        reviewers: Mapping[str, Reviewer],
        *,
        on_review: ReviewCounter | None = None,
    ) -> None:
        host, self._requested_port = split_host_port(address, example_port=8443)
        self._host = host or "0.0.0.0"
        self.certificate = certificate
        self.reviewers = dict(reviewers)
        self.on_review = on_review
        self._server: _TlsServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        server = self._server
        return int(server.server_address[1]) if server is not None else self._requested_port

    def start(self) -> None:
        """Listen and serve in a daemon thread."""
        family, sockaddr = best_family(self._host, self._requested_port)
        handler: Any = type("Handler", (_Handler,), {"endpoint": self})
        server_class: Any = type(
            "Server", (_TlsServer,), {"address_family": family, "certificate": self.certificate}
        )
        server: _TlsServer = server_class(sockaddr, handler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="admission-webhook", daemon=True
        )
        self._thread.start()
        log.info(
            "serving admission webhooks %s on https://%s:%d",
            ", ".join(sorted(self.reviewers)),
            self._host,
            self.port,
        )

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        shut_down(server, thread)
