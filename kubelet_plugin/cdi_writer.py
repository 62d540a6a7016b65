"""CDI files on disk: writing and removing claim specs atomically, finding the host files they name.

A container runtime may read the CDI root at any moment, so a spec file is
either absent or complete: it is written to a temporary file in the same
directory (a dot-name ending ``.tmp``, which CDI loaders ignore because they read
only ``*.json`` and ``*.yaml``), fsynced, renamed over the final name, and the
directory is fsynced so the rename survives a power cut. :func:`write_atomically`
is the same dance for any file; the checkpoint store uses it too.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Final

from api.checkpoint import spec_digest
from dra_driver.cdi import (
    CONTROL_DEVICE_NODES,
    DRIVER_BINARY_DIRS,
    DRIVER_LIBRARY_DIRS,
    FIRMWARE_DIR,
    PERSISTENCED_SOCKET,
    HostFiles,
    select_driver_files,
)
from kubelet_plugin.plugin_dirs import (
    CDI_ROOT_MODE,
    CDI_SPEC_MODE,
    PathOutsideRootError,
    contained_path,
    ensure_directory,
    path_in_root,
)

__all__ = [
    "MAX_SPEC_BYTES",
    "TEMP_SUFFIX",
    "CdiWriter",
    "ForeignFileError",
    "read_own_file",
    "remove_durably",
    "remove_stale_temp_files",
    "scan_host_files",
    "sync_directory",
    "write_atomically",
]

log = logging.getLogger(__name__)

#: Suffix of the temporary files :func:`write_atomically` creates (with a leading dot).
TEMP_SUFFIX: Final = ".tmp"
#: The largest spec file read back. A claim's spec names its devices and the driver's
#: files, some kilobytes; anything larger is not the plugin's, and is not read whole.
MAX_SPEC_BYTES: Final = 16 * 2**20


class ForeignFileError(Exception):
    """A path the plugin reads back holds something it never writes there.

    The message completes "<path> ...": it is a symbolic link, is not a regular
    file, or is larger than the plugin writes.
    """


def read_own_file(path: Path, limit: int) -> bytes:
    """The bytes at ``path``, once they are a regular file of at most ``limit`` bytes.

    Opened without following a symbolic link (it may lead anywhere: ``/dev/zero``
    reads without end) and without blocking on a FIFO; at most ``limit + 1``
    bytes are read. Raises ForeignFileError for anything else there,
    FileNotFoundError when nothing is there, OSError when reading fails.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ForeignFileError("is a symbolic link") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ForeignFileError("is not a regular file (a directory, FIFO or device)")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ForeignFileError(f"is larger than {limit} bytes, more than the plugin writes")
    return data


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    sync_directory: bool = True,
    sync_file: bool = True,
) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, never a mix.

    Temp file ``.<name>.<random>.tmp`` in the same directory, write, fsync,
    chmod ``mode``, rename, fsync the directory. On any error the temp file is
    removed and the old file is untouched; the OSError propagates.

    ``sync_directory=False`` leaves out the last fsync: the file is still never
    torn, but after a power cut the rename may be lost (the old file is back).
    Use it only where a later synced write covers the loss. ``sync_file=False`` leaves
    out the file's fsync too: running readers still see the old file or the new one, but
    after a power cut the file may be empty; only for a file that start-up after a reboot
    checks and writes again.
    """
    directory = path.parent
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=directory)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if sync_file:
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    if sync_directory:
        _fsync_directory(directory)


def sync_directory(directory: Path) -> None:
    """fsync a directory: makes renames and removals in it survive a power cut."""
    _fsync_directory(directory)


def remove_durably(path: Path) -> bool:
    """Remove ``path`` and fsync its directory; False when it did not exist.

    A parent that is not a directory counts as "did not exist" too: no file can be there.
    So does a name missing from a read-only file system, which refuses the unlink
    (EROFS) before looking: a spec never written there is no cleanup to retry.
    """
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        if err.errno == errno.EROFS and not os.path.lexists(path):
            return False
        raise
    _fsync_directory(path.parent)
    return True


def remove_stale_temp_files(directory: Path, prefix: str = "") -> list[Path]:
    """Remove temp files of :func:`write_atomically` left by a crash; call before serving.

    Only names ``.<prefix>*.tmp`` are touched, so other writers' files in a
    shared directory stay.
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if entry.name.startswith(f".{prefix}") and entry.name.endswith(TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    if removed:
        _fsync_directory(directory)
    return removed


class CdiWriter:
    """The claim spec files of one driver in one CDI root directory.

    ``driver_name`` limits what :meth:`spec_files` and temp-file cleanup look
    at to this driver's files (``<driver>-*.json``); the directory may be shared
    with other drivers and the admin's own specs.

    Every name goes through :func:`~kubelet_plugin.plugin_dirs.path_in_root`:
    a name that would leave the root (a claim UID with ``/``) raises
    :class:`~kubelet_plugin.plugin_dirs.PathOutsideRootError` before anything
    is touched. Specs are mode 0644 and a root the writer creates 0755, whatever
    the umask: the container runtime reads them, only the plugin writes.
    """

    def __init__(self, root: Path, driver_name: str) -> None:
        self.root = root
        self.driver_name = driver_name

    def path(self, file_name: str) -> Path:
        """``<root>/<file_name>``; raises PathOutsideRootError unless it is one plain name."""
        return path_in_root(self.root, file_name, what="CDI spec file name")

    def recorded_spec(self, recorded: str) -> Path:
        """A spec path read back from the checkpoint, once it is this driver's spec in the root.

        Raises PathOutsideRootError for a path in another directory (after
        resolving symlinks) or a file that is not ``<driver>-*.json``: another
        driver's or the admin's spec in a shared root is never removed.
        """
        path = contained_path(self.root, recorded, what="CDI spec path")
        if not (path.name.startswith(f"{self.driver_name}-") and path.suffix == ".json"):
            raise PathOutsideRootError(
                recorded,
                self.root,
                what="CDI spec path",
                reason=f"only this driver's specs ({self.driver_name}-*.json) are removed",
            )
        return path

    def spec_to_remove(self, file_name: str, recorded: str | None = None) -> Path:
        """The spec file of a claim to remove: ``recorded`` (its checkpoint's ``cdiSpecPath``)
        when :meth:`recorded_spec` accepts it, else ``<root>/<file_name>`` with a warning.

        Raises PathOutsideRootError only when ``file_name`` itself is not a plain name.
        """
        fallback = self.path(file_name)
        if recorded is None:
            return fallback
        try:
            return self.recorded_spec(recorded)
        except PathOutsideRootError as err:
            log.warning("%s; removing %s instead", err, fallback)
            return fallback

    def ensure_root(self) -> None:
        """Create the CDI root (0755) if it is missing (runtimes watch it; it may not exist yet)."""
        ensure_directory(self.root, CDI_ROOT_MODE)

    def write(self, file_name: str, content: bytes) -> Path:
        """Write a spec atomically, mode 0644 (creating the root if needed); returns its path."""
        path = self.path(file_name)
        ensure_directory(self.root, CDI_ROOT_MODE)
        write_atomically(path, content, mode=CDI_SPEC_MODE)
        return path

    def remove(self, file_name: str) -> bool:
        """Remove a spec; False (not an error) when it was not there."""
        return remove_durably(self.path(file_name))

    def spec_problem(self, file_name: str, digest: str | None) -> str | None:
        """Why the spec ``file_name`` is not the one the checkpoint recorded; None when it is.

        It is when it is a regular file (not a symlink) of at most
        :data:`MAX_SPEC_BYTES` whose bytes have ``digest``
        (:func:`~api.checkpoint.spec_digest`). The answer completes "CDI spec
        <path> ...": it is missing, is something else (:func:`read_own_file`),
        cannot be read, differs from the recorded digest, or (``digest`` None, an
        entry from checkpoint version 1) has no digest to check it against.
        Never raises.
        """
        path = self.path(file_name)
        try:
            content = read_own_file(path, MAX_SPEC_BYTES)
        except ForeignFileError as err:
            return str(err)
        except FileNotFoundError:
            return "is missing"
        except OSError as err:
            return f"cannot be read ({err})"
        if digest is None:
            return "has no digest in the checkpoint (an entry of checkpoint version 1)"
        found = spec_digest(content)
        if found != digest:
            return f"differs from the spec the plugin wrote (content {found}, recorded {digest})"
        return None

    def spec_files(self) -> list[str]:
        """Names of this driver's spec files in the root, sorted."""
        if not self.root.is_dir():
            return []
        prefix = f"{self.driver_name}-"
        return sorted(
            p.name for p in self.root.iterdir() if p.name.startswith(prefix) and p.suffix == ".json"
        )

    def remove_stale_temp_files(self) -> list[Path]:
        return remove_stale_temp_files(self.root, prefix=f"{self.driver_name}-")


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def scan_host_files(
    dev_root: Path,
    driver_root: Path,
    hook_path: str | None,
    *,
    host_driver_root: Path | None = None,
) -> HostFiles:
    """Find the control device nodes and driver files that exist on this host.

    ``driver_root`` is where this process sees the driver's files;
    ``host_driver_root`` (default: the same) is that directory's path on the
    host, which the CDI specs name: a plugin container sees a driver installed
    in the host's ``/`` through a mount such as ``/driver-root``.

    Looks only where NVIDIA installs things (:mod:`dra_driver.cdi` lists the
    places), one directory level deep, so start-up stays fast on large roots.
    A library directory that is a symlink to one already scanned (``/lib`` ->
    ``/usr/lib`` on merged-/usr systems) is skipped so nothing is mounted twice.
    """
    control = tuple(p for p in CONTROL_DEVICE_NODES if os.path.lexists(_under(dev_root, p)))
    candidates: list[str] = []
    seen: set[Path] = set()
    for directory in (*DRIVER_LIBRARY_DIRS, *DRIVER_BINARY_DIRS):
        host_dir = _under(driver_root, directory)
        if not host_dir.is_dir():
            continue
        real = host_dir.resolve()
        if real in seen:
            continue
        seen.add(real)
        candidates.extend(f"{directory}/{name}" for name in os.listdir(host_dir))
    firmware = _under(driver_root, FIRMWARE_DIR)
    if firmware.is_dir():
        for version_dir in sorted(firmware.iterdir()):
            if version_dir.is_dir():
                candidates.extend(
                    f"{FIRMWARE_DIR}/{version_dir.name}/{name}" for name in os.listdir(version_dir)
                )
    if os.path.lexists(_under(driver_root, PERSISTENCED_SOCKET)):
        candidates.append(PERSISTENCED_SOCKET)
    files = select_driver_files(candidates)
    if hook_path is not None and not os.access(hook_path, os.X_OK):
        # The runtime runs the hook on the host, where this process may not see it;
        # an admin who configured it knows better, so keep it and say so.
        log.warning("CDI hook %s is not an executable file as seen from the plugin", hook_path)
    on_host = host_driver_root or driver_root
    log.info(
        "CDI host files: %d control device node(s) under %s, %d driver file(s) under %s%s",
        len(control),
        dev_root,
        len(files),
        driver_root,
        "" if on_host == driver_root else f" ({on_host} on the host)",
    )
    return HostFiles(
        dev_root=str(dev_root),
        driver_root=str(on_host),
        control_devices=control,
        driver_files=files,
        hook_path=hook_path,
    )
