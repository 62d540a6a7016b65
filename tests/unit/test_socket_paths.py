"""Socket names from the plugin pod's UID stay inside their directories (issue 18, defect 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelet_plugin.socket_paths import dra_socket_path, instance_token, registration_socket_path

DRIVER = "gpu.dra-driver.io"


def test_a_real_pod_uid_gives_its_first_twelve_hex_digits() -> None:
    assert instance_token("7C9E6679-7425-40de-944b-e07fc1f90ae7") == "7c9e66797425"


@pytest.mark.parametrize("pod_uid", ["../../etc/x", "a/b/../../c", "..", "x\0y/z"])
def test_a_hostile_pod_uid_never_leaves_the_socket_directory(pod_uid: str) -> None:
    root = Path("/var/lib/kubelet")
    for path, directory in (
        (dra_socket_path(root / "plugins", DRIVER, pod_uid), root / "plugins" / DRIVER),
        (registration_socket_path(root / "registry", DRIVER, pod_uid), root / "registry"),
    ):
        assert path.parent == directory
        assert ".." not in path.parts and "\0" not in str(path)
