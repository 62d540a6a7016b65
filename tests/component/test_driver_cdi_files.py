"""CDI files on disk: the host scan that feeds the specs, and the spec writer."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from driver_fixtures import DRIVER, files_in

from dra_driver.cdi import SpecDevice, build_cdi_spec
from kubelet_plugin.cdi_writer import CdiWriter, scan_host_files

pytestmark = pytest.mark.component


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_scan_finds_what_nvidia_installs_and_nothing_else(tmp_path: Path) -> None:
    dev, driver = tmp_path / "dev-root", tmp_path / "driver-root"
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm-tools", "nvidia-modeset", "null"):
        touch(dev / "dev" / name)
    libs = driver / "usr/lib/x86_64-linux-gnu"
    for name in ("libcuda.so.550.54.15", "libnvidia-ml.so.550.54.15", "libc.so.6", "libcuda.so"):
        touch(libs / name)
    (libs / "libcuda.so.1").symlink_to("libcuda.so.550.54.15")
    # Merged /usr: /lib is a link to /usr/lib, its files must not be mounted twice.
    (driver / "lib").symlink_to("usr/lib")
    for name in ("nvidia-smi", "nvidia-cuda-mps-control", "bash"):
        touch(driver / "usr/bin" / name)
    touch(driver / "lib/firmware/nvidia/550.54.15/gsp_ga10x.bin")
    # A plain file stands in for the daemon's socket (only its presence matters).
    touch(driver / "run/nvidia-persistenced/socket")

    host = scan_host_files(dev, driver, "/usr/bin/nvidia-cdi-hook")

    assert host.dev_root == str(dev)
    assert host.control_devices == (
        "/dev/nvidiactl",
        "/dev/nvidia-uvm-tools",
        "/dev/nvidia-modeset",
    )
    assert host.driver_files == (
        "/lib/firmware/nvidia/550.54.15/gsp_ga10x.bin",
        "/run/nvidia-persistenced/socket",
        "/usr/bin/nvidia-cuda-mps-control",
        "/usr/bin/nvidia-smi",
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15",
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15",
    )
    assert host.hook_path == "/usr/bin/nvidia-cdi-hook"  # kept: the runtime sees the host


def test_scan_of_an_empty_host(tmp_path: Path) -> None:
    host = scan_host_files(tmp_path / "none", tmp_path / "none", None)
    assert host.control_devices == () and host.driver_files == () and host.hook_path is None


def test_writer_writes_replaces_lists_and_removes(tmp_path: Path) -> None:
    writer = CdiWriter(tmp_path / "cdi", DRIVER)
    path = writer.write(f"{DRIVER}-a.json", b'{"v": 1}')
    writer.write(f"{DRIVER}-a.json", b'{"v": 2}')
    writer.write(f"{DRIVER}-b.json", b"{}")
    (tmp_path / "cdi" / "other-vendor.json").write_text("{}")

    assert path.read_bytes() == b'{"v": 2}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert writer.spec_files() == [f"{DRIVER}-a.json", f"{DRIVER}-b.json"]
    assert writer.remove(f"{DRIVER}-a.json") is True
    assert writer.remove(f"{DRIVER}-a.json") is False
    assert files_in(tmp_path / "cdi") == [f"{DRIVER}-b.json", "other-vendor.json"]


def test_a_driver_seen_through_a_mount_is_named_by_its_host_path(tmp_path: Path) -> None:
    # The plugin container sees the host's / at <tmp>/driver-root; the runtime reads the
    # spec on the host, where the files are under /.
    seen = tmp_path / "driver-root"
    touch(seen / "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15")
    touch(seen / "usr/bin/nvidia-smi")

    host = scan_host_files(tmp_path / "none", seen, None, host_driver_root=Path("/"))

    assert host.driver_root == "/"
    assert host.driver_files == (
        "/usr/bin/nvidia-smi",
        "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15",
    )
    spec = build_cdi_spec(
        driver_name=DRIVER,
        devices=[
            SpecDevice(name="claim-gpu-0", env_key="0", device_node="/dev/nvidia0", uuid="GPU-0")
        ],
        host=host,
    )
    mounts = spec.container_edits.mounts or []
    assert {(m.host_path, m.container_path) for m in mounts} == {
        ("/usr/bin/nvidia-smi", "/usr/bin/nvidia-smi"),
        (
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15",
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15",
        ),
    }
