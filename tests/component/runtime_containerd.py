"""containerd 1.7 for the CDI runtime tests, driven over its CRI socket as the kubelet drives
it: the binaries ``e2e/cluster/build.sh`` caches, ``enable_cdi`` on with a private CDI
directory, and images loaded from an OCI archive made here. See :mod:`runtime_fixtures`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
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
from runtime_host import (
    COMMAND_TIMEOUT_S,
    ContainerOutput,
    absent,
    cache_root,
    remove_cgroup_trees,
    remove_empty_tree,
    report_created,
    require_root,
    unmount_all_under,
)
from runtime_podman import ensure_podman

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
CRI_BUSYBOX_IMAGE: Final = "docker.io/local/busybox:latest"
CRI_PAUSE_IMAGE: Final = "docker.io/local/pause:latest"
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
    require_root("the containerd CDI test")
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
