"""The HTTP endpoint of both agents: Prometheus metrics and the liveness/readiness probes.

:class:`EndpointServer` serves, on one ``host:port``:

==================== ======================================================================
path                 answer
==================== ======================================================================
``/metrics``         the agent's registry (when given metrics), as prometheus_client's own
                     handler serves it: the text format, or OpenMetrics when the scraper
                     asks for it; gzip when accepted; ``?name[]=`` picks series
``/healthz``         liveness (``/livez`` too): 200 ``ok`` when the check returns None,
                     else 503 with the reason it returned; 200 ``ok`` without a check
``/readyz``          readiness, the same way
anything else        404
==================== ======================================================================

The controller serves probes and metrics on one or two addresses; the kubelet plugin
serves metrics only (the kubelet probes it over gRPC). What "live" and "ready" mean is
decided by the agent: the probes call the functions they are given.

Requests are not logged (probes every few seconds would flood the log). An IPv6 host
(``[::]:9400``) listens on IPv6; ``:9400`` on every IPv4 interface.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from agent_kit.flags import split_host_port

__all__ = ["EndpointServer", "Metrics", "Probe", "best_family", "shut_down"]

log = logging.getLogger(__name__)

#: A probe: None when fine, else why not (the 503's body).
Probe = Callable[[], str | None]


class Metrics(Protocol):
    """An agent's metrics: a registry of their own (no process-global state)."""

    @property
    def registry(self) -> CollectorRegistry: ...


class _Handler(MetricsHandler):
    """prometheus_client's handler for ``/metrics``, plus the probes and 404s."""

    endpoint: EndpointServer

    def do_GET(self) -> None:  # noqa: N802  (the stdlib's name)
        path = self.path.split("?", 1)[0]
        server = self.endpoint
        if path == "/metrics" and server.metrics is not None:
            self.registry = server.metrics.registry
            super().do_GET()
        elif path in ("/healthz", "/livez"):
            self._probe(server.liveness)
        elif path == "/readyz":
            self._probe(server.readiness)
        else:
            self._answer(404, "not found")

    def _probe(self, check: Probe | None) -> None:
        problem = check() if check is not None else None
        if problem is None:
            self._answer(200, "ok")
        else:
            self._answer(503, problem)

    def _answer(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class EndpointServer:
    """Metrics and probes over HTTP on ``address`` (see the module docstring).

    ``address`` is ``host:port``, ``[v6]:port`` or ``:port``; port 0 picks a free one
    (:attr:`port` and :attr:`bound_address` say which once started). The constructor
    raises ValueError for an address that is not of that form; :meth:`start` raises
    OSError when it cannot be bound.
    """

    def __init__(
        self,
        address: str,
        *,
        metrics: Metrics | None = None,
        liveness: Probe | None = None,
        readiness: Probe | None = None,
    ) -> None:
        host, self._requested_port = split_host_port(address)
        # ":9400" asks for every interface.
        self._host = host or "0.0.0.0"
        self.address = address
        self.metrics = metrics
        self.liveness = liveness
        self.readiness = readiness
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        """The port listened on (the requested one before :meth:`start`)."""
        server = self._server
        return int(server.server_address[1]) if server is not None else self._requested_port

    @property
    def bound_address(self) -> str:
        """``host:port`` with the real port once started (``[host]:port`` for IPv6)."""
        if self._server is None:
            return self.address
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    def start(self) -> None:
        """Listen and serve in a daemon thread."""
        family, sockaddr = best_family(self._host, self._requested_port)
        handler: Any = type("Handler", (_Handler,), {"endpoint": self})
        server_class: Any = type("Server", (ThreadingHTTPServer,), {"address_family": family})
        server: ThreadingHTTPServer = server_class(sockaddr, handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="endpoints", daemon=True)
        with self._lock:
            self._server, self._thread = server, thread
        thread.start()
        log.info("serving metrics and probes on http://%s", self.bound_address)

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        shut_down(server, thread)


def shut_down(server: ThreadingHTTPServer | None, thread: threading.Thread | None) -> None:
    """Stop a server that serves forever in ``thread``, close its socket, wait for it."""
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join()


def best_family(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The address family and address to bind ``host`` with (IPv6 for an IPv6 host)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), port)
