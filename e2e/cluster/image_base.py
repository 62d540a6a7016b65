"""The driver image's base and wheels, made offline (steps 1 and 2 of
:mod:`e2e.cluster.driver_image`), each cached under ``<cache>/driver-image``.

- **Base**: the closure of BASE_PACKAGES (python3.11 with venv support,
  ``python``, ``/bin/sh``) from the host's Debian release, resolved and
  downloaded with the private apt configuration of e2e/cluster/build.sh
  (``<cache>/debian``), unpacked with ``dpkg-deb`` into a merged-/usr root and
  tarred; keyed by the package list, and the Debian versions resolved on its
  first build are kept (they enter the image's key).
- **Wheels**: the distribution's dependencies and build requirements, as
  cp311 manylinux wheels (``pip download``); keyed by the requirements.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from e2e.cluster.errors import ClusterError
from e2e.cluster.state import Progress

__all__ = [
    "BASE_ENV",
    "BASE_PACKAGES",
    "RECIPE_REVISION",
    "cache_key",
    "ensure_base",
    "ensure_wheels",
    "manylinux_platforms",
    "parse_simulated_install",
    "run_command",
]

# What python:3.11-slim gives the Dockerfile: python3.11 with ensurepip (the build stage's
# `python -m venv` and pip), `python`, and /bin/sh for RUN. libstdc++6 for the wheels of
# grpcio and friends. apt adds the libraries these need.
BASE_PACKAGES: Final = (
    "python3.11",
    "python3.11-venv",
    "python3-minimal",
    "python-is-python3",
    "dash",
    "libstdc++6",
)
BASE_ENV: Final = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
)
# Debian 12's glibc: the newest manylinux tag the base can load.
BASE_GLIBC: Final = (2, 36)
# Bump when the recipe changes in a way the keys do not see, so that old caches are rebuilt.
RECIPE_REVISION: Final = 1
COMMAND_TIMEOUT_S: Final = 900.0


def parse_simulated_install(output: str) -> list[tuple[str, str]]:
    """(package, version) of each ``Inst`` line of ``apt-get -s install`` output, in order."""
    found = []
    for line in output.splitlines():
        match = re.match(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) ", line)
        if match:
            found.append((match[1], match[2]))
    return found


def manylinux_platforms(glibc: tuple[int, int] = BASE_GLIBC) -> list[str]:
    """pip ``--platform`` tags a glibc of that version loads: manylinux_2_17 up to it.

    pip does not widen a given manylinux tag to the older ones, so each is named.
    """
    major, minor = glibc
    return [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 16, -1)]


def run_command(
    argv: Sequence[str],
    what: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    try:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            timeout=COMMAND_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(
            f"driver image: {what}: {shlex.join(argv)} ran past {COMMAND_TIMEOUT_S:.0f} s"
        ) from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
        raise ClusterError(
            f"driver image: {what}: {shlex.join(argv)} exited {result.returncode}:\n{tail}"
        )
    return result.stdout


def cache_key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class _Apt:
    """apt-get with build.sh's private configuration under ``<cache>/debian``."""

    def __init__(self, cache: Path) -> None:
        self.dir = cache / "debian"

    def __call__(self, *args: str, cwd: Path | None = None) -> str:
        if not (self.dir / "sources.list").is_file():
            raise ClusterError(
                f"driver image: {self.dir}/sources.list is missing: run e2e/cluster/build.sh "
                "first (it sets up the private apt configuration the base is fetched with)"
            )
        options = {
            "Dir::Etc::SourceList": self.dir / "sources.list",
            "Dir::Etc::SourceParts": self.dir / "empty",
            "Dir::Etc::Preferences": self.dir / "empty" / "preferences",
            "Dir::Etc::PreferencesParts": self.dir / "empty",
            "Dir::State": self.dir / "state",
            "Dir::State::status": self.dir / "state" / "status",
            "Dir::Cache": self.dir / "cache",
            "APT::Sandbox::User": "root",
        }
        argv = ["apt-get", "-q"]
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        return run_command([*argv, *args], f"apt-get {args[0]}", cwd=cwd)


def _host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise ClusterError("driver image: /etc/os-release names no VERSION_CODENAME (not Debian?)")


