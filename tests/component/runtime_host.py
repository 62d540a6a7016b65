"""The host side of the CDI runtime tests: what a container printed, and the host state the
runtimes touch (device nodes, mounts, cgroups, shared CDI directories), with the helpers
that find and undo what a session left behind. See :mod:`runtime_fixtures`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import pytest

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
COMMAND_TIMEOUT_S: Final = 120.0


def cache_root() -> Path:
    return Path(os.environ.get("DRA_DRIVER_CACHE") or Path.home() / ".cache" / "dra-driver")


# --- container output ---------------------------------------------------------------------


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


# --- host state ---------------------------------------------------------------------------


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


# --- running set-up -----------------------------------------------------------------------


def stream_command(
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


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(
            f"{what} not run: it needs root (a rootful container runtime, device nodes made "
            "with mknod, specs in /var/run/cdi); run the test suite as root to include it"
        )
