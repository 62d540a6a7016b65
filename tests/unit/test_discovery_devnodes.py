"""Fake device nodes of the mock backend under a dev root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from api.errors import DiscoveryError
from dra_driver.discovery.mock import MockBackend
from kubelet_plugin.devnodes import create_device_nodes, device_node_path


def test_creates_gpu_and_control_nodes(tmp_path: Path) -> None:
    inventory = MockBackend("node-a", "2xH100-80GB").discover()
    paths = create_device_nodes(tmp_path, inventory)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]
    )
    numbers = {}
    for path in paths:
        assert path.parent == tmp_path / "dev"
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o666
        if os.geteuid() == 0:
            # Container runtimes accept only device nodes as CDI device nodes.
            assert stat.S_ISCHR(info.st_mode)
            numbers[path.name] = (os.major(info.st_rdev), os.minor(info.st_rdev))
        else:
            assert stat.S_ISREG(info.st_mode)
    if os.geteuid() == 0:
        assert numbers["nvidia1"] == (195, inventory.gpus[1].minor)
        assert numbers["nvidiactl"] == (195, 255)
        assert numbers["nvidia-modeset"] == (195, 254)
    assert device_node_path(tmp_path, inventory.gpus[1].device_node) == tmp_path / "dev/nvidia1"


def test_idempotent_and_keeps_existing_nodes(tmp_path: Path) -> None:
    inventory = MockBackend("node-a", "1xL4").discover()
    create_device_nodes(tmp_path, inventory)
    existing = tmp_path / "dev" / "nvidia0"
    existing.unlink()
    existing.write_text("in use")
    # A restart finds its own character devices (the marker says so) and keeps them.
    create_device_nodes(tmp_path, inventory)
    assert existing.read_text() == "in use"


def test_refuses_a_dev_root_with_real_device_nodes(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    try:
        os.mknod(tmp_path / "dev" / "nvidiactl", 0o666 | stat.S_IFCHR, os.makedev(195, 255))
    except PermissionError:
        pytest.skip("creating a character device needs CAP_MKNOD")
    with pytest.raises(DiscoveryError, match="real character device"):
        create_device_nodes(tmp_path, MockBackend("node-a", "1xL4").discover())


def test_unwritable_dev_root_is_a_discovery_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DiscoveryError, match="cannot create fake device nodes"):
        create_device_nodes(blocker, MockBackend("node-a", "1xL4").discover())