def _write_base_rootfs(debs: Iterable[Path], rootfs: Path) -> None:
    """Unpack the .debs into a merged-/usr root, and do what their maintainer scripts would."""
    for name in ("bin", "sbin", "lib", "lib64"):
        (rootfs / "usr" / name).mkdir(parents=True, exist_ok=True)
        (rootfs / name).symlink_to(f"usr/{name}")
    for deb in debs:
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE
        ) as p:
            # --keep-directory-symlink: ./lib/... lands in usr/lib through the link.
            _run_with_stdin(
                ["tar", "-x", "--keep-directory-symlink", "-C", str(rootfs)], p, f"unpack {deb}"
            )
    etc = rootfs / "etc"
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh\n"
    )
    (etc / "group").write_text("root:x:0:\nnonroot:x:65532:\n")
    # ca-certificates' postinst builds the bundle; the same, without running it.
    certs = sorted((rootfs / "usr/share/ca-certificates").rglob("*.crt"))
    (etc / "ssl" / "certs").mkdir(parents=True, exist_ok=True)
    (etc / "ssl" / "certs" / "ca-certificates.crt").write_text(
        "".join(c.read_text() for c in certs)
    )
    for name in ("tmp", "root", "proc", "sys", "dev", "home/nonroot"):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    os.chown(rootfs / "home" / "nonroot", 65532, 65532)


def _run_with_stdin(argv: Sequence[str], producer: subprocess.Popen[bytes], what: str) -> None:
    result = subprocess.run(list(argv), stdin=producer.stdout, capture_output=True, check=False)
    producer.wait()
    if result.returncode != 0 or producer.returncode != 0:
        raise ClusterError(
            f"driver image: {what}: {shlex.join(argv)} exited {result.returncode} "
            f"(producer {producer.returncode}): {result.stderr.decode(errors='replace').strip()}"
        )


def _reset_tarinfo(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Fixed times and owners (but for the non-root home): the same .debs give the same tar.
    info.mtime = 0
    if not info.name.startswith("./home/nonroot"):
        info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def ensure_base(cache: Path, work: Path, progress: Progress) -> tuple[Path, str]:
    """The base root file system tar (cached) and its package list (``name=version`` lines)."""
    directory = cache / "driver-image" / f"base-{cache_key(str(RECIPE_REVISION), *BASE_PACKAGES)}"
    tar_path, packages_path = directory / "rootfs.tar", directory / "packages.txt"
    if tar_path.is_file() and packages_path.is_file():
        return tar_path, packages_path.read_text()
    started = time.monotonic()
    apt = _Apt(cache)
    codename = _host_codename()
    progress(f"driver image: base: resolving {' '.join(BASE_PACKAGES)} in Debian {codename}")
    simulated = apt("-s", "--no-install-recommends", "-t", codename, "install", *BASE_PACKAGES)
    packages = parse_simulated_install(simulated)
    if not packages:
        raise ClusterError(f"driver image: apt-get -s install listed no packages:\n{simulated}")
    debs = work / "debs"
    debs.mkdir()
    apt("download", *(f"{name}={version}" for name, version in packages), cwd=debs)
    rootfs = work / "base-rootfs"
    _write_base_rootfs(sorted(debs.glob("*.deb")), rootfs)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / "rootfs.tar.partial"
    with tarfile.open(partial, "w") as tar:
        tar.add(rootfs, arcname=".", filter=_reset_tarinfo)
    text = "".join(f"{name}={version}\n" for name, version in sorted(packages))
    packages_path.write_text(text)
    partial.replace(tar_path)
    progress(
        f"driver image: base: {len(packages)} packages, "
        f"{tar_path.stat().st_size // 2**20} MiB, in {time.monotonic() - started:.1f} s"
    )
    return tar_path, text


def ensure_wheels(cache: Path, reqs: Sequence[str], progress: Progress) -> tuple[Path, str]:
    """A directory of cp311 manylinux wheels for ``reqs`` (cached) and its file listing."""
    platforms = manylinux_platforms()
    directory = (
        cache / "driver-image" / f"wheels-{cache_key(str(RECIPE_REVISION), *reqs, *platforms)}"
    )
    listing = directory / "wheels.txt"
    if listing.is_file():
        return directory, listing.read_text()
    started = time.monotonic()
    progress(f"driver image: wheels: pip download {len(reqs)} requirements for cp311")
    shutil.rmtree(directory, ignore_errors=True)
    argv = [sys.executable, "-m", "pip", "download", "-q", "-d", str(directory)]
    argv += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    argv += ["--abi", "cp311", *(arg for p in platforms for arg in ("--platform", p)), *reqs]
    run_command(argv, "pip download")
    text = "".join(f"{p.name}\n" for p in sorted(directory.glob("*.whl")))
    listing.write_text(text)
    progress(
        f"driver image: wheels: {text.count(chr(10))} wheels in {time.monotonic() - started:.1f} s"
    )
    return directory, text
