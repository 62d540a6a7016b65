"""Plugin registration as the kubelet's plugin watcher performs it, over real sockets."""

from __future__ import annotations

import logging

import grpc
import pytest
from fake_node_driver import DRIVER
from kubelet_standin import (
    HEALTH_SERVICE,
    HEALTH_SERVICE_V1,
    KUBELET_1_33_SERVICES,
    KUBELET_1_36_HEALTH_SERVICES,
    KubeletStandin,
    RegistrationRejectedError,
)
from plugin_factory import PluginFactory

from kubelet_plugin.health.service import HealthBroadcaster
from kubelet_plugin.proto_gen.pluginregistration.v1 import api_pb2 as registration_pb2
from kubelet_plugin.proto_gen.pluginregistration.v1 import api_pb2_grpc as registration_grpc

pytestmark = pytest.mark.component


def test_get_info_names_the_driver_its_dra_socket_and_v1_first(make_plugin: PluginFactory) -> None:
    plugin = make_plugin()
    with grpc.insecure_channel(f"unix://{plugin.registration_socket}") as channel:
        info = registration_grpc.RegistrationStub(channel).GetInfo(
            registration_pb2.InfoRequest(), timeout=5
        )
    assert plugin.registration_socket.name == f"{DRIVER}-reg.sock"
    assert info.type == "DRAPlugin"
    assert info.name == DRIVER
    assert info.endpoint == str(plugin.dra_socket)
    assert plugin.dra_socket.parts[-2:] == (DRIVER, "dra.sock")
    assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]


def test_health_services_are_advertised_last_v1_first(make_plugin: PluginFactory) -> None:
    plugin = make_plugin(health_source=HealthBroadcaster())
    with KubeletStandin().register(plugin.registration_socket) as registered:
        assert registered.supported_versions == (
            "v1.DRAPlugin",
            "v1beta1.DRAPlugin",
            HEALTH_SERVICE_V1,
            HEALTH_SERVICE,
        )
        # The DRA service is still the first entry the kubelet knows; health is v1 on 1.37.
        assert registered.service == "v1.DRAPlugin"
        assert registered.health_service == HEALTH_SERVICE_V1
    with KubeletStandin(health_services=KUBELET_1_36_HEALTH_SERVICES).register(
        plugin.registration_socket
    ) as older:
        assert older.health_service == HEALTH_SERVICE


def test_kubelet_registers_the_plugin_with_v1(make_plugin: PluginFactory) -> None:
    plugin = make_plugin()
    assert not plugin.registered
    assert plugin.registration_status is None

    with KubeletStandin().register(plugin.registration_socket) as registered:
        assert registered.service == "v1.DRAPlugin"
        assert registered.name == DRIVER

    assert plugin.registered
    assert plugin.wait_registered(timeout=0)
    status = plugin.registration_status
    assert status is not None and status.error == ""


def test_an_older_kubelet_picks_v1beta1(make_plugin: PluginFactory) -> None:
    plugin = make_plugin()
    with KubeletStandin(KUBELET_1_33_SERVICES).register(plugin.registration_socket) as registered:
        assert registered.service == "v1beta1.DRAPlugin"
    assert plugin.registered


def test_a_rejection_is_recorded_and_logged(
    make_plugin: PluginFactory, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = make_plugin()
    caplog.set_level(logging.ERROR, logger="kubelet_plugin")

    with pytest.raises(RegistrationRejectedError, match="none of services supported by the plugin"):
        KubeletStandin(["v2.DRAPlugin"]).register(plugin.registration_socket)

    assert not plugin.registered
    assert not plugin.wait_registered(timeout=0)
    status = plugin.registration_status
    assert status is not None
    assert "are supported by the kubelet (['v2.DRAPlugin'])" in status.error
    assert any(
        "rejected the registration" in r.getMessage() and "v2.DRAPlugin" in r.getMessage()
        for r in caplog.records
    )


def test_a_failed_registration_is_answered_with_an_error(make_plugin: PluginFactory) -> None:
    plugin = make_plugin()
    with grpc.insecure_channel(f"unix://{plugin.registration_socket}") as channel:
        stub = registration_grpc.RegistrationStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.NotifyRegistrationStatus(
                registration_pb2.RegistrationStatus(plugin_registered=False, error="boom"),
                timeout=5,
            )
    assert "boom" in raised.value.details()


def test_the_latest_verdict_wins(make_plugin: PluginFactory) -> None:
    plugin = make_plugin()
    with pytest.raises(RegistrationRejectedError):
        KubeletStandin(["v2.DRAPlugin"]).register(plugin.registration_socket)
    assert not plugin.registered

    # The kubelet restarts, with DRA v1 support this time.
    KubeletStandin().register(plugin.registration_socket).close()
    assert plugin.registered
