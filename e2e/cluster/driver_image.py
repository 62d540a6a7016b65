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
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from e2e.cluster.errors import ClusterError
from e2e.cluster.host import remove_cgroup_root, running_programs, unmount_under
from e2e.cluster.images import import_archive
from e2e.runtime.podman_state import podman_argv, podman_environment, write_podman_config

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
    "input_digest",
    "manylinux_platforms",
    "parse_simulated_install",
    "podman_unavailable",
    "requirements",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DOCKERFILE: Final = REPO_ROOT / "deploy" / "Dockerfile"
ENSURE_PODMAN: Final = REPO_ROOT / "e2e" / "runtime" / "ensure_podman.sh"
REPOSITORY: Final = "docker.io/local/dra-driver"
"""Where the image goes in containerd; the tag is ``<version>-<key>``, never ``latest``."""
BASE_REPOSITORY: Final = "localhost/dra-driver-base"
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
WHEELS_MOUNT: Final = "/wheels"
# Bump when the recipe changes in a way the keys do not see, so that old caches are rebuilt.
RECIPE_REVISION: Final = 1
# Image archives kept in the cache (about 75 MB each); older ones are removed.
KEEP_IMAGES: Final = 3
# Host paths podman 4.3 writes whatever --root/--runroot say; removed when a build created them.
PODMAN_HOST_PATHS: Final = (
    Path("/run/libpod"),
    Path("/run/containers"),
    Path("/var/lib/containers"),
)
PODMAN_PROGRAMS: Final = frozenset({"podman", "conmon", "buildah"})
COMMAND_TIMEOUT_S: Final = 900.0

Progress = Callable[[str], None]


def _stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cache_root() -> Path:
    """``$DRA_DRIVER_CACHE``, else ``~/.cache/dra-driver`` (shared with build.sh)."""
    return Path(os.environ.get("DRA_DRIVER_CACHE") or Path.home() / ".cache" / "dra-driver")


# --- pure parts ---------------------------------------------------------------------------------


def dockerfile_instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuation lines joined, comments dropped.

    Raises ClusterError when the text ends inside a continued line (a build
    would fail on it).
    """
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full, pending = (pending + line).strip(), ""
        word, _, rest = full.partition(" ")
        result.append((word.upper(), rest.strip()))
    if pending:
        raise ClusterError(f"Dockerfile ends inside a continued line: {pending.strip()!r}")
    return result


def copied_sources(dockerfile: str) -> tuple[str, ...]:
    """The build-context paths the Dockerfile's COPY instructions read, in order.

    ``COPY --from=<stage>`` reads another stage, not the context, and is left
    out; the last word of a COPY is its destination. A directory source ends
    with ``/`` as the Dockerfile writes it.
    """
    sources: list[str] = []
    for word, rest in dockerfile_instructions(dockerfile):
        if word != "COPY":
            continue
        args = shlex.split(rest)
        if any(a.startswith("--from") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        sources += [p for p in paths[:-1] if p not in sources]
    return tuple(sources)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What the Dockerfile's final stage declares about the image it makes."""

    env: Mapping[str, str]
    """ENV of the final stage, ``${...}`` left as written."""
    user: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    labels: Mapping[str, str]


def _pairs(rest: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(rest) if "=" in word)


def dockerfile_config(dockerfile: str) -> ImageConfig:
    """The ENV, USER, ENTRYPOINT, CMD and LABELs of the Dockerfile's last stage.

    Only the forms the project's Dockerfile uses are read: ``KEY=value``
    pairs, and ENTRYPOINT/CMD in JSON (exec) form; a shell form is an error.
    """
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    user = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    for word, rest in dockerfile_instructions(dockerfile):
        if word == "FROM":
            env, labels, user, entrypoint, cmd = {}, {}, "", (), ()
        elif word == "ENV":
            env.update(_pairs(rest))
        elif word == "LABEL":
            labels.update(_pairs(rest))
        elif word == "USER":
            user = rest
        elif word in ("ENTRYPOINT", "CMD"):
            try:
                value = tuple(str(v) for v in json.loads(rest))
            except ValueError:
                raise ClusterError(
                    f"{DOCKERFILE}: {word} {rest}: only the exec form ([...]) is understood"
                ) from None
            if word == "ENTRYPOINT":
                entrypoint = value
            else:
                cmd = value
    return ImageConfig(env, user, entrypoint, cmd, labels)


