"""A minimal CRI client: the few ``runtime.v1`` messages and calls that run one container.

The kubelet talks to the container runtime through the CRI (``k8s.io/cri-api``,
``pkg/apis/runtime/v1/api.proto``); this is how the kubelet hands a container
its CDI devices (``ContainerConfig.CDI_devices``, field 17). There is no crictl
on Debian 12 and the tests need only a handful of calls, so the messages are
declared here, by hand, as protobuf descriptors: names and field numbers as in
upstream's api.proto (checked against the descriptor containerd 1.7.24 embeds).
Only the fields the tests set or read are declared; protobuf keeps the others
of a response as unknown fields, so the server's newer messages decode fine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import grpc

# protobuf ships no type information and the project does not install its stubs.
from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import Message  # type: ignore[import-untyped]

__all__ = ["CONTAINER_EXITED", "NAMESPACE_NODE", "CriClient"]

_PACKAGE: Final = "runtime.v1"

# (name, number, type, repeated): type is a scalar name or a message/enum of this file.
_Field: TypeAlias = tuple[str, int, str, bool]

_ENUMS: Final[Mapping[str, Sequence[str]]] = {
    "NamespaceMode": ("POD", "CONTAINER", "NODE", "TARGET"),
    "ContainerState": (
        "CONTAINER_CREATED",
        "CONTAINER_RUNNING",
        "CONTAINER_EXITED",
        "CONTAINER_UNKNOWN",
    ),
}

#: ``NamespaceMode.NODE``: the pod shares the host's namespace (hostNetwork).
NAMESPACE_NODE: Final = 2
#: ``ContainerState.CONTAINER_EXITED``.
CONTAINER_EXITED: Final = 2


def _one(name: str) -> Sequence[_Field]:
    return ((name, 1, "string", False),)


_MESSAGES: Final[Mapping[str, Sequence[_Field]]] = {
    "VersionRequest": _one("version"),
    "VersionResponse": (
        ("version", 1, "string", False),
        ("runtime_name", 2, "string", False),
        ("runtime_version", 3, "string", False),
        ("runtime_api_version", 4, "string", False),
    ),
    "PodSandboxMetadata": (
        ("name", 1, "string", False),
        ("uid", 2, "string", False),
        ("namespace", 3, "string", False),
        ("attempt", 4, "uint32", False),
    ),
    "NamespaceOption": (
        ("network", 1, "NamespaceMode", False),
        ("pid", 2, "NamespaceMode", False),
        ("ipc", 3, "NamespaceMode", False),
    ),
    "LinuxSandboxSecurityContext": (("namespace_options", 1, "NamespaceOption", False),),
    "LinuxPodSandboxConfig": (
        ("cgroup_parent", 1, "string", False),
        ("security_context", 2, "LinuxSandboxSecurityContext", False),
    ),
    "PodSandboxConfig": (
        ("metadata", 1, "PodSandboxMetadata", False),
        ("hostname", 2, "string", False),
        ("log_directory", 3, "string", False),
        ("linux", 8, "LinuxPodSandboxConfig", False),
    ),
    "RunPodSandboxRequest": (
        ("config", 1, "PodSandboxConfig", False),
        ("runtime_handler", 2, "string", False),
    ),
    "RunPodSandboxResponse": _one("pod_sandbox_id"),
    "StopPodSandboxRequest": _one("pod_sandbox_id"),
    "StopPodSandboxResponse": (),
    "RemovePodSandboxRequest": _one("pod_sandbox_id"),
    "RemovePodSandboxResponse": (),
    "ImageSpec": _one("image"),
    "ContainerMetadata": (("name", 1, "string", False), ("attempt", 2, "uint32", False)),
    "CDIDevice": _one("name"),
    "ContainerConfig": (
        ("metadata", 1, "ContainerMetadata", False),
        ("image", 2, "ImageSpec", False),
        ("command", 3, "string", True),
        ("args", 4, "string", True),
        ("log_path", 11, "string", False),
        ("CDI_devices", 17, "CDIDevice", True),
    ),
    "CreateContainerRequest": (
        ("pod_sandbox_id", 1, "string", False),
        ("config", 2, "ContainerConfig", False),
        ("sandbox_config", 3, "PodSandboxConfig", False),
    ),
    "CreateContainerResponse": _one("container_id"),
    "StartContainerRequest": _one("container_id"),
    "StartContainerResponse": (),
    "StopContainerRequest": (("container_id", 1, "string", False), ("timeout", 2, "int64", False)),
    "StopContainerResponse": (),
    "RemoveContainerRequest": _one("container_id"),
    "RemoveContainerResponse": (),
    "ContainerStatusRequest": (("container_id", 1, "string", False), ("verbose", 2, "bool", False)),
    "ContainerStatus": (
        ("id", 1, "string", False),
        ("state", 3, "ContainerState", False),
        ("exit_code", 7, "int32", False),
        ("reason", 10, "string", False),
        ("message", 11, "string", False),
    ),
    "ContainerStatusResponse": (("status", 1, "ContainerStatus", False),),
}

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS: Final = {
    "string": _FDP.TYPE_STRING,
    "bool": _FDP.TYPE_BOOL,
    "int32": _FDP.TYPE_INT32,
    "int64": _FDP.TYPE_INT64,
    "uint32": _FDP.TYPE_UINT32,
}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="dra_driver_tests/cri_subset.proto", package=_PACKAGE, syntax="proto3"
    )
    for enum_name, values in _ENUMS.items():
        enum = proto.enum_type.add(name=enum_name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    for message_name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=message_name)
        for field_name, number, type_name, repeated in fields:
            field = message.field.add(
                name=field_name,
                number=number,
                label=_FDP.LABEL_REPEATED if repeated else _FDP.LABEL_OPTIONAL,
            )
            if type_name in _SCALARS:
                field.type = _SCALARS[type_name]
            else:
                field.type = _FDP.TYPE_ENUM if type_name in _ENUMS else _FDP.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{type_name}"
    return proto


_POOL: Final = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def message_class(name: str) -> type[Message]:
    """The generated class of ``runtime.v1.<name>``."""
    cls: type[Message] = message_factory.GetMessageClass(
        _POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}")
    )
    return cls


def new(name: str, **fields: Any) -> Message:
    """A ``runtime.v1.<name>`` message; nested messages may be given as dicts."""
    return message_class(name)(**fields)


class CriClient:
    """Unary calls of ``runtime.v1.RuntimeService`` on a unix socket.

    Each method takes and returns protobuf messages of this module's classes;
    gRPC errors propagate as :class:`grpc.RpcError` (the runtime's message in
    ``details()``). ``timeout_s`` bounds every call.
    """

    def __init__(self, socket_path: str, *, timeout_s: float = 60.0) -> None:
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._timeout_s = timeout_s

    def close(self) -> None:
        self._channel.close()

    def call(self, method: str, request: Message) -> Any:
        """Call ``RuntimeService/<method>`` with ``request``; the response message."""
        response_class = message_class(f"{method}Response")
        stub = self._channel.unary_unary(
            f"/{_PACKAGE}.RuntimeService/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        return stub(request, timeout=self._timeout_s)

    def version(self) -> Any:
        return self.call("Version", new("VersionRequest", version="v1"))
