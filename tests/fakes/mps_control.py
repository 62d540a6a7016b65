"""A fake ``nvidia-cuda-mps-control`` for tests: :func:`install_fake_mps_control` writes it
into a driver root as an executable script, so the plugin runs it as it runs the real one.

It behaves like the real tool as far as the plugin uses it (NVIDIA's MPS documentation):

- ``-d`` daemonises: the command returns once the daemon runs in the background,
  in a session of its own, with the environment it was started with; a second
  ``-d`` on the same pipe directory fails, as the real one does;
- without ``-d`` it reads commands from stdin, one a line, sends each to the
  daemon found through ``CUDA_MPS_PIPE_DIRECTORY`` and prints the answer; with
  no daemon there it fails (exit 1) like the real client;
- ``quit`` makes the daemon exit; SIGTERM too;
- ``get_server_list`` prints the PIDs of the servers :func:`add_fake_server` made up,
  one a line.

Simplified: the real daemon talks over its own pipe and socket files and spawns
MPS servers for CUDA clients; the fake has one named pipe (``control``) with a
reply pipe per command, spawns no server and checks no command's arguments.
It records in ``<CUDA_MPS_LOG_DIRECTORY>/control.log``, and in
``<driver root>/mps-control.journal`` (which outlives the daemon's
directories, for the tests to read), one line when it starts
(``start pid=<pid> visible=<CUDA_VISIBLE_DEVICES> pipe=<dir> shm=<dev>:<inode>``, the
device and inode of the ``/dev/shm`` it sees) and one per
command (``cmd <command>``); the journal's lines start with the GPU UUID and a tab.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["add_fake_server", "install_fake_mps_control", "logged_commands", "logged_starts"]

_SCRIPT = r"""
import os, signal, sys, tempfile

pipe_dir = os.environ["CUDA_MPS_PIPE_DIRECTORY"]
log_dir = os.environ["CUDA_MPS_LOG_DIRECTORY"]
control = os.path.join(pipe_dir, "control")
SERVERS = os.path.join(log_dir, "fake-servers")


def record(line):
    with open(os.path.join(log_dir, "control.log"), "a") as out:
        out.write(line + "\n")
    with open(JOURNAL, "a") as out:
        out.write(os.environ.get("CUDA_VISIBLE_DEVICES", "") + "\t" + line + "\n")


def daemon_running():
    try:
        fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


def serve(ready_fd):
    if os.path.exists(control):
        os.unlink(control)
    os.mkfifo(control, 0o600)
    # Opened read-write: the daemon never sees end-of-file between clients.
    channel = os.fdopen(os.open(control, os.O_RDWR), "r", buffering=1)
    shm = os.stat("/dev/shm")
    record("start pid=%d visible=%s pipe=%s shm=%d:%d" % (
        os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", ""), pipe_dir, shm.st_dev, shm.st_ino))
    os.write(ready_fd, b"ok")
    os.close(ready_fd)
    for line in channel:
        reply_path, _, command = line.rstrip("\n").partition("\t")
        record("cmd " + command)
        answer = "\n"
        if command == "get_server_list" and os.path.exists(SERVERS):
            with open(SERVERS) as servers:
                answer = servers.read()
        with open(reply_path, "w") as reply:
            reply.write(answer)
        if command == "quit":
            os.unlink(control)
            os._exit(0)


def daemonise():
    if daemon_running():
        sys.stderr.write("An instance of this daemon is already running\n")
        sys.exit(1)
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        ok = os.read(read_fd, 2) == b"ok"
        sys.exit(0 if ok else 1)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    serve(write_fd)
    os._exit(0)


def client():
    for line in sys.stdin:
        command = line.strip()
        if not command:
            continue
        try:
            fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            sys.stderr.write("Cannot find MPS control daemon process\n")
            sys.exit(1)
        reply_path = tempfile.mktemp(prefix="reply-", dir=pipe_dir)
        os.mkfifo(reply_path, 0o600)
        try:
            os.write(fd, ("%s\t%s\n" % (reply_path, command)).encode())
            os.close(fd)
            with open(reply_path) as reply:
                sys.stdout.write(reply.read())
        finally:
            os.unlink(reply_path)


if sys.argv[1:] == ["-d"]:
    daemonise()
elif sys.argv[1:]:
    sys.stderr.write("fake nvidia-cuda-mps-control: unsupported arguments %r\n" % sys.argv[1:])
    sys.exit(2)
else:
    client()
"""


def install_fake_mps_control(driver_root: Path) -> Path:
    """Write the fake as ``<driver_root>/usr/bin/nvidia-cuda-mps-control``; returns its path."""
    path = driver_root / "usr" / "bin" / "nvidia-cuda-mps-control"
    path.parent.mkdir(parents=True, exist_ok=True)
    journal = driver_root / "mps-control.journal"
    path.write_text(f"#!{sys.executable}\nJOURNAL = {str(journal)!r}\n{_SCRIPT}")
    path.chmod(0o755)
    return path


def add_fake_server(log_dir: Path, pid: int) -> None:
    """Make the daemon whose ``CUDA_MPS_LOG_DIRECTORY`` is ``log_dir`` list ``pid`` as a
    running MPS server, as if a client had connected (the fake spawns none)."""
    with open(log_dir / "fake-servers", "a") as servers:
        servers.write(f"{pid}\n")


def _journal(driver_root: Path, uuid: str, prefix: str) -> list[str]:
    path = driver_root / "mps-control.journal"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        gpu, _, what = line.partition("\t")
        if gpu == uuid and what.startswith(prefix):
            found.append(what[len(prefix) :])
    return found


def logged_commands(driver_root: Path, uuid: str) -> list[str]:
    """The commands the daemons of GPU ``uuid`` received, in order, across restarts."""
    return _journal(driver_root, uuid, "cmd ")


def logged_starts(driver_root: Path, uuid: str) -> list[str]:
    """One line per start of a daemon of GPU ``uuid``:
    ``pid=<pid> visible=<uuid> pipe=<dir> shm=<dev>:<inode>``."""
    return _journal(driver_root, uuid, "start ")
