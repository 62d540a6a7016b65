"""Every change the node makes to the host, with the code that undoes it.

Host state the node touches, all named after the cluster id so that two
clusters on one machine do not collide, and all undone by ``down``:

- a cgroup ``/<cgroup root>`` in every v1 hierarchy (the kubelet's cgroupRoot:
  every pod cgroup lives below it);
- a Linux bridge ``dra<id>`` with a /24 of its own; its gateway address is the
  node's InternalIP (the kubelet refuses a loopback node IP);
- network namespaces, kept under containerd's state directory
  (``netns_mounts_under_state_dir``) instead of /var/run/netns;
- mounts below the cluster directory (overlay snapshots, sandbox /dev/shm,
  projected volumes, the kubelet's rshared bind mount of its root);
- ``/var/log/containers`` symlinks into the cluster's pod logs, and the CNI
  result cache files of the cluster's network under ``/var/lib/cni``.

Two things are the host's, not one cluster's, and clusters may overlap: the
sysctls the kubelet sets when it starts, and the SHARED_HOST_PATHS the node's
programs create where they were not told otherwise (``/run/containerd/s`` for
shim sockets, ``/var/lib/kubelet/device-plugins``...). HOST_RECORD keeps their
state from before the first of the overlapping clusters started; the last one
to stop (no kubelet runs any more) restores it and removes the record.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from e2e.cluster.errors import ClusterError

__all__ = [
    "CGROUP_MOUNT",
    "HOST_RECORD",
    "KUBELET_SYSCTLS",
    "SHARED_HOST_PATHS",
    "HostRestore",
    "choose_subnet",
    "create_bridge",
    "create_cgroup_root",
    "delete_link",
    "kill_cgroup_processes",
    "mounts_under",
    "read_sysctls",
    "record_host_state",
    "remove_cgroup_root",
    "remove_cni_cache",
    "remove_container_log_links",
    "remove_created_host_paths",
    "restore_host_state",
    "restore_sysctls",
    "running_programs",
    "unmount_under",
]

CGROUP_MOUNT = Path("/sys/fs/cgroup")

# The sysctls the kubelet sets at start-up unless protectKernelDefaults is on
# (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables).
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
HOST_RECORD = Path("/run/dra-local-cluster.json")
# Host paths the node's programs create on first use, with the programs that use
# them: removed when a local cluster created them and none of those programs runs.
SHARED_HOST_PATHS: Mapping[str, tuple[str, ...]] = {
    # containerd 1.7 hard-codes the shim sockets' directory /run/containerd/s.
    "/run/containerd": ("containerd", "containerd-shim-runc-v2"),
    # The kubelet's device-plugin manager hard-codes /var/lib/kubelet/device-plugins.
    "/var/lib/kubelet": ("kubelet",),
    "/var/log/containers": ("kubelet",),  # the kubelet's links to container logs
    "/var/lib/cni": ("containerd", "podman", "conmon"),  # libcni's result cache
}
CONTAINER_LOG_LINKS = Path("/var/log/containers")
CNI_CACHE = Path("/var/lib/cni/results")
# Files the node's components leave in the shared host paths once stopped: the
# device-plugin manager's socket and checkpoint. Sockets of any name also go.
DISPOSABLE_FILES = frozenset({"kubelet_internal_checkpoint"})


# --- the pods' network -------------------------------------------------------------------------


def choose_subnet(seed: str) -> ipaddress.IPv4Network:
    """A /24 in 10.244.0.0/16 that no route or address of this host overlaps.

    The search starts at a place derived from ``seed`` (the cluster id), so two
    clusters started at the same moment are unlikely to race for one subnet.
    Raises ClusterError when all 254 are taken.
    """
    used = [
        ipaddress.ip_network(word, strict=False)
        for word in subprocess.run(
            ["ip", "-4", "-o", "route", "show", "table", "all"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+(/\d+)?", word)
    ]
    start = sum(seed.encode()) % 254
    for offset in range(254):
        candidate = ipaddress.IPv4Network(f"10.244.{(start + offset) % 254 + 1}.0/24")
        if not any(candidate.overlaps(net) for net in used if net.prefixlen > 0):
            return candidate
    raise ClusterError("node: every /24 of 10.244.0.0/16 is in use on this host; remove some")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ClusterError(f"node: ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def create_bridge(name: str, subnet: ipaddress.IPv4Network) -> str:
    """Create the pods' bridge with the subnet's first address; return that address.

    The CNI bridge plugin would create it with the first pod; creating it first
    gives the kubelet a non-loopback node IP that belongs to this cluster only.
    """
    gateway = str(next(subnet.hosts()))
    _ip("link", "add", name, "type", "bridge")
    _ip("addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", name)
    _ip("link", "set", name, "up")
    return gateway


def delete_link(name: str) -> bool:
    """Delete a network link; False when there was none."""
    if _ip("link", "show", name, check=False).returncode != 0:
        return False
    _ip("link", "delete", name)
    return True


# --- cgroups ----------------------------------------------------------------------------------


def _hierarchies() -> list[Path]:
    """Every cgroup hierarchy mounted under /sys/fs/cgroup (v1 controllers and unified)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] in ("cgroup", "cgroup2") and fields[1].startswith(f"{CGROUP_MOUNT}/"):
            found.append(Path(fields[1]))
    return found


