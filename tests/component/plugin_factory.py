"""The type of the ``make_plugin`` fixture (conftest.py), importable by test modules."""

from __future__ import annotations

from typing import Any, Protocol

from kubelet_plugin.node_driver import NodeDriver
from kubelet_plugin.server import PluginServer


class PluginFactory(Protocol):
    def __call__(
        self, driver: NodeDriver | None = None, *, start: bool = True, **options: Any
    ) -> PluginServer:
        """A PluginServer for ``driver`` (default: a FakeNodeDriver) with the
        component tests' directories; started unless ``start`` is false."""
        ...
