"""The cluster's binaries: e2e/cluster/build.sh builds them once (or reuses its cache)
and prints the directory they are in; this runs it from Python."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final

from e2e.cluster.errors import ClusterError
from e2e.cluster.state import Progress, stderr_progress

__all__ = ["BUILD_SCRIPT", "REPO_ROOT", "build_binaries"]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILD_SCRIPT: Final = REPO_ROOT / "e2e" / "cluster" / "build.sh"


def build_binaries(progress: Progress = stderr_progress) -> Path:
    """Run e2e/cluster/build.sh (build or reuse the cached binaries); return the bin directory.

    A cold build compiles Kubernetes and takes minutes; the script's progress lines
    are passed to ``progress`` as they come. Raises ClusterError when it fails.
    """
    progress(f"building or reusing the cluster binaries with {BUILD_SCRIPT} (cold: minutes)")
    tail: list[str] = []
    with subprocess.Popen(
        ["bash", str(BUILD_SCRIPT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    ) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            progress(line.rstrip())
            tail = [*tail[-39:], line.rstrip()]
        out = proc.stdout.read().strip().splitlines()
    if proc.returncode != 0 or not out:
        raise ClusterError(
            f"{BUILD_SCRIPT} exited {proc.returncode}; last lines:\n"
            + "\n".join(f"    {line}" for line in tail)
        )
    return Path(out[-1])