def create_cgroup_root(name: str) -> None:
    """Create ``/<name>`` in every v1 hierarchy (the kubelet requires its cgroupRoot to exist).

    cpuset children start with no CPUs and no memory nodes; ours gets the parent's.
    """
    for hierarchy in _hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / knob).exists():
                (path / knob).write_text((hierarchy / knob).read_text())


def _cgroup_dirs(name: str) -> list[Path]:
    """Every cgroup directory at or below ``/<name>``, deepest first."""
    dirs: list[Path] = []
    for hierarchy in _hierarchies():
        top = hierarchy / name
        if top.is_dir():
            dirs.extend(Path(d) for d, _, _ in os.walk(top))
    return sorted(dirs, key=lambda p: len(p.parts), reverse=True)


def kill_cgroup_processes(name: str, *, timeout_s: float = 10.0) -> int:
    """SIGKILL every process in a cgroup at or below ``/<name>``; return how many.

    These are the containers: once the kubelet is gone nothing else would stop them.
    """
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        pids: set[int] = set()
        for cgroup in _cgroup_dirs(name):
            try:
                text = (cgroup / "cgroup.procs").read_text()
            except OSError:
                continue
            pids.update(int(p) for p in text.split())
        if not pids:
            return len(killed)
        if time.monotonic() > deadline:
            raise ClusterError(f"node: processes {sorted(pids)} in cgroup /{name} survive SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def remove_cgroup_root(name: str, *, timeout_s: float = 10.0) -> int:
    """Remove ``/<name>`` and everything below it in every hierarchy; return how many dirs.

    A cgroup can be removed only once its last process has been reaped, which
    takes a moment after SIGKILL; rmdir is retried until ``timeout_s``.
    """
    removed = 0
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = _cgroup_dirs(name)
        if not remaining:
            return removed
        for cgroup in remaining:
            try:
                cgroup.rmdir()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise ClusterError(
                f"node: cgroups {[str(p) for p in _cgroup_dirs(name)]} cannot be removed"
            )
        if _cgroup_dirs(name):
            time.sleep(0.1)


# --- mounts -----------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    # /proc/self/mounts escapes space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, deepest (most recently mounted) first."""
    prefix = str(directory).rstrip("/")
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = _unescape(line.split()[1])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(Path(point))
    # Later lines were mounted later; a later mount may sit on top of an earlier one.
    return list(reversed(points))


def unmount_under(directory: Path, *, timeout_s: float = 10.0) -> int:
    """Unmount everything at or below ``directory``; return how many unmounts it took.

    A busy mount is detached lazily (``umount -l``): the processes holding it
    are gone by now, and a lazy unmount cannot fail for a reference that an
    exiting process is still dropping.
    """
    count = 0
    deadline = time.monotonic() + timeout_s
    while points := mounts_under(directory):
        for point in points:
            result = subprocess.run(["umount", str(point)], capture_output=True, check=False)
            if result.returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
            count += 1
        if time.monotonic() > deadline:
            raise ClusterError(f"node: cannot unmount {[str(p) for p in mounts_under(directory)]}")
    return count


# --- sysctls, logs, CNI cache ---------------------------------------------------------------


def read_sysctls(names: Iterable[str] = KUBELET_SYSCTLS) -> dict[str, str]:
    """Current values of ``names`` (paths below /proc/sys); absent ones are skipped."""
    values = {}
    for name in names:
        try:
            values[name] = (Path("/proc/sys") / name).read_text().strip()
        except OSError:
            continue
    return values


def restore_sysctls(values: Mapping[str, str]) -> list[str]:
    """Write back values from ``read_sysctls``; return those that changed."""
    changed = []
    for name, value in values.items():
        path = Path("/proc/sys") / name
        try:
            if path.read_text().strip() != value:
                path.write_text(value + "\n")
                changed.append(name)
        except OSError:
            continue
    return changed


@contextlib.contextmanager
def _host_record_lock() -> Iterator[None]:
    with open(HOST_RECORD.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def record_host_state() -> None:
    """Before a node starts: record the sysctls and which shared host paths are missing.

    A record left by a cluster that still runs (or did not stop cleanly) holds
    the originals: its sysctls are kept, and only paths missing now are added.
    """
    with _host_record_lock():
        try:
            record = json.loads(HOST_RECORD.read_text())
        except (OSError, ValueError):
            record = {"sysctls": read_sysctls(), "created_paths": []}
        missing = [p for p in SHARED_HOST_PATHS if not Path(p).exists()]
        record["created_paths"] = sorted(set(record["created_paths"]) | set(missing))
        tmp = HOST_RECORD.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        tmp.replace(HOST_RECORD)


@dataclass(frozen=True, slots=True)
class HostRestore:
    """What ``restore_host_state`` did."""

    sysctls: list[str]
    """Sysctls written back."""
    kept_paths: list[str]
    """Shared paths left in place: in use, or holding someone else's files."""


def restore_host_state() -> HostRestore | None:
    """After a node stopped: restore the record's sysctls and remove the paths it lists.

    None, and nothing done, while another kubelet still runs: the last cluster
    to stop restores the host.
    """
    with _host_record_lock():
        if "kubelet" in running_programs():
            return None
        try:
            record = json.loads(HOST_RECORD.read_text())
        except (OSError, ValueError):
            return HostRestore([], [])
        changed = restore_sysctls(record.get("sysctls") or {})
        kept = remove_created_host_paths(
            {p: SHARED_HOST_PATHS.get(p, ()) for p in record.get("created_paths") or []}
        )
        HOST_RECORD.unlink(missing_ok=True)
    HOST_RECORD.with_suffix(".lock").unlink(missing_ok=True)
    return HostRestore(changed, kept)


def remove_container_log_links(pod_logs: Path) -> int:
    """Remove the kubelet's /var/log/containers symlinks that point into ``pod_logs``."""
    removed = 0
    if not CONTAINER_LOG_LINKS.is_dir():
        return 0
    for link in CONTAINER_LOG_LINKS.iterdir():
        if link.is_symlink() and os.readlink(link).startswith(f"{pod_logs}/"):
            link.unlink(missing_ok=True)
            removed += 1
    return removed


def remove_cni_cache(network: str) -> int:
    """Remove libcni's cached results for ``network`` (``<network>-<container>-<if>``)."""
    removed = 0
    if CNI_CACHE.is_dir():
        for entry in CNI_CACHE.glob(f"{network}-*"):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def running_programs() -> set[str]:
    """The executable names of every process on this host."""
    names = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                names.add(Path(os.readlink(entry / "exe")).name)
    return names


def remove_created_host_paths(created: Mapping[str, Iterable[str]]) -> list[str]:
    """Remove shared host paths this cluster created; return those kept.

    ``created`` maps each path (/run/containerd ...) to the programs that may
    use it. A path is kept while one of them runs (another cluster's, or a
    test's), or when it holds anything but directories, sockets and the
    device-plugin checkpoint: that is someone else's.
    """
    running = running_programs() if created else set()
    kept = []
    for name, users in created.items():
        top = Path(name)
        if not top.exists():
            continue
        if running.intersection(users):
            kept.append(name)
            continue
        files = [Path(d) / f for d, _, fs in os.walk(top) for f in fs]
        if any(not (f.is_socket() or f.name in DISPOSABLE_FILES) for f in files):
            kept.append(name)
            continue
        for f in files:
            f.unlink(missing_ok=True)
        for d, _, _ in sorted(os.walk(top), key=lambda w: len(Path(w[0]).parts), reverse=True):
            Path(d).rmdir()
    return kept
