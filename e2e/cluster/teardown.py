"""``down()``: stop everything a cluster's state file records and undo every host change.

It never stops at the first problem: it stops the kubelet, kills what runs in
the cluster's cgroups, stops containerd and its shims, unmounts, removes
cgroups, the bridge, CNI cache entries and log links, restores the host's
sysctls and shared paths when no other cluster's kubelet runs any more, stops
the control plane, and finally removes the directory; then it raises one
ClusterError listing whatever could not be undone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

from e2e.cluster import host
from e2e.cluster.errors import ClusterError
from e2e.cluster.processes import Daemon, pids_with_argument, stop_group
from e2e.cluster.state import ClusterRecord

__all__ = ["tear_down"]

CONTROL_PLANE_STOP_ORDER = ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


class _Step:
    """``with step(what):`` runs one teardown step; a failure is noted, and the next goes on."""

    def __init__(self, record: ClusterRecord) -> None:
        self.record = record
        self.failures: list[str] = []

    @contextlib.contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        try:
            yield
        except (ClusterError, OSError, subprocess.SubprocessError) as err:
            self.failures.append(f"{what}: {err}")
            self.record.say(f"teardown: {what} failed: {err}")


def _stop_node(record: ClusterRecord, daemons: dict[str, Daemon], step: _Step) -> None:
    """The kubelet, the containers, containerd and its shims, and every host change."""
    state, say, directory = record.state, record.say, record.directory
    if "kubelet" in daemons:
        with step("stop kubelet"):
            stop_group(daemons["kubelet"])
    if state.cgroup_root:
        with step(f"kill the processes of cgroup /{state.cgroup_root}"):
            killed = host.kill_cgroup_processes(state.cgroup_root)
            if killed:
                say(f"teardown: killed {killed} container processes")
    if "containerd" in daemons:
        with step("stop containerd"):
            stop_group(daemons["containerd"])
        with step("stop containerd's shims"):
            socket = str(record.node_paths.containerd_socket)
            for pid in pids_with_argument(socket):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
    with step(f"unmount everything below {directory}"):
        count = host.unmount_under(directory)
        if count:
            say(f"teardown: {count} mounts removed")
    if state.cgroup_root:
        with step(f"remove cgroup /{state.cgroup_root}"):
            host.remove_cgroup_root(state.cgroup_root)
    if state.bridge:
        with step(f"delete bridge {state.bridge}"):
            host.delete_link(state.bridge)
    if state.cni_network:
        with step("remove CNI cache entries"):
            host.remove_cni_cache(state.cni_network)
    with step("remove /var/log/containers links"):
        host.remove_container_log_links(record.node_paths.pod_logs)
    if state.host_recorded:
        with step("restore the host's sysctls and shared paths"):
            restored = host.restore_host_state()
            if restored is None:
                say("teardown: sysctls and shared paths left to another cluster's kubelet")
            else:
                if restored.sysctls:
                    say(f"teardown: restored {', '.join(restored.sysctls)}")
                if restored.kept_paths:
                    say(
                        f"teardown: kept {', '.join(restored.kept_paths)}: "
                        "in use or holding files of others"
                    )


def tear_down(record: ClusterRecord, *, keep_directory: bool = False) -> None:
    """Stop everything and undo every host change; remove the directory.

    Idempotent, and safe on a cluster that only half started. Every step is
    tried even when an earlier one failed; then a ClusterError lists the
    failures (and the directory is kept, for its logs). ``keep_directory``
    keeps it in any case.
    """
    state, say = record.state, record.say
    state.phase = "stopping"
    with contextlib.suppress(OSError):
        record.save()
    directory = record.directory
    step = _Step(record)

    t0 = time.monotonic()
    say(f"tearing down cluster {state.cluster_id} in {directory}")
    daemons = {d.name: d for d in record.daemons()}
    _stop_node(record, daemons, step)
    for name in CONTROL_PLANE_STOP_ORDER:
        if name in daemons:
            with step(f"stop {name}"):
                stop_group(daemons[name])
    failures = step.failures
    leftovers = [d.name for d in daemons.values() if d.alive()]
    if leftovers:
        failures.append(f"still running: {', '.join(leftovers)}")
    if failures:
        with contextlib.suppress(OSError):
            record.save()
        raise ClusterError(
            f"cluster {state.cluster_id}: teardown incomplete (state and logs kept in "
            f"{directory}):\n  " + "\n  ".join(failures)
        )
    if keep_directory:
        state.phase = "stopped"
        record.save()
    else:
        shutil.rmtree(directory, ignore_errors=True)
    say(f"cluster {state.cluster_id} torn down in {time.monotonic() - t0:.1f} s")
