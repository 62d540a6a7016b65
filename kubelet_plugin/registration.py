"""Plugin registration with the kubelet: the ``pluginregistration.Registration`` service.

The kubelet's plugin watcher notices ``<registry dir>/<driver>-reg.sock``,
calls ``GetInfo``, checks the answer (type ``DRAPlugin``, a service it
supports among ``supported_versions``, taking the first one it knows; the
health service, optional, by its own preference: ``v1`` then ``v1alpha1``) and
reports its verdict with ``NotifyRegistrationStatus``. It repeats the
exchange whenever it restarts, so the verdict can change over the plugin's
life; :class:`RegistrationServicer` keeps the latest one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from kubelet_plugin.proto_gen.pluginregistration.v1 import api_pb2 as registration_pb2
from kubelet_plugin.proto_gen.pluginregistration.v1 import api_pb2_grpc as registration_grpc

_log = logging.getLogger(__name__)

PLUGIN_TYPE = "DRAPlugin"
"""``PluginInfo.type`` of a DRA driver."""

DRA_V1 = "v1.DRAPlugin"
DRA_V1BETA1 = "v1beta1.DRAPlugin"
RESOURCE_HEALTH_V1 = "v1.DRAResourceHealth"
RESOURCE_HEALTH_V1ALPHA1 = "v1alpha1.DRAResourceHealth"
"""``supported_versions`` entries: ``<last proto package segment>.<service>``."""
RESOURCE_HEALTH_VERSIONS = (RESOURCE_HEALTH_V1, RESOURCE_HEALTH_V1ALPHA1)
"""The health services advertised, newest first. A 1.37 kubelet takes, in its own order
(v1, then v1alpha1), the first one the list contains and opens the stream on it alone;
an older kubelet knows only v1alpha1. The DRA service is picked separately, the first
entry of the list the kubelet supports, so the health entries follow the DRA ones."""


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    """The kubelet's latest verdict on this plugin's registration."""

    registered: bool
    error: str
    """The kubelet's reason when ``registered`` is false; empty otherwise."""


class RegistrationServicer(registration_grpc.RegistrationServicer):
    """Answers the kubelet's ``GetInfo`` and records ``NotifyRegistrationStatus``.

    Thread-safe: gRPC calls and readers of :attr:`status` may run concurrently.
    """

    def __init__(self, driver_name: str, endpoint: str, supported_versions: Sequence[str]) -> None:
        """``endpoint`` is the absolute path of the DRA socket; ``supported_versions``
        the services served there, preferred first (the kubelet picks the first
        one it supports)."""
        self._info = registration_pb2.PluginInfo(
            type=PLUGIN_TYPE,
            name=driver_name,
            endpoint=endpoint,
            supported_versions=list(supported_versions),
        )
        self._changed = threading.Condition()
        self._status: RegistrationStatus | None = None

    @property
    def status(self) -> RegistrationStatus | None:
        """The latest notification from the kubelet; None before the first."""
        with self._changed:
            return self._status

    def wait_registered(self, timeout: float | None = None) -> bool:
        """Block until the kubelet reports a successful registration or ``timeout``
        seconds pass; returns whether the plugin is registered."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._status is not None and self._status.registered, timeout
            )

    def GetInfo(  # noqa: N802 - the gRPC method name
        self, request: registration_pb2.InfoRequest, context: grpc.ServicerContext
    ) -> registration_pb2.PluginInfo:
        result = registration_pb2.PluginInfo()
        result.CopyFrom(self._info)
        return result

    def NotifyRegistrationStatus(  # noqa: N802 - the gRPC method name
        self, request: registration_pb2.RegistrationStatus, context: grpc.ServicerContext
    ) -> registration_pb2.RegistrationStatusResponse:
        status = RegistrationStatus(registered=request.plugin_registered, error=request.error)
        with self._changed:
            self._status = status
            self._changed.notify_all()
        if status.registered:
            _log.info(
                "kubelet registered DRA driver %s (endpoint %s)",
                self._info.name,
                self._info.endpoint,
            )
            return registration_pb2.RegistrationStatusResponse()
        _log.error(
            "kubelet rejected the registration of DRA driver %s: %s",
            self._info.name,
            status.error or "(no reason given)",
        )
        # As the reference Go helper does: a failed registration is answered
        # with an error, so that it shows in the kubelet's log as well.
        context.set_code(grpc.StatusCode.UNKNOWN)
        context.set_details(f"registration of DRA driver {self._info.name} failed: {status.error}")
        return registration_pb2.RegistrationStatusResponse()
