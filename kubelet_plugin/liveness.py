"""The liveness probe endpoint: a standard ``grpc.health.v1.Health`` service.

Its ``Check`` does what the kubelet does to the plugin, on fresh
connections: ``GetInfo`` on the registration socket (the answer must name
this driver and its DRA socket) and a ``NodePrepareResources`` without
claims on the DRA socket. Each call must succeed within a short deadline;
otherwise the answer is ``NOT_SERVING`` and the DaemonSet's liveness probe
restarts the plugin. A socket file that was deleted, a server that stopped
or hangs, all show.

The kubelet's ``grpc:`` probe and ``grpc_health_probe`` speak this protocol;
the service name in the request must be empty (the plugin as a whole), any
other name is answered ``NOT_FOUND``.
"""

from __future__ import annotations

import logging
import threading
import time

import grpc

from kubelet_plugin.proto_gen.dra.v1 import api_pb2 as dra_v1
from kubelet_plugin.proto_gen.dra.v1 import api_pb2_grpc as dra_v1_grpc
from kubelet_plugin.proto_gen.grpc_health.v1 import health_pb2, health_pb2_grpc
from kubelet_plugin.proto_gen.pluginregistration.v1 import api_pb2 as registration_pb2
from kubelet_plugin.proto_gen.pluginregistration.v1 import api_pb2_grpc as registration_grpc
from kubelet_plugin.registration import PLUGIN_TYPE

_log = logging.getLogger(__name__)

DEFAULT_CHECK_TIMEOUT = 0.9
"""Seconds for both calls together; below the kubelet's default probe timeout (1 s)."""


class LivenessServicer(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1.Health/Check`` backed by real calls to the plugin's sockets."""

    def __init__(
        self,
        driver_name: str,
        registration_socket: str,
        dra_socket: str,
        *,
        timeout: float = DEFAULT_CHECK_TIMEOUT,
    ) -> None:
        self._driver_name = driver_name
        self._registration_socket = registration_socket
        self._dra_socket = dra_socket
        self._timeout = timeout
        self._lock = threading.Lock()
        self._last_problem: str | None = None

    def probe(self, timeout: float | None = None) -> str | None:
        """Exercise both sockets; returns None when both answer correctly, else
        what is wrong. ``timeout`` (default: the configured one) covers both calls."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)

        def remaining() -> float:
            return max(deadline - time.monotonic(), 0.0)

        try:
            with grpc.insecure_channel(f"unix://{self._registration_socket}") as channel:
                info = registration_grpc.RegistrationStub(channel).GetInfo(
                    registration_pb2.InfoRequest(), timeout=remaining()
                )
            expected = (PLUGIN_TYPE, self._driver_name, self._dra_socket)
            if (info.type, info.name, info.endpoint) != expected:
                return (
                    f"registration socket {self._registration_socket} answers GetInfo with "
                    f"type {info.type!r}, name {info.name!r}, endpoint {info.endpoint!r}; "
                    f"expected {expected[0]!r}, {expected[1]!r}, {expected[2]!r}"
                )
        except grpc.RpcError as error:
            return f"GetInfo on {self._registration_socket} failed: {_describe(error)}"
        try:
            with grpc.insecure_channel(f"unix://{self._dra_socket}") as channel:
                dra_v1_grpc.DRAPluginStub(channel).NodePrepareResources(
                    dra_v1.NodePrepareResourcesRequest(), timeout=remaining()
                )
        except grpc.RpcError as error:
            return f"NodePrepareResources on {self._dra_socket} failed: {_describe(error)}"
        return None

    def Check(  # noqa: N802 - the gRPC method name
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details(
                f"unknown service {request.service!r}; ask for '' (the plugin as a whole)"
            )
            return health_pb2.HealthCheckResponse()
        budget = self._timeout
        caller_remaining: float | None = context.time_remaining()
        if caller_remaining is not None:
            budget = min(budget, caller_remaining)
        problem = self.probe(budget)
        self._log_transition(problem)
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if problem is None
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)

    def _log_transition(self, problem: str | None) -> None:
        # Probes come every few seconds: log changes, not every answer.
        with self._lock:
            previous, self._last_problem = self._last_problem, problem
        if problem is not None and previous is None:
            _log.error("liveness: NOT_SERVING: %s", problem)
        elif problem is None and previous is not None:
            _log.info("liveness: SERVING again")


def _describe(error: grpc.RpcError) -> str:
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if callable(code) and callable(details):
        return f"{code()}: {details()}"
    return str(error)
