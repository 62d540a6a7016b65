"""The checkpoint file: loading it (moving a corrupt one aside), saving it crash-safely.

The schema is :mod:`api.checkpoint`. Saving writes a temp file in the same
directory, fsyncs it, renames it over the checkpoint and fsyncs the directory,
so after a crash the file holds the last save or the one before, never a mix.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from api.checkpoint import (
    Checkpoint,
    CheckpointVersionError,
    ClaimEntry,
    decode_checkpoint,
    encode_checkpoint,
)
from api.errors import CheckpointError
from api.resource_v1 import claim_label
from dra_driver.cdi import spec_file_name
from dra_driver.device_metadata import container_file_path
from kubelet_plugin.cdi_writer import (
    CdiWriter,
    ForeignFileError,
    read_own_file,
    remove_stale_temp_files,
    sync_directory,
    write_atomically,
)
from kubelet_plugin.node_driver import ClaimRef, claim_ref_problem
from kubelet_plugin.plugin_dirs import (
    CHECKPOINT_MODE,
    STATE_DIR_MODE,
    PathOutsideRootError,
    ensure_directory,
)

__all__ = [
    "BOOT_ID_PATH",
    "CheckpointCorruptError",
    "CheckpointStore",
    "contained_entry",
    "move_aside",
    "read_boot_id",
]

log = logging.getLogger(__name__)

#: Changes at every boot; tells a plugin restart from a node reboot.
BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")
#: The largest checkpoint read. An entry takes about 1 KiB per device, so this is
#: tens of thousands of claims; a larger file is not one the plugin wrote, and
#: reading it whole could exhaust the pod's memory.
MAX_CHECKPOINT_BYTES: Final = 64 * 2**20


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    """The kernel's boot ID (a UUID). Raises OSError when it cannot be read."""
    return path.read_text().strip()


