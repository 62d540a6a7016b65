"""A kubelet stand-in: the kubelet's side of plugin registration and the DRA gRPC calls.

Built from the same protos as the plugin and following the kubelet's
behaviour (spec/kubelet-plugin.md): the plugin watcher's ``GetInfo``,
validation, choice of the first supported service in the plugin's order, of
the health service in the kubelet's own order (1.37: v1, then v1alpha1) and
``NotifyRegistrationStatus``; the DRA manager's prepare/unprepare calls with
the kubelet's 45 s deadline and its checks of the response map (an entry per
requested claim UID, no other UIDs); the health manager's
``NodeWatchResources`` stream; and a liveness probe.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from kubelet_plugin.node_driver import ClaimRef
from kubelet_plugin.proto_gen.dra.v1 import api_pb2 as dra_v1
from kubelet_plugin.proto_gen.dra.v1 import api_pb2_grpc as dra_v1_grpc
from kubelet_plugin.proto_gen.dra.v1beta1 import api_pb2 as dra_v1beta1
from kubelet_plugin.proto_gen.dra.v1beta1 import api_pb2_grpc as dra_v1beta1_grpc
from kubelet_plugin.proto_gen.dra_health.v1 import api_pb2 as health_pb2
from kubelet_plugin.proto_gen.dra_health.v1 import api_pb2_grpc as health_grpc
from kubelet_plugin.proto_gen.dra_health.v1alpha1 import api_pb2 as health_v1alpha1_pb2
from kubelet_plugin.proto_gen.dra_health.v1alpha1 import api_pb2_grpc as health_v1alpha1_grpc
from kubelet_plugin.proto_gen.grpc_health.v1 import health_pb2 as liveness_pb2
from kubelet_plugin.proto_gen.grpc_health.v1 import health_pb2_grpc as liveness_grpc
from kubelet_plugin.proto_gen.pluginregistration.v1 import api_pb2 as registration_pb2
from kubelet_plugin.proto_gen.pluginregistration.v1 import api_pb2_grpc as registration_grpc

KUBELET_1_36_SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
KUBELET_1_33_SERVICES = ("v1beta1.DRAPlugin",)
HEALTH_SERVICE = "v1alpha1.DRAResourceHealth"
HEALTH_SERVICE_V1 = "v1.DRAResourceHealth"
#: The kubelet's own preference (``healthServicesSupportedByKubelet``), newest first.
KUBELET_1_37_HEALTH_SERVICES = (HEALTH_SERVICE_V1, HEALTH_SERVICE)
KUBELET_1_36_HEALTH_SERVICES = (HEALTH_SERVICE,)

DIAL_TIMEOUT = 10.0
NOTIFY_TIMEOUT = 5.0
CALL_TIMEOUT = 45.0


class KubeletError(Exception):
    """What the kubelet would log or put in a pod event."""


class RegistrationRejectedError(KubeletError):
    """The stand-in refused the plugin (and told it so)."""


@dataclass(frozen=True)
class WireDevice:
    """A ``Device`` of a prepare response, whatever the API version."""

    request_names: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...]
    share_id: str | None


@dataclass(frozen=True)
class ClaimOutcome:
    """One entry of a prepare response."""

    devices: tuple[WireDevice, ...]
    error: str


class KubeletStandin:
    """Registers plugins the way a kubelet supporting ``services`` does."""

    def __init__(
        self,
        services: Sequence[str] = KUBELET_1_36_SERVICES,
        health_services: Sequence[str] = KUBELET_1_37_HEALTH_SERVICES,
    ) -> None:
        self.services = tuple(services)
        self.health_services = tuple(health_services)

    def register(self, registration_socket: Path) -> RegisteredPlugin:
        """GetInfo, validate, pick a service, notify; raises RegistrationRejectedError
        after notifying the plugin of a failure."""
        with grpc.insecure_channel(f"unix://{registration_socket}") as channel:
            grpc.channel_ready_future(channel).result(timeout=DIAL_TIMEOUT)
            stub = registration_grpc.RegistrationStub(channel)
            info = stub.GetInfo(registration_pb2.InfoRequest(), timeout=DIAL_TIMEOUT)
            try:
                service = self._validate(info)
            except RegistrationRejectedError as rejection:
                self._notify(stub, registered=False, error=str(rejection))
                raise
            self._notify(stub, registered=True, error="")
        offered = tuple(info.supported_versions)
        # pickHealthService: the kubelet's order, not the plugin's; "" = no health stream.
        health = next((h for h in self.health_services if h in offered), "")
        return RegisteredPlugin(info.name, info.endpoint, service, offered, health)

    def _validate(self, info: registration_pb2.PluginInfo) -> str:
        if info.type != "DRAPlugin":
            raise RegistrationRejectedError(f"unsupported plugin type {info.type!r}")
        if not info.name:
            raise RegistrationRejectedError("plugin name is empty")
        if not Path(info.endpoint).is_absolute():
            raise RegistrationRejectedError(f"endpoint {info.endpoint!r} is not an absolute path")
        if not info.supported_versions:
            raise RegistrationRejectedError("the plugin reports no supported services")
        for offered in info.supported_versions:
            if offered in self.services:
                return str(offered)
        raise RegistrationRejectedError(
            f"none of services supported by the plugin ({list(info.supported_versions)}) "
            f"are supported by the kubelet ({list(self.services)})"
        )

    @staticmethod
    def _notify(stub: registration_grpc.RegistrationStub, *, registered: bool, error: str) -> None:
        status = registration_pb2.RegistrationStatus(plugin_registered=registered, error=error)
        try:
            stub.NotifyRegistrationStatus(status, timeout=NOTIFY_TIMEOUT)
        except grpc.RpcError:
            # The kubelet only logs a failed notification (the plugin answers a
            # rejection with an error).
            if registered:
                raise


class RegisteredPlugin:
    """The kubelet's client of one registered plugin."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        service: str,
        supported_versions: tuple[str, ...],
        health_service: str = "",
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.service = service
        self.health_service = health_service
        self.supported_versions = supported_versions
        self._channel = grpc.insecure_channel(f"unix://{endpoint}")
        # v1 and v1beta1 share message and method names: one code path for both.
        self._messages: Any
        self._stub: Any
        if service == "v1.DRAPlugin":
            self._messages, self._stub = dra_v1, dra_v1_grpc.DRAPluginStub(self._channel)
        elif service == "v1beta1.DRAPlugin":
            self._messages, self._stub = dra_v1beta1, dra_v1beta1_grpc.DRAPluginStub(self._channel)
        else:
            raise KubeletError(f"the stand-in cannot call {service}")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RegisteredPlugin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wire_claims(self, claims: Sequence[ClaimRef]) -> list[Any]:
        return [self._messages.Claim(namespace=c.namespace, uid=c.uid, name=c.name) for c in claims]

    @staticmethod
    def _check_uids(call: str, claims: Sequence[ClaimRef], answered: Sequence[str]) -> None:
        requested = {c.uid for c in claims}
        foreign = sorted(set(answered) - requested)
        if foreign:
            raise KubeletError(f"{call}: response contains unrequested claims {foreign}")
        missing = requested - set(answered)
        if missing:
            raise KubeletError(f"{call} skipped {len(missing)} ResourceClaims")

    def prepare(
        self, claims: Sequence[ClaimRef], timeout: float = CALL_TIMEOUT
    ) -> dict[str, ClaimOutcome]:
        """NodePrepareResources; the per-claim outcomes by UID."""
        request = self._messages.NodePrepareResourcesRequest(claims=self._wire_claims(claims))
        response = self._stub.NodePrepareResources(request, timeout=timeout)
        self._check_uids("NodePrepareResources", claims, list(response.claims))
        return {
            uid: ClaimOutcome(
                devices=tuple(
                    WireDevice(
                        request_names=tuple(d.request_names),
                        pool_name=d.pool_name,
                        device_name=d.device_name,
                        cdi_device_ids=tuple(d.cdi_device_ids),
                        share_id=(
                            d.share_id
                            if "share_id" in d.DESCRIPTOR.fields_by_name and d.HasField("share_id")
                            else None
                        ),
                    )
                    for d in entry.devices
                ),
                error=entry.error,
            )
            for uid, entry in response.claims.items()
        }

    def unprepare(
        self, claims: Sequence[ClaimRef], timeout: float = CALL_TIMEOUT
    ) -> dict[str, str]:
        """NodeUnprepareResources; the per-claim error ('' for success) by UID."""
        request = self._messages.NodeUnprepareResourcesRequest(claims=self._wire_claims(claims))
        response = self._stub.NodeUnprepareResources(request, timeout=timeout)
        self._check_uids("NodeUnprepareResources", claims, list(response.claims))
        return {uid: entry.error for uid, entry in response.claims.items()}

    def watch_health(self, service: str | None = None) -> HealthStream:
        """Open NodeWatchResources as the kubelet's health manager does: on the health
        service chosen at registration (``service`` overrides; v1 when none was chosen).

        Responses read as v1 messages, as the kubelet converts v1alpha1 ones."""
        chosen = service or self.health_service or HEALTH_SERVICE_V1
        if chosen == HEALTH_SERVICE_V1:
            stub = health_grpc.DRAResourceHealthStub(self._channel)
            return HealthStream(stub.NodeWatchResources(health_pb2.NodeWatchResourcesRequest()))
        if chosen == HEALTH_SERVICE:
            old = health_v1alpha1_grpc.DRAResourceHealthStub(self._channel)
            call = old.NodeWatchResources(health_v1alpha1_pb2.NodeWatchResourcesRequest())
            return HealthStream(call, convert=True)
        raise KubeletError(f"the stand-in cannot watch {chosen}")


class HealthStream:
    """An open NodeWatchResources call: iterate for responses, cancel() to end it."""

    def __init__(self, call: Any, *, convert: bool = False) -> None:
        self._call = call
        self._convert = convert

    def _v1(self, response: Any) -> health_pb2.NodeWatchResourcesResponse:
        if not self._convert:
            return response  # type: ignore[no-any-return]
        # The kubelet's V1Alpha1ClientWrapper copies field by field; the wire form is the same.
        return health_pb2.NodeWatchResourcesResponse.FromString(response.SerializeToString())

    def __iter__(self) -> Iterator[health_pb2.NodeWatchResourcesResponse]:
        return (self._v1(response) for response in self._call)

    def next(self) -> health_pb2.NodeWatchResourcesResponse:
        return self._v1(next(self._call))

    def cancel(self) -> None:
        self._call.cancel()

    def code(self) -> grpc.StatusCode:
        return self._call.code()


def probe_liveness(address: str, service: str = "", timeout: float = 5.0) -> str:
    """A kubelet ``grpc:`` liveness probe; returns the status name (SERVING, ...)."""
    with grpc.insecure_channel(address) as channel:
        response = liveness_grpc.HealthStub(channel).Check(
            liveness_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return str(liveness_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
