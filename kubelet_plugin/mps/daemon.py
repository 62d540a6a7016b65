"""One MPS control daemon: start it, talk to it through its control pipe, find it again, stop it.

The daemon is the driver's ``nvidia-cuda-mps-control`` run with ``-d`` (it
daemonises: the command returns once the daemon is up) in the environment
:meth:`MpsDaemon.environment` gives: ``CUDA_MPS_PIPE_DIRECTORY`` and
``CUDA_MPS_LOG_DIRECTORY`` of its GPU, ``CUDA_VISIBLE_DEVICES`` the GPU's UUID.
Commands go the way NVIDIA documents: the same binary without ``-d``, the
command on its stdin, the same environment (it finds the daemon by the pipe
directory).

A daemonised process is not the plugin's child, and outlives a plugin restart
on purpose (pods keep using it). So the plugin finds it by what it is: the
process whose ``/proc/<pid>/environ`` has this GPU's ``CUDA_MPS_PIPE_DIRECTORY``,
and records it in ``daemon.json`` next to the pipe directory: version, pid and
the process's start time (``/proc/<pid>/stat`` field 22), so a recycled pid is
never taken for the daemon (and never signalled).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from api.errors import DraDriverError
from dra_driver.cdi.mps import mps_host_dirs

__all__ = [
    "MpsDaemon",
    "MpsDaemonError",
    "ProcessRecord",
    "daemon_uuids",
    "is_gpu_uuid",
    "process_start_time",
]

log = logging.getLogger(__name__)

#: Schema version of ``daemon.json``.
RECORD_VERSION: Final = 1
RECORD_FILE: Final = "daemon.json"
#: How long a control command, a start or a ``quit`` may take before the plugin gives up.
COMMAND_TIMEOUT_S: Final = 10.0
_POLL_S: Final = 0.02
#: Runs a command in a mount namespace of its own whose /dev/shm is the directory that
#: follows: the daemon and the MPS servers it spawns share memory with their clients
#: there, which the CDI spec mounts at each client container's /dev/shm.
_OWN_SHM: Final = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    'mount --bind "$0" /dev/shm && exec "$@"',
)
_GPU_UUID_RE: Final = re.compile(r"GPU-[0-9A-Fa-f-]{1,64}")


class MpsDaemonError(DraDriverError):
    """Starting, commanding or stopping a daemon failed; a retry may succeed."""

    retryable = True


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A process as ``daemon.json`` keeps it: the pid and when it started (clock ticks)."""

    pid: int
    start_time: int


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def _boot_time() -> float:
    """When the node booted, in seconds since the epoch (``btime`` of ``/proc/stat``)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def is_gpu_uuid(uuid: str) -> bool:
    """Whether ``uuid`` looks like NVML's ``GPU-<hex and dashes>``: safe as a directory name."""
    return _GPU_UUID_RE.fullmatch(uuid) is not None


def process_start_time(pid: int) -> int | None:
    """The start time of a live, non-zombie process ``pid``; None when there is none."""
    found = _stat(pid)
    if found is None or found[0] in ("Z", "X"):
        return None
    return found[1]


def _reap(record: ProcessRecord) -> None:
    """Collect the daemon's exit status if it became this process's zombie child.

    A daemonised process is re-parented to PID 1, which the plugin is in its
    container: unreaped, every daemon that ended would stay a zombie. Only the
    recorded process, dead (state Z) with its own start time, is waited for, so
    no exit status of another child (a command running now) is taken.
    """
    if _stat(record.pid) != ("Z", record.start_time):
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(record.pid, os.WNOHANG)


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


