"""Fixtures of the component tests: real gRPC servers on real unix sockets.

Socket paths are limited to 107 bytes, and pytest's tmp_path can be long, so
the plugin's directories live in a short temporary directory that each test
removes again, after checking that no socket file was left behind.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_node_driver import DRIVER, FakeNodeDriver
from plugin_factory import PluginFactory

from kubelet_plugin.node_driver import NodeDriver
from kubelet_plugin.server import PluginServer


@pytest.fixture
def socket_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="dra-"))
    try:
        yield root
        leftovers = [p for p in root.rglob("*") if p.is_socket()]
        assert not leftovers, f"sockets left behind: {leftovers}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def make_plugin(socket_root: Path) -> Iterator[PluginFactory]:
    """Build and start a PluginServer under ``socket_root`` (stopped at teardown)."""
    started: list[PluginServer] = []

    def make(
        driver: NodeDriver | None = None, *, start: bool = True, **options: Any
    ) -> PluginServer:
        options.setdefault("registry_dir", socket_root / "plugins_registry")
        options.setdefault("plugins_dir", socket_root / "plugins")
        plugin = PluginServer(
            options.pop("driver_name", DRIVER),
            driver if driver is not None else FakeNodeDriver(),
            **options,
        )
        started.append(plugin)
        if start:
            plugin.start()
        return plugin

    yield make
    for plugin in reversed(started):
        plugin.stop()
