"""The real driver behind the real gRPC server: a GpuDriver on files, served on a unix socket.

The component tests of hostile input and concurrent calls talk to it as the
kubelet does (kubelet_standin), through the plugin's DRA service and its
dispatcher, down to the CDI files and the checkpoint under ``root``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from driver_fixtures import make_driver
from kubelet_standin import KubeletStandin, RegisteredPlugin
from plugin_factory import PluginFactory

from kubelet_plugin.driver import GpuDriver
from tests.fakes.claim_source import FakeClaimSource

#: The driver's own roots under a test's root: everything else there is not its to change.
DRIVER_ROOTS = ("cdi", "state")


@contextlib.contextmanager
def served_driver(
    make_plugin: PluginFactory,
    root: Path,
    claims: FakeClaimSource,
    *,
    gpus: int = 8,
    **plugin_options: Any,
) -> Iterator[tuple[RegisteredPlugin, GpuDriver]]:
    """A started GpuDriver under ``root``, served and registered with a kubelet stand-in."""
    driver = make_driver(root, claims, gpus=gpus)
    driver.start()
    try:
        plugin = make_plugin(driver, **plugin_options)
        with KubeletStandin().register(plugin.registration_socket) as kubelet:
            yield kubelet, driver
        plugin.stop()
    finally:
        driver.close()


def files_outside_the_roots(root: Path) -> dict[str, str]:
    """Every path under ``root`` but the driver's roots, with a digest of each file's bytes."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in DRIVER_ROOTS:
            continue
        digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        found[str(relative)] = "link" if path.is_symlink() else digest
    return found
