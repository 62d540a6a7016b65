"""The node's two images, built without any registry and imported into containerd.

Both are the cached static busybox in an otherwise empty root file system,
packed by umoci into an OCI layout, tarred into an OCI archive and loaded with
``ctr images import`` into the ``k8s.io`` namespace (the CRI plugin's):

- ``docker.io/local/busybox:dra-e2e``: /bin/busybox plus a link per applet,
  command ``/bin/sh``; pods name it ``local/busybox:dra-e2e``.
- ``docker.io/local/pause:dra-e2e``: the same file system, command
  ``/bin/sleep 2147483647``: the sandbox ("pause") container of every pod.

The tag is not ``latest`` on purpose: the kubelet's default pull policy for
``latest`` is Always, and there is nothing to pull from.
"""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

from e2e.cluster.errors import ClusterError
from e2e.cluster.node import BUSYBOX_IMAGE, PAUSE_IMAGE

__all__ = ["build_and_import_images", "import_archive"]

TAG = "dra-e2e"


def _run(argv: Sequence[str], what: str, *, cwd: Path | None = None) -> str:
    result = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, cwd=cwd, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise ClusterError(
            f"images: {what}: {' '.join(argv)} exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


def _rootfs(directory: Path, busybox: Path) -> Path:
    rootfs = directory / "rootfs"
    bindir = rootfs / "bin"
    bindir.mkdir(parents=True)
    (bindir / "busybox").write_bytes(busybox.read_bytes())
    (bindir / "busybox").chmod(0o755)
    for applet in _run([str(busybox), "--list"], "list the busybox applets").split():
        if applet != "busybox":
            (bindir / applet).symlink_to("busybox")
    for name in ("tmp", "etc", "proc", "sys", "dev"):
        (rootfs / name).mkdir()
    (rootfs / "tmp").chmod(0o1777)
    return rootfs


def _oci_archive(
    umoci: Path, directory: Path, rootfs: Path, name: str, command: Sequence[str]
) -> Path:
    layout = directory / f"{name}-layout"
    image = f"{layout}:{TAG}"
    _run([str(umoci), "init", "--layout", str(layout)], f"{name}: umoci init")
    _run([str(umoci), "new", "--image", image], f"{name}: umoci new")
    _run(
        [str(umoci), "insert", "--image", image, str(rootfs), "/"],
        f"{name}: umoci insert",
    )
    config = [str(umoci), "config", "--image", image, "--os", "linux", "--architecture", "amd64"]
    config += ["--config.env", "PATH=/bin"]
    for word in command:
        # One --config.cmd per word: umoci appends them into the command list.
        config += ["--config.cmd", word]
    _run(config, f"{name}: umoci config")
    archive = directory / f"{name}.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(layout.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive


def import_archive(
    bin_dir: Path,
    archive: Path,
    reference: str,
    *,
    containerd_socket: Path,
    base_name: str | None = None,
) -> None:
    """Load an OCI archive into containerd's ``k8s.io`` namespace (the kubelet's images).

    ``base_name``: the repository its tag-only ``ref.name`` annotations are
    prefixed with; without it, the annotations must hold full references.
    Raises ClusterError when ``ctr`` fails or does not list ``reference`` after.
    """
    ctr = [str(bin_dir / "ctr"), "--address", str(containerd_socket), "--namespace", "k8s.io"]
    naming = ["--base-name", base_name] if base_name else []
    _run([*ctr, "images", "import", *naming, str(archive)], f"import {reference}")
    listed = _run([*ctr, "images", "ls", "-q"], "list images").split()
    if reference not in listed:
        raise ClusterError(f"images: ctr imported {archive} but lists {listed}, not {reference}")


def build_and_import_images(
    bin_dir: Path, directory: Path, *, containerd_socket: Path
) -> tuple[str, str]:
    """Build both images under ``directory`` and import them; return (busybox, pause) names.

    Raises ClusterError naming the step (umoci, tar, ctr) that failed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rootfs = _rootfs(directory, bin_dir / "busybox")
    umoci = bin_dir / "umoci"
    for reference, command in (
        (BUSYBOX_IMAGE, ["/bin/sh"]),
        (PAUSE_IMAGE, ["/bin/sleep", "2147483647"]),
    ):
        base = reference.rsplit(":", 1)[0]
        name = base.rsplit("/", 1)[1]
        archive = _oci_archive(umoci, directory, rootfs, name, command)
        import_archive(
            bin_dir, archive, reference, containerd_socket=containerd_socket, base_name=base
        )
    return BUSYBOX_IMAGE, PAUSE_IMAGE
