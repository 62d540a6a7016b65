"""``/proc/<pid>/cgroup`` to pod and container (kubelet_plugin.usage.cgroups), for each
layout a kubelet and a container runtime make."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelet_plugin.usage import CgroupOwner, ProcCgroups, parse_cgroup

UID = "6f1c2b7a-1d2e-4f5a-9b8c-0d1e2f3a4b5c"
UNDERSCORED = UID.replace("-", "_")
CID = "3b" * 32


@pytest.mark.parametrize(
    "text",
    [
        # cgroupfs driver, cgroup v1: a line per hierarchy; Burstable, BestEffort, Guaranteed.
        f"12:memory:/kubepods/burstable/pod{UID}/{CID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n0::/\n",
        f"4:devices:/kubepods/besteffort/pod{UID}/{CID}\n",
        f"4:devices:/kubepods/pod{UID}/{CID}\n",
        # cgroupfs driver, cgroup v2.
        f"0::/kubepods/burstable/pod{UID}/{CID}\n",
        # systemd driver, cgroup v2: containerd, CRI-O, Docker (cri-dockerd).
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UNDERSCORED}.slice/cri-containerd-{CID}.scope\n",
        f"0::/kubepods.slice/kubepods-pod{UNDERSCORED}.slice/crio-{CID}.scope\n",
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UNDERSCORED}.slice/docker-{CID}.scope\n",
        # Read from inside a cgroup namespace: relative to its root.
        f"0::/../../kubepods-besteffort-pod{UNDERSCORED}.slice/cri-containerd-{CID}.scope\n",
        # A kind node: the kubelet's cgroups below the node container's.
        f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UNDERSCORED}.slice/cri-containerd-{CID}.scope\n",
    ],
    ids=[
        "cgroupfs-v1-burstable",
        "cgroupfs-v1-besteffort",
        "cgroupfs-v1-guaranteed",
        "cgroupfs-v2",
        "systemd-containerd",
        "systemd-crio",
        "systemd-docker",
        "cgroup-namespace",
        "kind-node",
    ],
)
def test_pod_and_container_of_each_layout(text: str) -> None:
    assert parse_cgroup(text) == CgroupOwner(UID, CID)


def test_a_process_in_the_pods_own_cgroup_has_no_container() -> None:
    assert parse_cgroup(f"0::/kubepods/burstable/pod{UID}\n") == CgroupOwner(UID, "")


@pytest.mark.parametrize(
    "text",
    [
        "0::/init.scope\n",
        "0::/system.slice/containerd.service\n",
        "0::/user.slice/user-0.slice/session-3.scope\n",
        "12:memory:/\n0::/\n",
        "",
        # Not a UID: a pod-like name is not enough.
        "0::/kubepods/burstable/podcast/" + CID + "\n",
    ],
)
def test_processes_outside_pods_have_no_owner(text: str) -> None:
    assert parse_cgroup(text) is None


def test_proc_reads_the_file_and_a_missing_pid_is_a_lookup_error(tmp_path: Path) -> None:
    (tmp_path / "41").mkdir()
    (tmp_path / "41" / "cgroup").write_text(f"0::/kubepods/pod{UID}/{CID}\n")
    cgroups = ProcCgroups(tmp_path)
    assert cgroups.owner(41) == CgroupOwner(UID, CID)
    with pytest.raises(ProcessLookupError):
        cgroups.owner(42)


def test_this_process_is_in_no_pod_on_the_real_proc() -> None:
    # The tests run on a host or in a container, not in a Kubernetes pod's cgroup.
    import os

    assert ProcCgroups().owner(os.getpid()) is None