class MpsDaemon:
    """The daemon of one GPU, under ``<mps root>/<uuid>``; not thread-safe (the caller locks).

    ``binary`` is ``nvidia-cuda-mps-control`` as this process sees it;
    ``library_path`` (the driver root's library directories) is its
    ``LD_LIBRARY_PATH`` when the driver is not installed in ``/``. ``<mps root>/<uuid>/shm``
    is always made (the CDI specs mount it at the clients' ``/dev/shm``); ``shared_shm``:
    the daemon runs in a mount namespace of its own with it as its ``/dev/shm`` too (needs
    ``CAP_SYS_ADMIN``, ``unshare`` and ``mount``: real GPUs, whose MPS servers share memory
    with their clients there).
    """

    def __init__(
        self,
        binary: Path,
        mps_root: Path,
        uuid: str,
        *,
        library_path: str | None = None,
        shared_shm: bool = False,
    ) -> None:
        if not is_gpu_uuid(uuid):
            # It names a directory the daemon's stop removes: never "/" or "..".
            raise ValueError(f"not a GPU UUID: {uuid!r}")
        self.uuid = uuid
        self.binary = binary
        self.base = mps_root / uuid
        host = mps_host_dirs(str(mps_root), uuid)
        self.dirs = host
        self._library_path = library_path
        self._shared_shm = shared_shm
        self.record: ProcessRecord | None = None

    def environment(self) -> dict[str, str]:
        """The daemon's environment (and that of every command sent to it)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CUDA_MPS_PIPE_DIRECTORY": self.dirs.pipe,
            "CUDA_MPS_LOG_DIRECTORY": self.dirs.log,
            "CUDA_VISIBLE_DEVICES": self.uuid,
        }
        if self._library_path:
            env["LD_LIBRARY_PATH"] = self._library_path
        return env

    # --- life -----------------------------------------------------------------------

    def alive(self) -> bool:
        """Whether the recorded process is still the daemon (same pid, same start time)."""
        record = self.record
        if record is None:
            return False
        if process_start_time(record.pid) == record.start_time:
            return True
        _reap(record)
        return False

    def adopt(self) -> bool:
        """Take the daemon a previous plugin process started, if it still runs; True if so.

        Reads ``daemon.json``; without one (or with a stale one) looks for the
        process by its pipe directory, so a crash between start and record loses nothing.
        """
        self.record = self._read_record()
        if self.alive():
            return True
        found = self._find()
        self.record = found
        if found is not None:
            self._write_record(found)
        return found is not None

    def recorded_this_boot(self) -> bool:
        """Whether ``daemon.json`` was written since the node booted: a daemon of this
        boot, running or not (a reboot ends every daemon and every client)."""
        try:
            written = Path(self.base, RECORD_FILE).stat().st_mtime
        except OSError:
            return False
        return written >= _boot_time()

    def start(self) -> None:
        """Start the daemon (its directories created); raises MpsDaemonError."""
        for directory in (self.dirs.pipe, self.dirs.log):
            Path(directory).mkdir(mode=0o755, parents=True, exist_ok=True)
        # Like /dev/shm: clients of any UID make their files there, none removes another's.
        Path(self.dirs.shm).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dirs.shm, 0o1777)
        argv = [str(self.binary), "-d"]
        if self._shared_shm:
            argv = [*_OWN_SHM, self.dirs.shm, *argv]
        try:
            done = subprocess.run(
                argv,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise MpsDaemonError(
                f"GPU {self.uuid}: starting {self.binary} -d failed: {err}"
            ) from err
        if done.returncode != 0:
            raise MpsDaemonError(
                f"GPU {self.uuid}: {self.binary} -d exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while (found := self._find()) is None:
            if time.monotonic() > deadline:
                raise MpsDaemonError(
                    f"GPU {self.uuid}: {self.binary} -d returned but no daemon with pipe "
                    f"directory {self.dirs.pipe} runs; see {self.dirs.log}/control.log"
                )
            time.sleep(_POLL_S)
        self.record = found
        self._write_record(found)
        log.info("GPU %s: MPS control daemon started (pid %d)", self.uuid, found.pid)

    def send(self, command: str) -> str:
        """Send one control command; returns what the daemon answered. Raises MpsDaemonError."""
        try:
            done = subprocess.run(
                [str(self.binary)],
                env=self.environment(),
                input=command + "\n",
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise MpsDaemonError(f"GPU {self.uuid}: MPS command {command!r}: {err}") from err
        if done.returncode != 0:
            raise MpsDaemonError(
                f"GPU {self.uuid}: MPS command {command!r} exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done.stdout

    def stop(self, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        """``quit`` through the pipe, then SIGTERM, then SIGKILL, each after ``timeout_s``.

        Removes the daemon's directories (no container uses them any more: the
        last claim is unprepared). Never raises for a daemon that is already gone.
        """
        if self.record is None:
            self.adopt()
        if self.alive():
            try:
                self.send("quit")
            except MpsDaemonError as err:
                log.warning("%s; signalling it", err)
            for signum in (None, signal.SIGTERM, signal.SIGKILL):
                if signum is not None and self.record is not None and self.alive():
                    log.warning(
                        "GPU %s: MPS daemon (pid %d) still runs; sending %s",
                        self.uuid,
                        self.record.pid,
                        signum.name,
                    )
                    os.kill(self.record.pid, signum)
                if self._gone_within(timeout_s):
                    break
        self.record = None
        shutil.rmtree(self.base, ignore_errors=True)
        log.info("GPU %s: MPS control daemon stopped", self.uuid)

    # --- helpers ----------------------------------------------------------------------

    def _gone_within(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def _find(self) -> ProcessRecord | None:
        name = self.binary.name
        with os.scandir("/proc") as entries:
            pids = [int(e.name) for e in entries if e.name.isdigit()]
        for pid in pids:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # argv[0] is the binary; for a script, its interpreter comes first.
            if not any(os.path.basename(os.fsdecode(arg)) == name for arg in argv[:2]):
                continue
            if _environ(pid).get("CUDA_MPS_PIPE_DIRECTORY") != self.dirs.pipe:
                continue
            started = process_start_time(pid)
            if started is not None:
                return ProcessRecord(pid=pid, start_time=started)
        return None

    def _read_record(self) -> ProcessRecord | None:
        try:
            data: Mapping[str, object] = json.loads(Path(self.base, RECORD_FILE).read_text())
            pid, started = data["pid"], data["startTime"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if data.get("version") != RECORD_VERSION:
            return None
        if not isinstance(pid, int) or not isinstance(started, int):
            return None
        return ProcessRecord(pid=pid, start_time=started)

    def _write_record(self, record: ProcessRecord) -> None:
        path = Path(self.base, RECORD_FILE)
        temporary = path.with_suffix(".tmp")
        content = {"version": RECORD_VERSION, "pid": record.pid, "startTime": record.start_time}
        with open(temporary, "w") as out:
            json.dump(content, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)


def daemon_uuids(mps_root: Path) -> list[str]:
    """The GPUs with a daemon directory under ``mps_root`` (started by this plugin, ever)."""
    if not mps_root.is_dir():
        return []
    with os.scandir(mps_root) as entries:
        return sorted(e.name for e in entries if e.is_dir() and is_gpu_uuid(e.name))
