"""Which pod and container a process belongs to, from its cgroup (``/proc/<pid>/cgroup``).

The kubelet puts each pod in a cgroup named after its UID and the container runtime puts
each container in one named after its ID, below the pod's. The names depend on the cgroup
driver and the runtime; the ones read here::

    cgroupfs driver (v1 or v2):  .../kubepods/burstable/pod<uid>/<container id>
                                 .../kubepods/pod<uid>/<container id>         (Guaranteed)
    systemd driver:              .../kubepods-burstable-pod<uid, _ for ->.slice/
                                     cri-containerd-<id>.scope | crio-<id>.scope | docker-<id>.scope
                                 (a kubelet with another cgroup root, as in a kind node,
                                 prefixes the slice: kubelet-kubepods-...-pod<uid>.slice)

A cgroup v1 file has a line per hierarchy (``12:memory:/kubepods/...``), a v2 file one
line (``0::/kubepods.slice/...``); the first line naming a pod decides. In a cgroup
namespace the path is relative (``0::/../../kubepods-...``), which the search allows.

PIDs come from NVML in the host's PID namespace: the reader must see the host's ``/proc``
(the plugin's pod needs ``hostPID: true``); otherwise a PID is not found, or is another
process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CgroupOwner", "ProcCgroups", "parse_cgroup"]

_UID: Final = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
#: The pod's directory, then the container's: its last path element.
_POD_CONTAINER: Final = re.compile(
    rf"(?:^|/)(?:[a-z]+-)*pod(?P<uid>{_UID})(?:\.slice)?"
    r"/(?:[a-z-]*?-)?(?P<id>[0-9a-f]{64})(?:\.scope)?/?$"
)
#: The pod's directory alone (a process of the pod outside any container's cgroup).
_POD: Final = re.compile(rf"(?:^|/)(?:[a-z]+-)*pod(?P<uid>{_UID})(?:\.slice)?(?:/|$)")


@dataclass(frozen=True, slots=True)
class CgroupOwner:
    """The pod (and container) a process's cgroup names."""

    pod_uid: str
    """With dashes, as in ``metadata.uid``."""
    container_id: str
    """The runtime's 64-hex container ID; empty when the cgroup is the pod's own."""


def parse_cgroup(text: str) -> CgroupOwner | None:
    """The pod and container named by the contents of a ``/proc/<pid>/cgroup`` file; None
    when no line names a pod (a host process, the kubelet plugin's own MPS daemon...)."""
    for line in text.splitlines():
        _, _, path = line.partition(":")
        _, _, path = path.partition(":")
        if match := _POD_CONTAINER.search(path):
            return CgroupOwner(match["uid"].replace("_", "-"), match["id"])
        if match := _POD.search(path):
            return CgroupOwner(match["uid"].replace("_", "-"), "")
    return None


class ProcCgroups:
    """Reads processes' cgroups under a ``/proc`` (the host's: see the module docstring)."""

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self._root = proc_root

    def owner(self, pid: int) -> CgroupOwner | None:
        """The process's pod and container, None when its cgroup names no pod.

        Raises ProcessLookupError when there is no such process to read (it ended, or
        this ``/proc`` is not the host PID namespace's).
        """
        try:
            text = (self._root / str(pid) / "cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            raise ProcessLookupError(pid) from None
        return parse_cgroup(text)
