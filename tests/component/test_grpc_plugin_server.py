"""PluginServer life cycle: directories, sockets, start order, stop, configuration errors."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import grpc
import pytest
from fake_node_driver import DRIVER, FakeNodeDriver
from kubelet_standin import KubeletStandin
from plugin_factory import PluginFactory

from api.errors import InvalidInputError
from kubelet_plugin.proto_gen.dra.v1 import api_pb2 as dra_v1
from kubelet_plugin.proto_gen.dra.v1 import api_pb2_grpc as dra_v1_grpc
from kubelet_plugin.server import PluginServer

pytestmark = pytest.mark.component


def _stale_socket(path: Path) -> None:
    """A socket file whose server is gone, as a crashed plugin leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
    assert path.is_socket()


def test_sockets_exist_while_serving_and_are_removed_on_stop(
    make_plugin: PluginFactory, socket_root: Path
) -> None:
    plugin = make_plugin()
    assert plugin.registration_socket == socket_root / "plugins_registry" / f"{DRIVER}-reg.sock"
    assert plugin.dra_socket == socket_root / "plugins" / DRIVER / "dra.sock"
    assert plugin.registration_socket.is_socket()
    assert plugin.dra_socket.is_socket()

    plugin.stop()

    assert not plugin.registration_socket.exists()
    assert not plugin.dra_socket.exists()
    assert plugin.dra_socket.parent.is_dir(), "the plugin directory stays"
    plugin.stop()  # idempotent


def test_stale_sockets_of_a_crashed_run_are_replaced(
    make_plugin: PluginFactory, socket_root: Path
) -> None:
    _stale_socket(socket_root / "plugins_registry" / f"{DRIVER}-reg.sock")
    _stale_socket(socket_root / "plugins" / DRIVER / "dra.sock")

    plugin = make_plugin()

    with KubeletStandin().register(plugin.registration_socket) as kubelet:
        assert kubelet.prepare([]) == {}
    assert plugin.registered


def test_a_file_in_the_way_is_not_deleted(make_plugin: PluginFactory, socket_root: Path) -> None:
    in_the_way = socket_root / "plugins_registry" / f"{DRIVER}-reg.sock"
    in_the_way.parent.mkdir(parents=True)
    in_the_way.write_text("not a socket")
    plugin = make_plugin(start=False)

    with pytest.raises(FileExistsError, match="is not a unix socket"):
        plugin.start()

    assert in_the_way.read_text() == "not a socket"
    assert not plugin.dra_socket.exists(), "the DRA server started first and was stopped again"
    assert plugin.wait(timeout=0)


def test_the_dra_socket_answers_as_soon_as_the_registration_socket_appears(
    make_plugin: PluginFactory,
) -> None:
    # The kubelet's plugin watcher reacts to the registration socket at once
    # and dials the DRA endpoint right after GetInfo.
    plugin = make_plugin(start=False)
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not plugin.registration_socket.exists():
            if done.wait(0.001):
                return
        with grpc.insecure_channel(f"unix://{plugin.dra_socket}") as channel:
            try:
                dra_v1_grpc.DRAPluginStub(channel).NodePrepareResources(
                    dra_v1.NodePrepareResourcesRequest(), timeout=5
                )
                seen.append("answered")
            except grpc.RpcError as error:
                seen.append(f"failed: {error}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        plugin.start()
    finally:
        watcher.join(timeout=10)
        done.set()
    assert seen == ["answered"]


def test_a_new_instance_takes_over_after_a_stop(make_plugin: PluginFactory) -> None:
    first = make_plugin()
    KubeletStandin().register(first.registration_socket).close()
    first.stop()

    second = make_plugin()
    assert not second.registered
    KubeletStandin().register(second.registration_socket).close()
    assert second.registered


def test_wait_returns_when_stopped_from_another_thread(make_plugin: PluginFactory) -> None:
    plugin = make_plugin()
    assert not plugin.wait(timeout=0)
    stopper = threading.Thread(target=plugin.stop)
    stopper.start()
    assert plugin.wait(timeout=30)
    stopper.join()
    assert not plugin.dra_socket.exists()


def test_context_manager_serves_and_cleans_up(socket_root: Path) -> None:
    plugin = PluginServer(
        DRIVER,
        FakeNodeDriver(),
        registry_dir=socket_root / "registry",
        plugins_dir=socket_root / "plugins",
    )
    with plugin:
        assert plugin.dra_socket.is_socket()
        with pytest.raises(RuntimeError, match="already started"):
            plugin.start()
    assert not plugin.dra_socket.exists()
    assert not plugin.registration_socket.exists()


def test_a_socket_path_over_the_unix_limit_is_refused(socket_root: Path) -> None:
    deep = socket_root / ("d" * 120)
    with pytest.raises(InvalidInputError) as raised:
        PluginServer(DRIVER, FakeNodeDriver(), registry_dir=deep, plugins_dir=socket_root)
    message = str(raised.value)
    assert message.startswith("kubelet plugin: registryDir: socket path")
    assert "over the unix limit of 107" in message
    assert "pluginsDir" not in message


def test_an_invalid_driver_name_is_refused(socket_root: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"driverName: invalid driver name 'GPU_driver'"):
        PluginServer(
            "GPU_driver", FakeNodeDriver(), registry_dir=socket_root, plugins_dir=socket_root
        )


def test_a_relative_liveness_socket_is_refused(socket_root: Path) -> None:
    with pytest.raises(InvalidInputError, match="livenessAddress"):
        PluginServer(
            DRIVER,
            FakeNodeDriver(),
            registry_dir=socket_root,
            plugins_dir=socket_root,
            liveness_address="unix://live.sock",
        )
