"""Rootful podman with everything it keeps in one private directory.

Used by the component tests (podman reading our CDI specs) and by the driver
image build. On this kind of machine (no systemd, cgroup v1, no
CAP_SYS_RESOURCE; see the runtime notes) podman needs: cgroupfs, runc rather
than crun (crun 1.8 refuses hybrid cgroups), ulimits it may set, and a runc
whose state lives in the private directory too. podman's ``--runtime-flag``
does not reach the "container cleanup" process that conmon starts, so runc is
called through a wrapper that names its state root.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["podman_argv", "podman_environment", "write_podman_config"]


def podman_environment(state: Path) -> dict[str, str]:
    """The process environment that points podman at the configuration in ``state``."""
    return {
        **os.environ,
        "CONTAINERS_CONF": str(state / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(state / "storage.conf"),
    }


def write_podman_config(state: Path, runc: str) -> None:
    """Write containers.conf, storage.conf and the runc wrapper into ``state``."""
    (state / "tmp").mkdir(parents=True, exist_ok=True)
    wrapper = state / "runc"
    wrapper.write_text(f'#!/bin/sh\nexec {runc} --root {state}/runc-state "$@"\n')
    wrapper.chmod(0o755)
    (state / "containers.conf").write_text(
        "[containers]\n"
        # Raising RLIMIT_NOFILE/NPROC to podman's defaults needs CAP_SYS_RESOURCE
        # ("error setting rlimit type 7" without it); 1024 is allowed.
        'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'runtime = "runc"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{state}/events.log"\n'
        f'tmp_dir = "{state}/tmp"\n'
        f'volume_path = "{state}/volumes"\n'
        "[engine.runtimes]\n"
        f'runc = ["{wrapper}"]\n'
    )
    (state / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{state}/root"\nrunroot = "{state}/run"\n'
    )


def podman_argv(state: Path, *args: str) -> list[str]:
    """``podman`` with its root, run root and temp directory in ``state``, then ``args``."""
    return [
        "podman",
        "--root",
        f"{state}/root",
        "--runroot",
        f"{state}/run",
        "--tmpdir",
        f"{state}/tmp",
        *args,
    ]
