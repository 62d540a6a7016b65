"""Rootful podman 4.3 for the CDI runtime tests, confined to a private directory: installed
on first use by ``e2e/runtime/ensure_podman.sh``, with a busybox image imported from a
cached rootfs tarball. See :mod:`runtime_fixtures`.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import pytest
from runtime_host import (
    COMMAND_TIMEOUT_S,
    REPO_ROOT,
    ContainerOutput,
    absent,
    cache_root,
    remove_cgroup_trees,
    report_created,
    require_root,
    stream_command,
    unmount_all_under,
)

from e2e.runtime.podman_state import podman_argv, podman_environment, write_podman_config

ENSURE_PODMAN: Final = REPO_ROOT / "e2e" / "runtime" / "ensure_podman.sh"
#: ensure_podman.sh's exit status when podman is missing and cannot be installed here.
EXIT_CANNOT_INSTALL: Final = 3
#: Where podman 4.3 reads CDI specs (the other place, /etc/cdi, is the admin's).
PODMAN_CDI_ROOT: Final = Path("/var/run/cdi")
#: podman keeps its blob-info cache here whatever --root says (containers/image default).
PODMAN_BLOB_CACHE_DIR: Final = Path("/var/lib/containers")
#: Where podman, conmon and the OCI runtimes keep state by default: the session's
#: configuration must keep all of it in the private directory.
PODMAN_DEFAULT_STATE: Final = tuple(
    Path(p) for p in ("/run/runc", "/run/crun", "/run/libpod", "/run/containers")
)
BUSYBOX_IMAGE: Final = "localhost/dra-driver-busybox:test"


class Podman:
    """Rootful podman confined to ``state_dir``; containers in cgroup ``cgroup_parent``."""

    def __init__(self, state_dir: Path, cgroup_parent: str) -> None:
        self.state_dir = state_dir
        self.cgroup_parent = cgroup_parent
        self.env = podman_environment(state_dir)

    def write_config(self) -> None:
        runc = shutil.which("runc")
        assert runc is not None, "ensure_podman.sh installs runc"
        write_podman_config(self.state_dir, runc)

    def command(self, *args: str) -> list[str]:
        return podman_argv(self.state_dir, *args)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a podman subcommand; raises with podman's stderr when ``check`` and it fails."""
        result = subprocess.run(
            self.command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def run_container(self, script: str, *, cdi_devices: Sequence[str] = ()) -> ContainerOutput:
        """``podman run --rm`` the busybox image with ``sh -c script`` and the CDI devices."""
        devices = [arg for device in cdi_devices for arg in ("--device", device)]
        result = self.run(
            "run",
            "--rm",
            "--network",
            "none",
            "--cgroup-parent",
            self.cgroup_parent,
            *devices,
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            script,
            check=False,
        )
        return ContainerOutput(result.returncode, result.stdout, result.stderr)


def ensure_podman(config: pytest.Config) -> Path:
    """Install podman if needed (progress on the terminal) and return the busybox rootfs tarball.

    Skips the calling test (loudly) where podman cannot be installed: not
    root, or no apt-get. Any other failure of the script fails the test.
    """
    require_root("the podman CDI test")
    cached = cache_root() / "runtime" / "busybox-rootfs.tar"
    quiet = bool(shutil.which("podman") and shutil.which("runc") and cached.is_file())
    code, stdout, stderr = stream_command(
        config,
        [str(ENSURE_PODMAN)],
        show=not quiet,
        banner="[cdi runtime tests] setting up podman and a busybox image (first run only)",
    )
    if code == EXIT_CANNOT_INSTALL:
        pytest.skip(f"podman CDI test not run: {stderr.strip()}")
    if code != 0:
        pytest.fail(f"{ENSURE_PODMAN} exited {code}:\n{stderr}", pytrace=False)
    return Path(stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def podman_session(config: pytest.Config, run_token: str) -> Iterator[Podman]:
    """A usable :class:`Podman` with the busybox image; everything undone at exit.

    At exit: containers removed, podman's mounts under its directory checked
    (unmounted and reported if any remain), the session's cgroups removed, the
    directory deleted, and the blob-info cache removed if this session created
    it. Raises AssertionError at exit when something had been left behind.
    """
    rootfs = ensure_podman(config)
    blob_cache_existed = PODMAN_BLOB_CACHE_DIR.exists()
    watched = absent(PODMAN_DEFAULT_STATE)
    podman = Podman(
        Path(tempfile.mkdtemp(prefix="dra-podman-")), cgroup_parent=f"/dra-driver-{run_token}"
    )
    leftovers: list[str] = []
    try:
        podman.write_config()
        podman.run(
            "import",
            "--change",
            "CMD=/bin/sh",
            "--change",
            "ENV=PATH=/bin",
            str(rootfs),
            BUSYBOX_IMAGE,
        )
        yield podman
    finally:
        containers = podman.run("ps", "--all", "--quiet", check=False).stdout.split()
        if containers:
            leftovers.append(f"containers {containers}")
            podman.run("rm", "--force", *containers, check=False)
        podman.run("rmi", "--all", "--force", check=False)
        leftovers += [f"mount {p}" for p in unmount_all_under(podman.state_dir)]
        leftovers += [f"cgroup {c}" for c in remove_cgroup_trees(podman.cgroup_parent)]
        shutil.rmtree(podman.state_dir, ignore_errors=True)
        if not blob_cache_existed:
            shutil.rmtree(PODMAN_BLOB_CACHE_DIR, ignore_errors=True)
        leftovers += report_created(watched)
    assert not leftovers, f"podman left these behind (now cleaned up): {leftovers}"
