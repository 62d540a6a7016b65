"""The kubelet plugin's gRPC servers: DRA services, registration and liveness.

:class:`PluginServer` serves

- the DRA services on ``<plugins dir>/<driver>/dra.sock``: DRAPlugin v1 and
  v1beta1 and, when a :class:`~kubelet_plugin.health.service.HealthSource`
  is given, ``v1.DRAResourceHealth`` and ``v1alpha1.DRAResourceHealth``;
- ``pluginregistration.Registration`` on ``<registry dir>/<driver>-reg.sock``,
  advertising ``v1.DRAPlugin``, then ``v1beta1.DRAPlugin`` (the kubelet takes
  the first one it supports), then ``v1.DRAResourceHealth`` and
  ``v1alpha1.DRAResourceHealth`` when served (a 1.37 kubelet picks v1);
- optionally ``grpc.health.v1.Health`` for the liveness probe, on a TCP
  address or a unix socket.

Start order matters: the kubelet dials the DRA socket right after
``GetInfo``, so the DRA server listens before the registration socket
appears. Stop runs the other way round: the registration socket goes first
(the kubelet deregisters the plugin), then the DRA server after in-flight
calls finish (bounded by a grace period) and the driver calls still running
return. Stale socket files from an earlier run are removed before binding;
every socket file is removed on stop.

Modes do not follow the umask: each unix socket is chmodded to 0600 right after
it is bound and before it serves (the kubelet dials as root), and directories
created for the sockets are 0700 (:mod:`kubelet_plugin.plugin_dirs`).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import grpc

from agent_kit.flags import check_driver_name
from api.errors import FieldError, InvalidInputError
from kubelet_plugin.dra_service import ClaimDispatcher, DraV1beta1Servicer, DraV1Servicer
from kubelet_plugin.health.service import HealthSource, ResourceHealthServicer
from kubelet_plugin.liveness import DEFAULT_CHECK_TIMEOUT, LivenessServicer
from kubelet_plugin.node_driver import NodeDriver
from kubelet_plugin.plugin_dirs import SOCKET_DIR_MODE, SOCKET_MODE, ensure_directory
from kubelet_plugin.proto_gen.dra.v1 import api_pb2_grpc as dra_v1_grpc
from kubelet_plugin.proto_gen.dra.v1beta1 import api_pb2_grpc as dra_v1beta1_grpc
from kubelet_plugin.proto_gen.grpc_health.v1 import health_pb2_grpc
from kubelet_plugin.proto_gen.pluginregistration.v1 import api_pb2_grpc as registration_grpc
from kubelet_plugin.registration import (
    DRA_V1,
    DRA_V1BETA1,
    RESOURCE_HEALTH_VERSIONS,
    RegistrationServicer,
    RegistrationStatus,
)
from kubelet_plugin.socket_paths import dra_socket_path, registration_socket_path

_log = logging.getLogger(__name__)

DEFAULT_REGISTRY_DIR = Path("/var/lib/kubelet/plugins_registry")
DEFAULT_PLUGINS_DIR = Path("/var/lib/kubelet/plugins")

MAX_UNIX_SOCKET_PATH = 107
"""Bytes in a unix socket path (``sun_path`` is 108 bytes with the terminating NUL)."""

UNIX_PREFIX = "unix://"


def _check_socket_path(path: Path, field: str) -> FieldError | None:
    size = len(os.fsencode(path))
    if size <= MAX_UNIX_SOCKET_PATH:
        return None
    return FieldError(
        field,
        f"socket path {str(path)!r} is {size} bytes, over the unix limit of "
        f"{MAX_UNIX_SOCKET_PATH}; use a shorter directory",
    )


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by an earlier run; refuse to touch anything else."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(
            f"{path} exists and is not a unix socket; remove it or choose another directory"
        )
    _log.info("removing stale socket %s", path)
    path.unlink(missing_ok=True)


class GrpcSocketServer:
    """One gRPC server listening on one address (``unix:///abs/path`` or ``host:port``).

    Not restartable: after :meth:`stop`, build a new one. Thread-safe.
    """

    def __init__(
        self,
        name: str,
        address: str,
        add_services: Callable[[grpc.Server], None],
        *,
        max_workers: int,
    ) -> None:
        self.name = name
        self.address = address
        self._add_services = add_services
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._stopped = False
        self._port = 0

    @property
    def socket_path(self) -> Path | None:
        """The unix socket file, or None for a TCP address."""
        if self.address.startswith(UNIX_PREFIX):
            return Path(self.address.removeprefix(UNIX_PREFIX))
        return None

    @property
    def port(self) -> int:
        """The bound TCP port once started (useful with port 0); 0 for unix sockets."""
        return self._port

    @property
    def serving(self) -> bool:
        with self._lock:
            return self._server is not None

    def start(self) -> None:
        """Listen and serve; raises OSError when the address cannot be bound."""
        with self._lock:
            if self._server is not None or self._stopped:
                raise RuntimeError(f"{self.name} server on {self.address} was already started")
            path = self.socket_path
            if path is not None:
                _remove_stale_socket(path)
            server = grpc.server(
                ThreadPoolExecutor(self._max_workers, thread_name_prefix=f"grpc-{self.name}")
            )
            self._add_services(server)
            try:
                port: int = server.add_insecure_port(self.address)
            except RuntimeError as error:  # grpcio raises instead of returning 0 nowadays
                raise OSError(
                    f"{self.name} server cannot listen on {self.address}: {error}"
                ) from None
            if port == 0:
                raise OSError(f"{self.name} server cannot listen on {self.address}")
            if path is not None:
                # Bound with the umask's mode; set ours before a single call is served.
                # A directory made by PluginServer.start (0700) keeps others out meanwhile.
                try:
                    os.chmod(path, SOCKET_MODE)
                except OSError:
                    server.stop(None)
                    raise
            server.start()
            self._server, self._port = server, 0 if path is not None else port
        _log.info("%s server listening on %s", self.name, self.bound_address)

    @property
    def bound_address(self) -> str:
        """The address clients dial: the unix address, or ``host:port`` with the real port."""
        if self.socket_path is not None or not self._port:
            return self.address
        host = self.address.rpartition(":")[0]
        return f"{host}:{self._port}"

    def stop(self, grace: float | None = None) -> None:
        """Stop listening, give in-flight calls ``grace`` seconds, remove the socket
        file. Idempotent."""
        with self._lock:
            server, self._server, self._stopped = self._server, None, True
        if server is not None:
            server.stop(grace).wait()
            _log.info("%s server on %s stopped", self.name, self.address)
        path = self.socket_path
        if path is not None and path.is_socket():
            # grpcio unlinks the socket itself; this covers a server that never
            # started cleanly.
            path.unlink(missing_ok=True)


class PluginServer:
    """The kubelet-facing side of the node agent (see the module docstring).

    Usage: ``start()``, then ``wait()`` until ``stop()`` is called from another
    thread (a SIGTERM handler, a test), or use it as a context manager.
    """

    def __init__(
        self,
        driver_name: str,
        driver: NodeDriver,
        *,
        registry_dir: Path | str = DEFAULT_REGISTRY_DIR,
        plugins_dir: Path | str = DEFAULT_PLUGINS_DIR,
        health_source: HealthSource | None = None,
        liveness_address: str | None = None,
        liveness_timeout: float = DEFAULT_CHECK_TIMEOUT,
        pod_uid: str | None = None,
        max_driver_calls: int = 8,
        max_rpc_workers: int = 16,
        stop_grace: float = 5.0,
    ) -> None:
        """Validate the configuration; nothing is created or bound before :meth:`start`.

        ``liveness_address``: ``host:port`` (port 0 picks a free one, see
        :attr:`liveness_address`) or ``unix:///absolute/path``; None serves no
        liveness service. ``pod_uid`` names the sockets of one of two plugin
        instances on a node during a rolling update.
        ``max_driver_calls`` bounds concurrent NodeDriver calls,
        ``max_rpc_workers`` concurrent RPCs on the DRA socket (each open health
        stream holds one). Raises InvalidInputError naming the field.
        """
        registry = Path(registry_dir).absolute()
        plugins = Path(plugins_dir).absolute()
        obj = "kubelet plugin"
        errors: list[FieldError] = []
        try:
            check_driver_name(driver_name)
        except ValueError as err:
            errors.append(FieldError("driverName", str(err)))
        self.registration_socket = registration_socket_path(registry, driver_name, pod_uid)
        self.dra_socket = dra_socket_path(plugins, driver_name, pod_uid)
        for path, field in (
            (self.registration_socket, "registryDir"),
            (self.dra_socket, "pluginsDir"),
        ):
            problem = _check_socket_path(path, field)
            if problem:
                errors.append(problem)
        if liveness_address is not None and liveness_address.startswith(UNIX_PREFIX):
            liveness_path = Path(liveness_address.removeprefix(UNIX_PREFIX))
            if not liveness_path.is_absolute():
                errors.append(
                    FieldError("livenessAddress", f"{liveness_address!r}: use an absolute path")
                )
            elif problem := _check_socket_path(liveness_path, "livenessAddress"):
                errors.append(problem)
        for value, field, minimum in (
            (max_driver_calls, "maxDriverCalls", 1),
            (max_rpc_workers, "maxRpcWorkers", 2),
        ):
            if value < minimum:
                errors.append(FieldError(field, f"must be at least {minimum}, got {value}"))
        if errors:
            raise InvalidInputError(obj=obj, errors=errors)

        self.driver_name = driver_name
        self.supported_versions: tuple[str, ...] = (DRA_V1, DRA_V1BETA1) + (
            RESOURCE_HEALTH_VERSIONS if health_source is not None else ()
        )
        self._stop_grace = stop_grace
        self._dispatcher = ClaimDispatcher(driver, max_workers=max_driver_calls)
        self._registration = RegistrationServicer(
            driver_name, str(self.dra_socket), self.supported_versions
        )
        self._health = ResourceHealthServicer(health_source) if health_source is not None else None
        self.dra_server = GrpcSocketServer(
            "dra",
            UNIX_PREFIX + str(self.dra_socket),
            self._add_dra_services,
            max_workers=max_rpc_workers,
        )
        self.registration_server = GrpcSocketServer(
            "registration",
            UNIX_PREFIX + str(self.registration_socket),
            lambda server: registration_grpc.add_RegistrationServicer_to_server(
                self._registration, server
            ),
            max_workers=2,
        )
        self.liveness_server: GrpcSocketServer | None = None
        if liveness_address is not None:
            liveness = LivenessServicer(
                driver_name,
                str(self.registration_socket),
                str(self.dra_socket),
                timeout=liveness_timeout,
            )
            self.liveness_server = GrpcSocketServer(
                "liveness",
                liveness_address,
                lambda server: health_pb2_grpc.add_HealthServicer_to_server(liveness, server),
                max_workers=2,
            )
        self._lifecycle = threading.Lock()
        self._started = False
        self._stopped = threading.Event()

    def _add_dra_services(self, server: grpc.Server) -> None:
        dra_v1_grpc.add_DRAPluginServicer_to_server(DraV1Servicer(self._dispatcher), server)
        dra_v1beta1_grpc.add_DRAPluginServicer_to_server(
            DraV1beta1Servicer(self._dispatcher), server
        )
        if self._health is not None:
            self._health.add_to_server(server)

    @property
    def registration_status(self) -> RegistrationStatus | None:
        """The kubelet's latest registration verdict; None before the first."""
        return self._registration.status

    @property
    def registered(self) -> bool:
        """Whether the kubelet's latest verdict is a successful registration."""
        status = self._registration.status
        return status is not None and status.registered

    def wait_registered(self, timeout: float | None = None) -> bool:
        """Block until the kubelet registered the plugin or ``timeout`` seconds pass."""
        return self._registration.wait_registered(timeout)

    @property
    def liveness_address(self) -> str | None:
        """Where the liveness service listens (the real port when 0 was asked for)."""
        return None if self.liveness_server is None else self.liveness_server.bound_address

    def start(self) -> None:
        """Create the socket directories (0700 when made here), then serve DRA,
        registration and liveness, each socket 0600.

        On failure whatever was started is stopped again before the error
        propagates. Not restartable.
        """
        with self._lifecycle:
            if self._started:
                raise RuntimeError(f"kubelet plugin {self.driver_name} was already started")
            self._started = True
        try:
            for server in (self.dra_server, self.registration_server, self.liveness_server):
                path = server.socket_path if server is not None else None
                if path is not None:
                    ensure_directory(path.parent, SOCKET_DIR_MODE)
            self.dra_server.start()
            self.registration_server.start()
            if self.liveness_server is not None:
                self.liveness_server.start()
        except BaseException:
            self.stop()
            raise
        _log.info(
            "kubelet plugin %s serving %s; registration socket %s",
            self.driver_name,
            ", ".join(self.supported_versions),
            self.registration_socket,
        )

    def stop(self) -> None:
        """Deregister, stop serving, wait for driver calls in progress, remove the
        sockets. Idempotent; may be called from any thread."""
        with self._lifecycle:
            if self._stopped.is_set():
                return
            self.registration_server.stop(grace=0)
            if self.liveness_server is not None:
                self.liveness_server.stop(grace=0)
            if self._health is not None:
                self._health.close_streams()
            self.dra_server.stop(grace=self._stop_grace)
            self._dispatcher.shutdown()
            self._stopped.set()
        _log.info("kubelet plugin %s stopped", self.driver_name)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` completed or ``timeout`` seconds pass; returns
        whether the plugin stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> PluginServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
