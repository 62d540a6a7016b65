"""Real container runtimes for the CDI tests: podman 4.3, and containerd 1.7 through its CRI.

Both run as root on this host, with every piece of state they can be told
about in a private temporary directory, and both are torn down so that nothing
is left running, mounted or registered afterwards:

- :func:`podman_session`: podman from Debian (``e2e/runtime/ensure_podman.sh``
  installs it when missing), private ``--root``/``--runroot``/``--tmpdir``, its
  own ``containers.conf`` and ``storage.conf`` (ulimits it may set without
  CAP_SYS_RESOURCE, runc, cgroupfs, events to a file), a busybox image imported from a cached
  rootfs tarball. Podman 4.3 has no setting for the CDI directories: it reads
  specs only from ``/etc/cdi`` and ``/var/run/cdi`` (:data:`PODMAN_CDI_ROOT`).
- :func:`containerd_session`: the containerd 1.7 that ``e2e/cluster/build.sh``
  caches under ``$DRA_DRIVER_CACHE/k8s-*/bin``, with ``enable_cdi`` on and a
  private CDI directory, driven over its CRI socket like the kubelet does.

What the runtimes put outside the private directory is undone by name:
containers' cgroups live under a parent cgroup unique to the session, spec
files carry a name unique to the run; ``/var/lib/containers`` (podman's
blob-info cache, which podman 4.3 always writes there) is removed when the
session created it; ``/var/run/cdi`` and ``/run/containerd`` (containerd 1.7's
shim sockets) only when the session created them, and only what is empty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from cri_client import CONTAINER_EXITED, NAMESPACE_NODE, CriClient, new

from e2e.runtime.podman_state import podman_argv, podman_environment, write_podman_config

__all__ = [
    "PODMAN_CDI_ROOT",
    "ContainerOutput",
    "ContainerdRuntime",
    "Podman",
    "containerd_session",
    "owned_cdi_files",
    "parse_char_devices",
    "parse_env",
    "podman_session",
    "replace_with_char_devices",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
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
#: containerd 1.7 puts shim sockets here whatever its state directory is.
CONTAINERD_RUN_DIR: Final = Path("/run/containerd")
#: containerd's and runc's default places, which the session's configuration replaces.
CONTAINERD_DEFAULT_STATE: Final = tuple(
    Path(p)
    for p in (
        "/var/lib/containerd",
        "/opt/containerd",
        "/run/containerd/runc",
        "/run/containerd/fifo",
        "/run/containerd/io.containerd.runtime.v2.task",
    )
)
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
BUSYBOX_IMAGE: Final = "localhost/dra-driver-busybox:test"
CRI_BUSYBOX_IMAGE: Final = "docker.io/local/busybox:latest"
CRI_PAUSE_IMAGE: Final = "docker.io/local/pause:latest"
COMMAND_TIMEOUT_S: Final = 120.0


def cache_root() -> Path:
    return Path(os.environ.get("DRA_DRIVER_CACHE") or Path.home() / ".cache" / "dra-driver")


# --- container output --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContainerOutput:
    """What a container printed and how it ended (the runtime's error in ``stderr``)."""

    exit_code: int
    stdout: str
    stderr: str


_LS_CHAR_DEVICE = re.compile(r"^c\S*\s+\d+\s+\S+\s+\S+\s+(\d+),\s*(\d+)\s.*\s(\S+)$")


def parse_char_devices(ls_output: str) -> dict[str, tuple[int, int]]:
    """Character devices in the output of busybox ``ls -l``: name to (major, minor)."""
    devices: dict[str, tuple[int, int]] = {}
    for line in ls_output.splitlines():
        match = _LS_CHAR_DEVICE.match(line.strip())
        if match:
            devices[match[3]] = (int(match[1]), int(match[2]))
    return devices


def parse_env(env_output: str) -> dict[str, str]:
    """``NAME=value`` lines of ``env`` output as a dict."""
    return dict(line.split("=", 1) for line in env_output.splitlines() if "=" in line)


# --- host state ----------------------------------------------------------------------------


def replace_with_char_devices(paths: Sequence[Path]) -> tuple[int, int]:
    """Turn each path into a character device with /dev/null's numbers; return them.

    CDI loaders ``stat()`` every device node's host path to fill in type and
    numbers, and refuse a regular file ("not a device node"), so the plain
    files the mock backend creates cannot be injected by a real runtime. A copy
    of /dev/null is harmless to write to, which also shows the devices cgroup
    lets the container use the node.
    """
    rdev = os.stat("/dev/null").st_rdev
    for path in paths:
        path.unlink(missing_ok=True)
        os.mknod(path, stat.S_IFCHR | 0o666, rdev)
        path.chmod(0o666)  # the umask narrowed it
    return os.major(rdev), os.minor(rdev)


def _unescape_mount_path(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory`` (from /proc/self/mountinfo), deepest first."""
    prefix = str(directory).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape_mount_path(line.split()[4])
        if point == str(directory) or point.startswith(prefix):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_all_under(directory: Path) -> list[str]:
    """Unmount (lazily) whatever is mounted below ``directory``; the mount points found."""
    points = mounts_under(directory)
    for point in points:
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    return points


def remove_cgroup_trees(parent: str) -> list[str]:
    """Remove the cgroup ``parent`` and its children in every v1/v2 hierarchy.

    Only empty cgroups can be removed; the ones that still hold processes are
    returned (a leak the caller reports).
    """
    busy: list[str] = []
    if not CGROUP_ROOT.is_dir():
        return busy
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        top = hierarchy / parent.strip("/")
        if not top.is_dir():
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            try:
                os.rmdir(directory)
            except OSError:
                busy.append(directory)
    return busy


def absent(paths: Sequence[Path]) -> list[Path]:
    """Those of ``paths`` that do not exist now."""
    return [path for path in paths if not os.path.lexists(path)]


def report_created(paths: Sequence[Path]) -> list[str]:
    """Of ``paths`` (absent at the start), those that exist now; their empty directories removed."""
    created = [path for path in paths if os.path.lexists(path)]
    for path in created:
        remove_empty_tree(path)
    return [f"created {path}" for path in created]


def remove_empty_tree(directory: Path) -> None:
    """Remove ``directory`` and the empty directories under it; keep anything holding files."""
    if not directory.is_dir():
        return
    for path, _, _ in sorted(os.walk(directory), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            os.rmdir(path)


@contextlib.contextmanager
def owned_cdi_files(cdi_root: Path, prefix: str) -> Iterator[Path]:
    """Use a shared CDI directory; at exit remove this session's specs (``<prefix>*``).

    Creates the directory when missing and then removes it again when it is
    empty; other drivers' and other runs' files are never touched.
    """
    created = not cdi_root.exists()
    cdi_root.mkdir(parents=True, exist_ok=True)
    try:
        yield cdi_root
    finally:
        for entry in cdi_root.iterdir() if cdi_root.is_dir() else ():
            # Temp files of an interrupted atomic write are ".<prefix>...".
            if entry.name.startswith((prefix, f".{prefix}")):
                entry.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                cdi_root.rmdir()


def _stream_command(
    config: pytest.Config, command: Sequence[str], *, show: bool, banner: str
) -> tuple[int, str, str]:
    """Run ``command``; show its stderr live on the terminal when ``show`` (pytest's capture off).

    Returns (exit status, stdout, stderr).
    """
    capture: Any = config.pluginmanager.getplugin("capturemanager")
    context: contextlib.AbstractContextManager[Any] = (
        capture.global_and_fixture_disabled()
        if show and capture is not None
        else contextlib.nullcontext()
    )
    lines: list[str] = []
    with context:
        if show:
            print(f"\n{banner}", file=sys.stderr, flush=True)
        with subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as process:
            assert process.stderr is not None and process.stdout is not None
            for line in process.stderr:
                lines.append(line)
                if show:
                    sys.stderr.write(line)
                    sys.stderr.flush()
            stdout = process.stdout.read()
            code = process.wait()
    return code, stdout, "".join(lines)


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(
            f"{what} not run: it needs root (a rootful container runtime, device nodes made "
            "with mknod, specs in /var/run/cdi); run the test suite as root to include it"
        )


# --- podman ---------------------------------------------------------------------------------


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
    _require_root("the podman CDI test")
    cached = cache_root() / "runtime" / "busybox-rootfs.tar"
    quiet = bool(shutil.which("podman") and shutil.which("runc") and cached.is_file())
    code, stdout, stderr = _stream_command(
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


# --- containerd -----------------------------------------------------------------------------

_CONTAINERD_BINARIES: Final = ("containerd", "containerd-shim-runc-v2", "ctr", "runc")


def find_containerd_bin() -> Path | None:
    """The newest ``k8s-*/bin`` of the cache holding containerd, its shim, ctr and runc."""
    candidates = sorted(cache_root().glob("k8s-*/bin"))
    for bin_dir in reversed(candidates):
        if all(os.access(bin_dir / name, os.X_OK) for name in _CONTAINERD_BINARIES):
            return bin_dir
    return None


def _oci_archive(rootfs_tar: Path, images: dict[str, list[str]]) -> bytes:
    """An OCI image-layout tarball: one layer (the rootfs tar), one image per name and command.

    ``ctr images import`` names each image by its ``io.containerd.image.name``
    annotation, so no registry and no image tool is needed.
    """
    layer = rootfs_tar.read_bytes()
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    blobs: dict[str, bytes] = {layer_digest: layer}
    manifests = []

    def add_blob(document: dict[str, Any]) -> tuple[str, int]:
        data = json.dumps(document, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return digest, len(data)

    for name, command in images.items():
        config_digest, config_size = add_blob(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Env": ["PATH=/bin"], "Cmd": command},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }
        )
        manifest_digest, manifest_size = add_blob(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": config_size,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            }
        )
        manifests.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                },
            }
        )
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps({"schemaVersion": 2, "manifests": manifests}).encode(),
        **{f"blobs/sha256/{digest.split(':')[1]}": data for digest, data in blobs.items()},
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _cri_log_lines(path: Path) -> tuple[str, str]:
    """stdout and stderr of a CRI log file (``<time> <stream> <P|F> <text>`` lines)."""
    streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
    partial: dict[str, str] = {"stdout": "", "stderr": ""}
    for line in path.read_text().splitlines():
        _, stream, tag, text = [*line.split(" ", 3), "", ""][:4]
        if stream not in streams:
            continue
        if tag == "P":
            partial[stream] += text
        else:
            streams[stream].append(partial[stream] + text)
            partial[stream] = ""
    return "\n".join(streams["stdout"]), "\n".join(streams["stderr"])


class ContainerdRuntime:
    """containerd 1.7 with CDI on, confined to ``state_dir``; runs pods over the CRI."""

    def __init__(self, bin_dir: Path, state_dir: Path, cdi_root: Path, cgroup_parent: str) -> None:
        self.bin_dir = bin_dir
        self.state_dir = state_dir
        self.cdi_root = cdi_root
        self.cgroup_parent = cgroup_parent
        self.socket = state_dir / "containerd.sock"
        self.log_path = state_dir / "containerd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.cri: CriClient | None = None

    def write_config(self) -> Path:
        state = self.state_dir
        for sub in ("net.d", "logs"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        self.cdi_root.mkdir(parents=True, exist_ok=True)
        path = state / "config.toml"
        path.write_text(
            f"""version = 2
root = "{state}/root"
state = "{state}/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{state}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  enable_cdi = true
  cdi_spec_dirs = ["{self.cdi_root}"]
  sandbox_image = "{CRI_PAUSE_IMAGE}"
  # Lowering a sandbox's oom_score_adj needs CAP_SYS_RESOURCE, which this host lacks.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "{state}/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{state}/runc"
"""
        )
        return path

    def start(self) -> None:
        """Start containerd and wait until its CRI answers; fails the test with its log if not."""
        config = self.write_config()
        env = {**os.environ, "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.bin_dir / "containerd"), "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.cri = CriClient(str(self.socket), timeout_s=COMMAND_TIMEOUT_S)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"containerd exited {self.process.returncode}:\n{self._log_tail()}")
            if self.socket.exists():
                try:
                    self.cri.version()
                    return
                except grpc.RpcError:
                    pass
            if time.monotonic() > deadline:
                pytest.fail(f"containerd's CRI did not answer in 60 s:\n{self._log_tail()}")
            time.sleep(0.1)

    def _log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def import_images(self, rootfs_tar: Path) -> None:
        """Load the busybox image and a pause image (busybox sleeping) into namespace k8s.io."""
        archive = self.state_dir / "images.tar"
        archive.write_bytes(
            _oci_archive(
                rootfs_tar,
                {
                    CRI_BUSYBOX_IMAGE: ["/bin/sh"],
                    CRI_PAUSE_IMAGE: ["/bin/sleep", "2147483647"],
                },
            )
        )
        ctr = [str(self.bin_dir / "ctr"), "--address", str(self.socket), "--namespace", "k8s.io"]
        result = subprocess.run(
            [*ctr, "images", "import", str(archive)],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        assert result.returncode == 0, f"ctr images import failed: {result.stderr}"

    def run_container(
        self, name: str, script: str, *, cdi_devices: Sequence[str] = ()
    ) -> ContainerOutput:
        """Run ``sh -c script`` in a new host-network pod, as the kubelet would, then remove both.

        ``cdi_devices`` go in ``ContainerConfig.CDI_devices``. A CRI call that
        fails before the container runs (an unresolvable CDI device, say) gives
        exit code -1 and the runtime's message as stderr.
        """
        assert self.cri is not None
        log_dir = self.state_dir / "logs" / name
        log_dir.mkdir(parents=True)
        sandbox_config = new(
            "PodSandboxConfig",
            metadata={"name": name, "uid": str(uuid.uuid4()), "namespace": "default"},
            log_directory=str(log_dir),
            linux={
                "cgroup_parent": self.cgroup_parent,
                "security_context": {"namespace_options": {"network": NAMESPACE_NODE}},
            },
        )
        sandbox_id = self.cri.call(
            "RunPodSandbox", new("RunPodSandboxRequest", config=sandbox_config)
        ).pod_sandbox_id
        container_id = ""
        try:
            container_id = self.cri.call(
                "CreateContainer",
                new(
                    "CreateContainerRequest",
                    pod_sandbox_id=sandbox_id,
                    config={
                        "metadata": {"name": name},
                        "image": {"image": CRI_BUSYBOX_IMAGE},
                        "command": ["sh", "-c", script],
                        "log_path": "container.log",
                        "CDI_devices": [{"name": device} for device in cdi_devices],
                    },
                    sandbox_config=sandbox_config,
                ),
            ).container_id
            self.cri.call("StartContainer", new("StartContainerRequest", container_id=container_id))
            status = self._wait_exited(container_id)
            stdout, stderr = _cri_log_lines(log_dir / "container.log")
            return ContainerOutput(status.exit_code, stdout, stderr)
        except grpc.RpcError as err:
            return ContainerOutput(-1, "", f"{err.code()}: {err.details()}")
        finally:
            if container_id:
                self.cri.call(
                    "RemoveContainer", new("RemoveContainerRequest", container_id=container_id)
                )
            self.cri.call("StopPodSandbox", new("StopPodSandboxRequest", pod_sandbox_id=sandbox_id))
            self.cri.call(
                "RemovePodSandbox", new("RemovePodSandboxRequest", pod_sandbox_id=sandbox_id)
            )

    def _wait_exited(self, container_id: str) -> Any:
        assert self.cri is not None
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while True:
            status = self.cri.call(
                "ContainerStatus", new("ContainerStatusRequest", container_id=container_id)
            ).status
            if status.state == CONTAINER_EXITED:
                return status
            assert time.monotonic() < deadline, f"container {container_id} still running"
            time.sleep(0.05)

    def stop(self) -> list[str]:
        """Stop containerd and the shims it started; the processes that had to be killed."""
        if self.cri is not None:
            self.cri.close()
        killed: list[str] = []
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                killed.append(f"containerd {self.process.pid}")
        # Shims outlive containerd by design; ours name our socket on their command line.
        for pid in _pids_mentioning(str(self.socket)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(f"shim {pid}")
        return killed


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def containerd_session(config: pytest.Config, run_token: str) -> Iterator[ContainerdRuntime]:
    """containerd 1.7 from the cluster build's cache, running, with the busybox images loaded.

    Skips (loudly) when the cache has no containerd (``e2e/cluster/build.sh``
    builds it) or when not root. At exit: containerd and its shims stopped,
    leftover mounts unmounted, the session's cgroups removed, the directory
    deleted, and the empty directories it made under /run/containerd removed.
    Raises AssertionError at exit when something had been left behind.
    """
    _require_root("the containerd CDI test")
    bin_dir = find_containerd_bin()
    if bin_dir is None:
        pytest.skip(
            "containerd CDI test not run: no containerd 1.7 under "
            f"{cache_root()}/k8s-*/bin; run e2e/cluster/build.sh to build the cluster's binaries"
        )
    rootfs = ensure_podman(config)
    run_dir_existed = CONTAINERD_RUN_DIR.exists()
    watched = absent(CONTAINERD_DEFAULT_STATE)
    state_dir = Path(tempfile.mkdtemp(prefix="dra-ctrd-"))
    runtime = ContainerdRuntime(
        bin_dir, state_dir, state_dir / "cdi", cgroup_parent=f"/dra-driver-{run_token}-cri"
    )
    leftovers: list[str] = []
    try:
        runtime.start()
        runtime.import_images(rootfs)
        yield runtime
    finally:
        leftovers += runtime.stop()
        leftovers += [f"mount {p}" for p in unmount_all_under(state_dir)]
        leftovers += [f"cgroup {c}" for c in remove_cgroup_trees(runtime.cgroup_parent)]
        shutil.rmtree(state_dir, ignore_errors=True)
        leftovers += report_created(watched)
        if not run_dir_existed:
            remove_empty_tree(CONTAINERD_RUN_DIR)
    assert not leftovers, f"containerd left these behind (now cleaned up): {leftovers}"
