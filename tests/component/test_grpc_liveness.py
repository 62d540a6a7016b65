"""The liveness service exercises both plugin sockets for real."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from kubelet_standin import probe_liveness
from plugin_factory import PluginFactory

pytestmark = pytest.mark.component


def test_serving_on_a_tcp_port(make_plugin: PluginFactory) -> None:
    plugin = make_plugin(liveness_address="127.0.0.1:0")
    address = plugin.liveness_address
    assert address is not None and not address.endswith(":0")
    assert probe_liveness(address) == "SERVING"


def test_not_serving_once_the_dra_server_stopped(make_plugin: PluginFactory) -> None:
    plugin = make_plugin(liveness_address="127.0.0.1:0")
    address = plugin.liveness_address
    assert address is not None
    assert probe_liveness(address) == "SERVING"

    plugin.dra_server.stop()

    assert probe_liveness(address) == "NOT_SERVING"


def test_not_serving_once_the_registration_socket_is_gone(
    make_plugin: PluginFactory, socket_root: Path
) -> None:
    liveness_socket = socket_root / "liveness.sock"
    plugin = make_plugin(liveness_address=f"unix://{liveness_socket}")
    assert probe_liveness(f"unix://{liveness_socket}") == "SERVING"

    # Someone cleaned the registry directory: the kubelet can no longer see
    # the plugin although its server still runs.
    plugin.registration_socket.unlink()

    assert probe_liveness(f"unix://{liveness_socket}") == "NOT_SERVING"


def test_a_named_service_is_not_found(make_plugin: PluginFactory) -> None:
    plugin = make_plugin(liveness_address="127.0.0.1:0")
    address = plugin.liveness_address
    assert address is not None
    with pytest.raises(grpc.RpcError) as raised:
        probe_liveness(address, service="v1.DRAPlugin")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