def move_aside(path: Path, now: float) -> Path:
    """Rename ``path`` (or whatever is in its place, never a link's target) to
    ``<name>.corrupt-<UTC timestamp of now>``, never over an earlier one; returns the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    moved_to = path.with_name(f"{path.name}.corrupt-{stamp}")
    attempt = 0
    while os.path.lexists(moved_to):  # never overwrite the evidence of an earlier one
        attempt += 1
        moved_to = path.with_name(f"{path.name}.corrupt-{stamp}-{attempt}")
    path.rename(moved_to)
    return moved_to


class CheckpointCorruptError(CheckpointError):
    """The checkpoint could not be read and was moved aside to ``moved_to``."""

    def __init__(self, message: str, *, path: Path, moved_to: Path) -> None:
        self.path = path
        self.moved_to = moved_to
        super().__init__(message)


def contained_entry(uid: str, entry: ClaimEntry, cdi: CdiWriter) -> ClaimEntry | None:
    """A checkpoint entry made safe to act on, or None when it must be skipped (logged).

    The checkpoint is a file on disk that someone else may have written: an
    entry whose UID, namespace or name the API server would not issue
    (:func:`~kubelet_plugin.node_driver.claim_ref_problem`) is skipped, and
    nothing is written or removed for it. A ``cdiSpecPath`` that is not this
    driver's spec in the CDI root is replaced by the spec's own name in the
    root (``<root>/<driver>-<uid>.json``), with a warning: a checkpoint never
    makes the plugin remove a file elsewhere.
    """
    label = claim_label(entry.namespace, entry.name)
    problem = claim_ref_problem(ClaimRef(namespace=entry.namespace, name=entry.name, uid=uid))
    if problem is not None:
        log.error(
            "checkpoint entry %s (UID %r) skipped, nothing written or removed for it: %s",
            label,
            uid,
            problem,
        )
        return None
    if (record := entry.device_metadata) is not None:
        try:
            for device in entry.devices:
                for request in device.requests:
                    container_file_path(cdi.driver_name, entry.name, record.pod_claim_name, request)
        except ValueError as err:
            # The names would build paths: the spec is written without the metadata mounts.
            log.error("checkpoint entry %s (UID %s): deviceMetadata dropped: %s", label, uid, err)
            marker = f"={uid}-metadata-"  # the IDs of the mounts: the spec has none now
            devices = tuple(
                d.model_copy(
                    update={"cdi_device_ids": tuple(i for i in d.cdi_device_ids if marker not in i)}
                )
                for d in entry.devices
            )
            entry = entry.model_copy(update={"device_metadata": None, "devices": devices})
    try:
        cdi.recorded_spec(entry.cdi_spec_path)
    except PathOutsideRootError as err:
        own = cdi.path(spec_file_name(cdi.driver_name, uid))
        log.warning("checkpoint entry %s (UID %s): %s; using %s instead", label, uid, err, own)
        return entry.model_copy(update={"cdi_spec_path": str(own)})
    return entry


class CheckpointStore:
    """One checkpoint file. Not thread-safe: the driver serialises saves.

    The file is mode 0600 and a directory the store creates 0700, whatever the
    umask: the checkpoint lists every prepared claim and is the plugin's alone.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._seen: tuple[int, int, int] | None = None

    def _fingerprint(self) -> tuple[int, int, int] | None:
        """Inode, size and modification time of the file; None when there is none.

        Every save replaces the file by a rename, so a save by another process
        shows as another inode even within one clock tick.
        """
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns

    def changed_elsewhere(self) -> bool:
        """Whether the file differs from what this store last loaded or saved.

        Only meaningful while the writers of the file take turns (the plugin
        instances of a node hold their shared lock around each call).
        """
        return self._fingerprint() != self._seen

    def load(self) -> Checkpoint:
        """The checkpoint on disk; an empty one when there is no file yet.

        A file that does not decode is renamed to ``<name>.corrupt-<UTC timestamp>``
        with an error log naming both paths, and CheckpointCorruptError is raised:
        the caller decides to go on with empty state, nothing is reset silently.
        So is anything in its place that the plugin never writes there: a
        symbolic link (not followed: it may lead anywhere, ``/dev/zero`` say), a
        directory, a FIFO or a device, or a file over :data:`MAX_CHECKPOINT_BYTES`.
        The rename moves the entry itself, never what a link points to. Other
        errors reading it (EIO) raise OSError: a retry may help.

        A file that parses but is of a version this plugin does not read (newer,
        or older than the oldest it upgrades) is not corrupt: it stays as it is,
        and CheckpointVersionError names the file, the version and the fix
        (logged too). Moving it aside would forget the GPUs its claims hold.
        Temp files of an interrupted save are removed.
        """
        remove_stale_temp_files(self.path.parent, prefix=self.path.name)
        self._seen = self._fingerprint()
        try:
            data = self._read()
        except FileNotFoundError:
            self._seen = None
            return Checkpoint()
        except CheckpointError as err:
            raise self._move_aside(err) from err
        try:
            return decode_checkpoint(data)
        except CheckpointVersionError as err:
            message = (
                f"checkpoint {self.path}: {err}; refused, the file is left as it is (the "
                "plugin does not start on it): roll forward to a plugin that reads version "
                f"{err.version}, or drain the node and move it aside (the plugin then starts "
                "with no prepared claims)"
            )
            log.error("%s", message)
            raise CheckpointVersionError(message, version=err.version, path=self.path) from err
        except CheckpointError as err:
            raise self._move_aside(err) from err

    def _read(self) -> bytes:
        """The file's bytes; CheckpointError when it is not a regular file of a sane size.

        Raises FileNotFoundError when there is none, OSError when reading fails.
        """
        try:
            return read_own_file(self.path, MAX_CHECKPOINT_BYTES)
        except ForeignFileError as err:
            raise CheckpointError(f"it {err}; the plugin reads only the file it wrote") from None

    def _move_aside(self, err: CheckpointError) -> CheckpointCorruptError:
        """Rename the file (or whatever is in its place) to ``<name>.corrupt-<UTC timestamp>``."""
        moved_to = move_aside(self.path, self._clock())
        log.error(
            "checkpoint %s is corrupt (%s); moved it to %s and starting without prepared "
            "claims: claims prepared before are prepared again when the kubelet asks",
            self.path,
            err,
            moved_to,
        )
        return CheckpointCorruptError(
            f"checkpoint {self.path} is corrupt ({err}); moved to {moved_to}",
            path=self.path,
            moved_to=moved_to,
        )

    def save(self, checkpoint: Checkpoint) -> None:
        """Write ``checkpoint`` crash-safely (mode 0600). Raises OSError on failure."""
        self.save_bytes(encode_checkpoint(checkpoint))

    def save_bytes(self, data: bytes, *, durable: bool = True) -> None:
        """Write an already encoded checkpoint (lets the caller encode under its own lock).

        ``durable=False`` skips the directory fsync: the file is never torn, but a
        power cut may bring back the previous checkpoint until :meth:`sync` or a
        durable save runs.
        """
        ensure_directory(self.path.parent, STATE_DIR_MODE)
        write_atomically(self.path, data, mode=CHECKPOINT_MODE, sync_directory=durable)
        self._seen = self._fingerprint()

    def sync(self) -> None:
        """Make the last save durable (fsync of the checkpoint's directory)."""
        sync_directory(self.path.parent)
