"""The driver's container image, built from deploy/Dockerfile on this machine, offline.

No registry can be reached here, so the Dockerfile's ``python:3.11-slim`` base
is replaced by one made from Debian packages, and pip installs from a local
directory of wheels; everything else is the real Dockerfile, built by podman:

1. **Base** (``localhost/dra-driver-base``): the closure of BASE_PACKAGES
   (python3.11 with venv support, ``python``, ``/bin/sh``) from the host's
   Debian release, resolved and downloaded with the private apt configuration
   of e2e/cluster/build.sh (``<cache>/debian``), unpacked with ``dpkg-deb``
   into a merged-/usr root, tarred and ``podman import``-ed.
2. **Wheels**: the distribution's dependencies and build requirements, as
   cp311 manylinux wheels (``pip download``), mounted into the build at
   /wheels; ``PIP_NO_INDEX`` and ``PIP_FIND_LINKS`` go in as build arguments,
   which the Dockerfile's build stage declares, so none reach the image.
3. **Image**: ``podman build -f deploy/Dockerfile --build-arg
   PYTHON_IMAGE=<base>`` from a context holding exactly what the Dockerfile
   copies, checked (the config the Dockerfile declares; ``dra-driver
   --version`` run in it), and saved as an OCI archive.

Steps 1 and 2 are :mod:`e2e.cluster.image_base`; what is read from the
Dockerfile's text, and the image's key, :mod:`e2e.cluster.dockerfile`.

Each level is cached under ``<cache>/driver-image`` keyed by a hash of its
inputs: the base by the package list (the Debian versions resolved on its
first build are kept, and enter the image's key), the wheels by the
requirements, the image by the Dockerfile, every file it copies, the base's
package versions, the wheels, the version and the git revision. A run that
finds the image cached costs the hashing only. ``python -m
e2e.cluster.driver_image build`` builds it by hand; :func:`import_image`
loads the archive into a node's containerd.

podman runs rootful with its state in a temporary directory (the settings
this VM needs: runc, cgroupfs, ulimits it may set); the mounts, the build's
cgroup and the host directories podman creates on first use are removed
again when the build ends.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from e2e.cluster.dockerfile import (
    DOCKERFILE,
    REPOSITORY,
    ImageConfig,
    check_image_config,
    copied_sources,
    dockerfile_config,
    dockerfile_instructions,
    files_under,
    image_reference,
    input_digest,
    requirements,
)
from e2e.cluster.errors import ClusterError
from e2e.cluster.host import remove_cgroup_root, running_programs, unmount_under
from e2e.cluster.image_base import (
    BASE_ENV,
    BASE_PACKAGES,
    RECIPE_REVISION,
    ensure_base,
    ensure_wheels,
    manylinux_platforms,
    parse_simulated_install,
    run_command,
)
from e2e.cluster.images import import_archive
from e2e.cluster.state import Progress, stderr_progress
from e2e.runtime.podman_state import podman_argv, podman_environment, write_podman_config

# The build's entry points, and (re-exported) the pure parts tests and other tiers read.
__all__ = [
    "BASE_PACKAGES",
    "REPOSITORY",
    "DriverImage",
    "ImageConfig",
    "build_image",
    "cache_root",
    "check_image_config",
    "copied_sources",
    "dockerfile_config",
    "dockerfile_instructions",
    "image_reference",
    "import_image",
    "input_digest",
    "manylinux_platforms",
    "parse_simulated_install",
    "podman_unavailable",
    "requirements",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
ENSURE_PODMAN: Final = REPO_ROOT / "e2e" / "runtime" / "ensure_podman.sh"
BASE_REPOSITORY: Final = "localhost/dra-driver-base"
WHEELS_MOUNT: Final = "/wheels"

# Image archives kept in the cache (about 75 MB each); older ones are removed.
KEEP_IMAGES: Final = 3
# Host paths podman 4.3 writes whatever --root/--runroot say; removed when a build created them.
PODMAN_HOST_PATHS: Final = (
    Path("/run/libpod"),
    Path("/run/containers"),
    Path("/var/lib/containers"),
)
PODMAN_PROGRAMS: Final = frozenset({"podman", "conmon", "buildah"})


def cache_root() -> Path:
    """``$DRA_DRIVER_CACHE``, else ``~/.cache/dra-driver`` (shared with build.sh)."""
    return Path(os.environ.get("DRA_DRIVER_CACHE") or Path.home() / ".cache" / "dra-driver")


@dataclass(frozen=True, slots=True)
class DriverImage:
    """An image archive in the cache, and how it came to be."""

    reference: str
    archive: Path
    version: str
    revision: str
    key: str
    cached: bool
    """True when found in the cache; False when this call built it."""
    seconds: float
    """What this call took."""


def _git_revision(root: Path) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def podman_unavailable() -> str | None:
    """Why podman cannot be used here, or None when it can (installed, or installable)."""
    if sys.platform != "linux":
        return "podman builds the image on Linux only"
    if os.geteuid() != 0:
        return "the image is built with rootful podman, which needs root"
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        return "podman is not installed and apt-get cannot install it"
    return None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class _Podman:
    """Rootful podman with everything it keeps in ``state`` (see the notes on this VM)."""

    def __init__(self, state: Path, cgroup_parent: str) -> None:
        self.state = state
        self.cgroup_parent = cgroup_parent
        self.env = podman_environment(state)
        state.mkdir(parents=True, exist_ok=True)
        write_podman_config(state, shutil.which("runc") or "/usr/sbin/runc")

    def __call__(self, *args: str, what: str) -> str:
        argv = podman_argv(self.state, "--cgroup-manager", "cgroupfs", *args)
        return run_command(argv, f"podman {what}", env=self.env)


def _stage_context(root: Path, sources: Sequence[str], context: Path) -> None:
    """Copy exactly what the Dockerfile copies (what the key hashed) into ``context``."""
    for source in sources:
        for path in files_under(root, source):
            target = context / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _prune(directory: Path, keep: str) -> None:
    images = sorted(
        (d for d in directory.glob("image-*") if d.name != keep),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    for old in images[KEEP_IMAGES - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def _ensure_podman(progress: Progress) -> None:
    progress(f"driver image: podman: {ENSURE_PODMAN} (installs it on first use)")
    run_command(["bash", str(ENSURE_PODMAN)], "ensure podman")


def _podman_build(
    *,
    root: Path,
    sources: Sequence[str],
    base_tar: Path,
    wheels: Path,
    reference: str,
    version: str,
    revision: str,
    archive: Path,
    work: Path,
    progress: Progress,
) -> None:
    # podman refuses a runroot path over 50 characters: the state goes to a short one.
    state = Path(tempfile.mkdtemp(prefix="dra-image-", dir="/tmp"))
    cgroup = state.name
    created = [p for p in PODMAN_HOST_PATHS if not p.exists()]
    try:
        podman = _Podman(state, cgroup)
        base = f"{BASE_REPOSITORY}:{archive.parent.name}"
        changes = [arg for env in BASE_ENV for arg in ("--change", f"ENV {env}")]
        podman(
            "import", *changes, "--change", 'CMD ["python3"]', str(base_tar), base, what="import"
        )
        context = work / "context"
        _stage_context(root, sources, context)
        progress(f"driver image: podman build -f {DOCKERFILE.relative_to(root)} ({reference})")
        podman(
            "build",
            "--network=none",
            f"--cgroup-parent=/{cgroup}",
            f"--file={DOCKERFILE}",
            f"--build-arg=PYTHON_IMAGE={base}",
            f"--build-arg=VERSION={version}",
            f"--build-arg=GIT_REVISION={revision}",
            "--build-arg=PIP_NO_INDEX=1",
            f"--build-arg=PIP_FIND_LINKS={WHEELS_MOUNT}",
            f"--volume={wheels}:{WHEELS_MOUNT}:ro",
            f"--tag={reference}",
            str(context),
            what="build",
        )
        config = json.loads(
            podman("inspect", "--format={{json .Config}}", reference, what="inspect")
        )
        problems = check_image_config(
            dockerfile_config(DOCKERFILE.read_text()), config, version=version, revision=revision
        )
        if problems:
            raise ClusterError(
                f"driver image: {reference} differs from {DOCKERFILE}: " + "; ".join(problems)
            )
        printed = podman(
            "run",
            "--rm",
            "--network=none",
            f"--cgroup-parent=/{cgroup}",
            reference,
            "--version",
            what="run --version",
        ).strip()
        if version not in printed or revision not in printed:
            raise ClusterError(
                f"driver image: `dra-driver --version` in {reference} printed {printed!r}, "
                f"not version {version} and revision {revision}"
            )
        partial = archive.with_suffix(".partial")
        podman("save", "--format=oci-archive", f"--output={partial}", reference, what="save")
        partial.replace(archive)
    finally:
        with contextlib.suppress(ClusterError):
            unmount_under(state)
        shutil.rmtree(state, ignore_errors=True)
        with contextlib.suppress(ClusterError):
            remove_cgroup_root(cgroup)
        if not PODMAN_PROGRAMS & running_programs():
            for path in created:
                shutil.rmtree(path, ignore_errors=True)


def build_image(
    *, root: Path = REPO_ROOT, cache: Path | None = None, progress: Progress = stderr_progress
) -> DriverImage:
    """The driver image of the tree at ``root``: from the cache, or built (a minute or two).

    Needs root, and the private apt configuration e2e/cluster/build.sh sets up
    (it runs before every local cluster). Raises ClusterError naming the step
    that failed; concurrent calls on one cache are serialised by a lock.
    """
    started = time.monotonic()
    cache = cache or cache_root()
    directory = cache / "driver-image"
    dockerfile = (root / "deploy" / "Dockerfile").read_text()
    sources = copied_sources(dockerfile)
    pyproject = (root / "pyproject.toml").read_text()
    version = str(tomllib.loads(pyproject)["project"]["version"])
    revision = _git_revision(root)
    with _locked(directory), tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as tmp:
        work = Path(tmp)
        base_tar, packages = ensure_base(cache, work, progress)
        wheels, wheel_list = ensure_wheels(cache, requirements(pyproject), progress)
        key = input_digest(
            root,
            sources,
            {
                "recipe": str(RECIPE_REVISION),
                "dockerfile": dockerfile,
                "base": packages,
                "wheels": wheel_list,
                "version": version,
                "revision": revision,
            },
        )
        reference = image_reference(version, key)
        archive = directory / f"image-{key[:16]}" / "image.oci.tar"
        if archive.is_file():
            os.utime(archive.parent)
            return DriverImage(
                reference, archive, version, revision, key, True, time.monotonic() - started
            )
        _ensure_podman(progress)
        archive.parent.mkdir(parents=True, exist_ok=True)
        _podman_build(
            root=root,
            sources=sources,
            base_tar=base_tar,
            wheels=wheels,
            reference=reference,
            version=version,
            revision=revision,
            archive=archive,
            work=work,
            progress=progress,
        )
        (archive.parent / "image.json").write_text(
            json.dumps({"reference": reference, "version": version, "revision": revision})
        )
        _prune(directory, archive.parent.name)
    return DriverImage(
        reference, archive, version, revision, key, False, time.monotonic() - started
    )


def import_image(image: DriverImage, *, bin_dir: Path, containerd_socket: Path) -> None:
    """Load the archive into a node's containerd (``ctr`` from ``bin_dir``), where the
    kubelet finds it; the archive names the image by its full reference.

    Raises ClusterError when the import fails or the image is not listed after it.
    """
    import_archive(bin_dir, image.archive, image.reference, containerd_socket=containerd_socket)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m e2e.cluster.driver_image build``: build or reuse; print reference and path."""
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster.driver_image")
    parser.add_argument("command", choices=["build"], help="build the image, or reuse it")
    parser.parse_args(argv)
    if reason := podman_unavailable():
        print(f"driver image: cannot build here: {reason}", file=sys.stderr)
        return 1
    try:
        image = build_image()
    except ClusterError as err:
        print(err, file=sys.stderr)
        return 1
    how = "cached" if image.cached else "built"
    print(f"{image.reference}\t{image.archive}")
    print(f"driver image: {how} in {image.seconds:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
