"""The committed gRPC stubs (kubelet_plugin/proto_gen) match kubelet_plugin/proto and the
kubelet's wire contract."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.descriptor import FieldDescriptor

from kubelet_plugin.proto_gen.dra.v1 import api_pb2 as dra_v1
from kubelet_plugin.proto_gen.dra.v1beta1 import api_pb2 as dra_v1beta1
from kubelet_plugin.proto_gen.dra_health.v1 import api_pb2 as health_v1
from kubelet_plugin.proto_gen.dra_health.v1alpha1 import api_pb2 as health_v1alpha1
from kubelet_plugin.proto_gen.grpc_health.v1 import health_pb2
from kubelet_plugin.proto_gen.pluginregistration.v1 import api_pb2 as registration
from kubelet_plugin.proto_gen.podresources.v1 import api_pb2 as podresources

REPO = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_protos", REPO / "scripts" / "generate_protos.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return _load_generator()


@pytest.fixture(scope="module")
def fresh_stubs(generator: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    package: Path = generator.generate(tmp_path_factory.mktemp("proto_gen"))
    return package


def test_committed_stubs_are_what_the_script_generates(
    generator: ModuleType, fresh_stubs: Path
) -> None:
    stale = generator.stale_files(fresh_stubs, REPO / "kubelet_plugin" / "proto_gen")
    if stale:
        import grpc_tools.grpc_version

        committed = (REPO / "kubelet_plugin/proto_gen/dra/v1/api_pb2_grpc.py").read_text()
        match = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", committed)
        pytest.fail(
            f"kubelet_plugin/proto_gen is stale in {stale}; "
            "run .venv/bin/python scripts/generate_protos.py "
            f"(committed stubs come from grpcio-tools {match[1] if match else '?'}, "
            f"installed is {grpc_tools.grpc_version.VERSION})"
        )


def test_stale_check_reports_a_changed_and_a_missing_file(
    generator: ModuleType, fresh_stubs: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "proto_gen"
    shutil.copytree(fresh_stubs, copy)
    (copy / "dra/v1/api_pb2.py").write_text("# edited by hand\n")
    (copy / "dra/v1beta1/api_pb2_grpc.pyi").unlink()

    assert generator.stale_files(fresh_stubs, copy) == [
        "dra/v1/api_pb2.py",
        "dra/v1beta1/api_pb2_grpc.pyi",
    ]


def test_every_proto_is_compiled(generator: ModuleType) -> None:
    assert generator.proto_files() == [
        "dra/v1/api.proto",
        "dra/v1beta1/api.proto",
        "dra_health/v1/api.proto",
        "dra_health/v1alpha1/api.proto",
        "grpc_health/v1/health.proto",
        "pluginregistration/v1/api.proto",
        "podresources/v1/api.proto",
    ]


@pytest.mark.parametrize(
    ("module", "service", "methods"),
    [
        (registration, "pluginregistration.Registration", ["GetInfo", "NotifyRegistrationStatus"]),
        (
            dra_v1,
            "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin",
            ["NodePrepareResources", "NodeUnprepareResources"],
        ),
        (
            dra_v1beta1,
            "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin",
            ["NodePrepareResources", "NodeUnprepareResources"],
        ),
        (health_v1alpha1, "v1alpha1.DRAResourceHealth", ["NodeWatchResources"]),
        (health_v1, "v1.DRAResourceHealth", ["NodeWatchResources"]),
        (health_pb2, "grpc.health.v1.Health", ["Check"]),
        (podresources, "v1.PodResourcesLister", ["List", "GetAllocatableResources", "Get"]),
    ],
)
def test_service_full_names_are_the_kubelets(
    module: ModuleType, service: str, methods: list[str]
) -> None:
    (descriptor,) = module.DESCRIPTOR.services_by_name.values()
    assert descriptor.full_name == service
    assert [m.name for m in descriptor.methods] == methods


def test_only_node_watch_resources_streams() -> None:
    watch = health_v1alpha1.DESCRIPTOR.services_by_name["DRAResourceHealth"].methods[0]
    prepare = dra_v1.DESCRIPTOR.services_by_name["DRAPlugin"].methods[0]
    assert (watch.client_streaming, watch.server_streaming) == (False, True)
    assert (prepare.client_streaming, prepare.server_streaming) == (False, False)


_TYPE_NAMES = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_ENUM: "enum",
    FieldDescriptor.TYPE_MESSAGE: "message",
}


def _fields(message: type) -> dict[str, tuple[int, str]]:
    """Field name -> (number, "[repeated ]type") of a generated message class."""
    descriptor = message.DESCRIPTOR  # type: ignore[attr-defined]
    return {
        f.name: (f.number, ("repeated " if f.is_repeated else "") + _TYPE_NAMES[f.type])
        for f in descriptor.fields
    }


def test_registration_field_numbers() -> None:
    assert _fields(registration.PluginInfo) == {
        "type": (1, "string"),
        "name": (2, "string"),
        "endpoint": (3, "string"),
        "supported_versions": (4, "repeated string"),
    }
    assert _fields(registration.RegistrationStatus) == {
        "plugin_registered": (1, "bool"),
        "error": (2, "string"),
    }


@pytest.mark.parametrize("module", [dra_v1, dra_v1beta1])
def test_dra_field_numbers(module: ModuleType) -> None:
    assert _fields(module.Claim) == {
        "namespace": (1, "string"),
        "uid": (2, "string"),
        "name": (3, "string"),
    }
    for request in (module.NodePrepareResourcesRequest, module.NodeUnprepareResourcesRequest):
        assert _fields(request) == {"claims": (1, "repeated message")}
    assert _fields(module.NodePrepareResourceResponse) == {
        "devices": (1, "repeated message"),
        "error": (2, "string"),
    }
    assert _fields(module.NodeUnprepareResourceResponse) == {"error": (1, "string")}
    claims = module.NodePrepareResourcesResponse.DESCRIPTOR.fields_by_name["claims"]
    assert claims.number == 1
    assert claims.message_type.GetOptions().map_entry
    assert claims.message_type.fields_by_name["key"].type == FieldDescriptor.TYPE_STRING


def test_device_share_id_is_optional_in_v1_and_absent_in_v1beta1() -> None:
    common = {
        "request_names": (1, "repeated string"),
        "pool_name": (2, "string"),
        "device_name": (3, "string"),
        "cdi_device_ids": (4, "repeated string"),
    }
    assert _fields(dra_v1.Device) == {**common, "share_id": (5, "string")}
    assert _fields(dra_v1beta1.Device) == common
    device = dra_v1.Device(pool_name="p", device_name="d")
    assert not device.HasField("share_id")
    device.share_id = ""
    assert device.HasField("share_id"), "share_id must have explicit presence"


@pytest.mark.parametrize("health_api", [health_v1, health_v1alpha1], ids=["v1", "v1alpha1"])
def test_health_messages_and_enum(health_api: ModuleType) -> None:
    assert _fields(health_api.DeviceHealth) == {
        "device": (1, "message"),
        "health": (2, "enum"),
        "last_updated_time": (3, "int64"),
        "health_check_timeout_seconds": (4, "int64"),
        "message": (5, "string"),
    }
    assert _fields(health_api.DeviceIdentifier) == {
        "pool_name": (1, "string"),
        "device_name": (2, "string"),
    }
    assert _fields(health_api.NodeWatchResourcesResponse) == {"devices": (1, "repeated message")}
    assert dict(health_api.HealthStatus.items()) == {
        "UNKNOWN": 0,
        "HEALTHY": 1,
        "UNHEALTHY": 2,
    }


def test_generated_file_names_are_distinct_in_the_descriptor_pool() -> None:
    names = {
        m.DESCRIPTOR.name
        for m in (registration, dra_v1, dra_v1beta1, health_v1, health_v1alpha1, health_pb2)
    }
    assert names == {
        "kubelet_plugin/proto_gen/pluginregistration/v1/api.proto",
        "kubelet_plugin/proto_gen/dra/v1/api.proto",
        "kubelet_plugin/proto_gen/dra/v1beta1/api.proto",
        "kubelet_plugin/proto_gen/dra_health/v1/api.proto",
        "kubelet_plugin/proto_gen/dra_health/v1alpha1/api.proto",
        "kubelet_plugin/proto_gen/grpc_health/v1/health.proto",
    }