def check_image_config(
    declared: ImageConfig, built: Mapping[str, object], *, version: str, revision: str
) -> list[str]:
    """How the built image's config (``podman inspect``'s ``.Config``) differs from the
    Dockerfile's declaration, with ARGs substituted; empty when it matches.

    An ENV whose declared value refers to another variable (``PATH=/opt/x/bin:${PATH}``)
    must start with the part before the reference.
    """
    problems: list[str] = []
    args = {"VERSION": version, "GIT_REVISION": revision}

    def expand(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), value)

    raw_env = built.get("Env") or []
    env = dict(str(e).split("=", 1) for e in raw_env) if isinstance(raw_env, list) else {}
    for name, value in declared.env.items():
        want = expand(value)
        have = env.get(name)
        prefix = want.split("${", 1)[0]
        if have is None or ("${" in want and not have.startswith(prefix)):
            problems.append(f"ENV {name}: declared {value!r}, image has {have!r}")
        elif "${" not in want and have != want:
            problems.append(f"ENV {name}: declared {want!r}, image has {have!r}")
    if built.get("User") != declared.user:
        problems.append(f"USER: declared {declared.user!r}, image has {built.get('User')!r}")
    for field, want_list in (("Entrypoint", declared.entrypoint), ("Cmd", declared.cmd)):
        have_list = built.get(field) or []
        if list(want_list) != have_list:
            problems.append(f"{field}: declared {list(want_list)}, image has {have_list}")
    labels = built.get("Labels") or {}
    for name, value in declared.labels.items():
        have = labels.get(name) if isinstance(labels, dict) else None
        if have != expand(value):
            problems.append(f"LABEL {name}: declared {expand(value)!r}, image has {have!r}")
    return problems


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


def requirements(pyproject: str) -> list[str]:
    """The distribution's dependencies and its build-system requirements, as written."""
    data = tomllib.loads(pyproject)
    deps = [str(d) for d in data["project"].get("dependencies", [])]
    build = [str(r) for r in data.get("build-system", {}).get("requires", [])]
    return build + deps


def _files_under(root: Path, source: str) -> list[Path]:
    path = root / source.rstrip("/")
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ClusterError(f"{DOCKERFILE}: COPY {source}: {path} does not exist")
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def input_digest(root: Path, sources: Iterable[str], extra: Mapping[str, str]) -> str:
    """sha256 over the files below ``sources`` (paths relative to ``root``, and contents)
    and the ``extra`` facts (name, value): the image's cache key.

    Compiled bytecode and ``__pycache__`` are left out: they are not the source.
    """
    digest = hashlib.sha256()
    for name, value in sorted(extra.items()):
        digest.update(f"fact {name}={value}\0".encode())
    for source in sources:
        for path in _files_under(root, source):
            digest.update(f"file {path.relative_to(root)}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode())
    return digest.hexdigest()


def image_reference(version: str, key: str) -> str:
    """``docker.io/local/dra-driver:<version>-<first 12 of key>``."""
    return f"{REPOSITORY}:{version}-{key[:12]}"


# --- the built image ----------------------------------------------------------------------------


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


def _run(
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


def _key(*parts: str) -> str:
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
        return _run([*argv, *args], f"apt-get {args[0]}", cwd=cwd)


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


def _ensure_base(cache: Path, work: Path, progress: Progress) -> tuple[Path, str]:
    """The base root file system tar (cached) and its package list (``name=version`` lines)."""
    directory = cache / "driver-image" / f"base-{_key(str(RECIPE_REVISION), *BASE_PACKAGES)}"
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


def _ensure_wheels(cache: Path, reqs: Sequence[str], progress: Progress) -> tuple[Path, str]:
    """A directory of cp311 manylinux wheels for ``reqs`` (cached) and its file listing."""
    platforms = manylinux_platforms()
    directory = cache / "driver-image" / f"wheels-{_key(str(RECIPE_REVISION), *reqs, *platforms)}"
    listing = directory / "wheels.txt"
    if listing.is_file():
        return directory, listing.read_text()
    started = time.monotonic()
    progress(f"driver image: wheels: pip download {len(reqs)} requirements for cp311")
    shutil.rmtree(directory, ignore_errors=True)
    argv = [sys.executable, "-m", "pip", "download", "-q", "-d", str(directory)]
    argv += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    argv += ["--abi", "cp311", *(arg for p in platforms for arg in ("--platform", p)), *reqs]
    _run(argv, "pip download")
    text = "".join(f"{p.name}\n" for p in sorted(directory.glob("*.whl")))
    listing.write_text(text)
    progress(
        f"driver image: wheels: {text.count(chr(10))} wheels in {time.monotonic() - started:.1f} s"
    )
    return directory, text


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
        return _run(argv, f"podman {what}", env=self.env)


def _stage_context(root: Path, sources: Sequence[str], context: Path) -> None:
    """Copy exactly what the Dockerfile copies (what the key hashed) into ``context``."""
    for source in sources:
        for path in _files_under(root, source):
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
    _run(["bash", str(ENSURE_PODMAN)], "ensure podman")


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
    *, root: Path = REPO_ROOT, cache: Path | None = None, progress: Progress = _stderr_progress
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
        base_tar, packages = _ensure_base(cache, work, progress)
        wheels, wheel_list = _ensure_wheels(cache, requirements(pyproject), progress)
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
