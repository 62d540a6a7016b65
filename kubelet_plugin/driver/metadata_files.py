"""The device metadata files of prepared claims on disk (KEP-5304).

What they hold and where containers see them: :mod:`dra_driver.device_metadata`.

Each claim has a directory ``<root>/<claim uid>`` with one file per request,
``<request>/<driver>-metadata.json``, which the claim's CDI spec bind-mounts into
its containers. A container runtime may mount a file at any moment, so each is
written atomically (:func:`~kubelet_plugin.cdi_writer.write_atomically`: a complete
file or none) and mode 0644; directories are 0755, whatever the umask. A file is
written again only when its content changed: a running container keeps the file it
mounted (a bind mount follows the inode), and the next one gets the new one.

Writes are not fsynced: a process crash loses nothing (the page cache stays), and after a
power cut, which brings a new boot ID, start-up writes every prepared claim's spec and
files again, comparing each file with what it must hold (an empty or lost one is
rewritten). That keeps two fsyncs of the node's disk out of every prepare. Removals are
durable (the directory fsynced), so that no claim's files come back after a power cut.

The paths come from the plan, built from the claim UID and request names (DNS
labels); each is checked to lie at ``<root>/<uid>/<request>/<file>`` before
anything is written, and only ``<root>/<uid>`` is ever removed.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from dra_driver.discovery.model import NodeInventory
from dra_driver.preparation import PreparationPlan
from dra_driver.prepared_claims import metadata_files
from kubelet_plugin.cdi_writer import (
    ForeignFileError,
    read_own_file,
    remove_stale_temp_files,
    sync_directory,
    write_atomically,
)
from kubelet_plugin.plugin_dirs import PathOutsideRootError, ensure_directory, path_in_root

__all__ = ["METADATA_DIR_MODE", "METADATA_FILE_MODE", "MetadataFiles"]

log = logging.getLogger(__name__)

#: The root and the claims' directories: the container runtime walks them.
METADATA_DIR_MODE: Final = 0o755
#: A metadata file: containers read it; only the plugin writes it.
METADATA_FILE_MODE: Final = 0o644
#: The largest file read back to compare: a request's devices and attributes, kilobytes.
_MAX_FILE_BYTES: Final = 4 * 2**20


class MetadataFiles:
    """The metadata files under one root directory; safe for concurrent claims (each
    claim has its own directory, and the caller holds the claim's lock)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def claim_dir(self, uid: str) -> Path:
        """``<root>/<uid>``; raises PathOutsideRootError for a UID that is not one name."""
        return path_in_root(self.root, uid, what="claim UID")

    def _checked(self, path: str, uid: str) -> Path:
        file = Path(path)
        claim_dir = self.claim_dir(uid)
        if file.parent.parent != claim_dir or file.name in ("", ".", ".."):
            raise PathOutsideRootError(
                path,
                self.root,
                what="device metadata file",
                reason=f"it must lie at {claim_dir}/<request>/<file>",
            )
        path_in_root(claim_dir, file.parent.name, what="request directory")
        return file

    def write(self, uid: str, files: Mapping[str, bytes]) -> list[Path]:
        """Write the claim's files (host path to content) where they are missing or differ.

        Returns the files written. Raises OSError when writing fails (files written
        before stay; the caller's rollback removes the claim's directory) and
        PathOutsideRootError for a path that is not the claim's.
        """
        written: list[Path] = []
        for path, content in sorted(files.items()):
            file = self._checked(path, uid)
            if self._holds(file, content):
                continue
            ensure_directory(file.parent, METADATA_DIR_MODE)
            write_atomically(
                file, content, mode=METADATA_FILE_MODE, sync_directory=False, sync_file=False
            )
            written.append(file)
        return written

    def write_plan(
        self, uid: str, plan: PreparationPlan, inventory: NodeInventory, *, driver_name: str
    ) -> list[Path]:
        """:meth:`write` the files of ``plan`` (:func:`dra_driver.prepared_claims.metadata_files`:
        the devices as ``inventory`` has them now); none when the plan has none."""
        if not plan.metadata:
            return []
        return self.write(uid, metadata_files(plan, inventory, driver_name=driver_name))

    @staticmethod
    def _holds(file: Path, content: bytes) -> bool:
        try:
            return read_own_file(file, _MAX_FILE_BYTES) == content
        except (ForeignFileError, OSError):
            return False  # missing, unreadable or not a file of ours: written again

    def remove(self, uid: str) -> bool:
        """Remove the claim's directory and everything in it, durably; False when absent.

        A symbolic link there is removed itself, never followed. Raises OSError
        when removing fails.
        """
        claim_dir = self.claim_dir(uid)
        if not os.path.lexists(claim_dir):
            return False
        if claim_dir.is_symlink() or not claim_dir.is_dir():
            claim_dir.unlink()
        else:
            shutil.rmtree(claim_dir)
        try:
            sync_directory(self.root)
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise
        return True

    def claim_uids(self) -> list[str]:
        """The claims that have a directory here, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith("."))

    def remove_stale_temp_files(self) -> int:
        """Remove temp files a crash left in the claims' request directories; the count."""
        removed = 0
        for uid in self.claim_uids():
            claim_dir = self.root / uid
            if claim_dir.is_symlink() or not claim_dir.is_dir():
                continue
            for request_dir in claim_dir.iterdir():
                if request_dir.is_dir() and not request_dir.is_symlink():
                    removed += len(remove_stale_temp_files(request_dir))
        return removed
