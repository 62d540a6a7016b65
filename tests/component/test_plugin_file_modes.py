"""Defect 7 of issue 18: what the plugin creates has its own modes, not the umask's.

Each test runs with umask 0000 (restored after), where anything created with
the default mode comes out world-writable.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from driver_fixtures import cdi_root, checkpoint_path, claim, claim_uid, make_driver
from plugin_factory import PluginFactory

from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.lstat().st_mode))


@pytest.mark.usefixtures("open_umask")
def test_cdi_root_specs_state_dir_and_checkpoint_have_set_modes(tmp_path: Path) -> None:
    driver = make_driver(tmp_path, FakeClaimSource([claim(1)]))
    driver.start()
    ref = ClaimRef(namespace="default", name="claim-1", uid=claim_uid(1))
    assert driver.prepare([ref])[claim_uid(1)].error is None

    assert mode(cdi_root(tmp_path)) == "0o755"
    assert [mode(p) for p in cdi_root(tmp_path).iterdir()] == ["0o644"]
    assert mode(checkpoint_path(tmp_path).parent) == "0o700"
    assert mode(checkpoint_path(tmp_path)) == "0o600"


@pytest.mark.usefixtures("open_umask")
def test_sockets_are_the_plugins_alone(make_plugin: PluginFactory, socket_root: Path) -> None:
    liveness = socket_root / "liveness.sock"
    plugin = make_plugin(liveness_address=f"unix://{liveness}")

    sockets = (plugin.dra_socket, plugin.registration_socket, liveness)
    assert [mode(p) for p in sockets] == ["0o600"] * 3


@pytest.mark.usefixtures("open_umask")
def test_directories_made_for_the_sockets_are_the_plugins_alone(
    make_plugin: PluginFactory, socket_root: Path
) -> None:
    liveness = socket_root / "probe" / "liveness.sock"
    plugin = make_plugin(liveness_address=f"unix://{liveness}")

    created = (
        socket_root / "plugins",
        plugin.dra_socket.parent,
        plugin.registration_socket.parent,
        liveness.parent,
    )
    assert [mode(p) for p in created] == ["0o700"] * 4
