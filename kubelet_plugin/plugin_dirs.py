"""The plugin's own directories: every path it writes or removes stays inside them, with set modes.

Two roots hold what the plugin writes: the CDI root (claim specs, read by the
container runtime) and the state directory (the checkpoint). File names come
from claim UIDs, which arrive from the kubelet and from the checkpoint on
disk, so each path is checked here before anything is written or removed:
:func:`path_in_root` for a name the plugin builds, :func:`contained_path` for
a path it reads back (a checkpoint's ``cdiSpecPath``). Anything that would
land elsewhere raises :class:`PathOutsideRootError`.

Modes never follow the process umask: directories the plugin creates get
:func:`ensure_directory`'s mode exactly, files get an explicit ``fchmod``
(:func:`kubelet_plugin.cdi_writer.write_atomically`), sockets a ``chmod``
right after they are bound.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Final

from api.errors import PrepareError

__all__ = [
    "CDI_ROOT_MODE",
    "CDI_SPEC_MODE",
    "CHECKPOINT_MODE",
    "SOCKET_DIR_MODE",
    "SOCKET_MODE",
    "STATE_DIR_MODE",
    "PathOutsideRootError",
    "contained_path",
    "ensure_directory",
    "path_in_root",
]

#: The CDI root: the container runtime (root, or another user) lists it.
CDI_ROOT_MODE: Final = 0o755
#: A claim's CDI spec: the container runtime reads it; only the plugin writes it.
CDI_SPEC_MODE: Final = 0o644
#: The directory of the checkpoint (and, by default, of the DRA socket): the plugin's alone.
STATE_DIR_MODE: Final = 0o700
#: The checkpoint names every prepared claim and device: the plugin's alone.
CHECKPOINT_MODE: Final = 0o600
#: The gRPC sockets. The kubelet dials them as root, so no group needs access
#: (0660 would be for a kubelet running as another user of the socket's group).
SOCKET_MODE: Final = 0o600
#: Directories the plugin creates for its sockets (the plugin directory, and the
#: registry directory when the kubelet has not made it): only root looks inside.
SOCKET_DIR_MODE: Final = 0o700


class PathOutsideRootError(PrepareError):
    """A path the plugin was about to write or remove is not directly inside its root.

    Raised for a file name with a ``/`` or ``..`` (from a claim UID) and for a
    recorded path elsewhere (a checkpoint's ``cdiSpecPath``). Nothing was
    touched; a retry does not help: the caller drops or refuses the input.
    """

    def __init__(self, path: str, root: Path, *, what: str = "path", reason: str = "") -> None:
        self.path = path
        self.root = root
        super().__init__(
            f"{what} {path!r} refused, nothing written or removed: "
            + (
                reason
                or f"it must be a file directly inside {root} (a name without '/' that is "
                "not '.' or '..', in a directory that resolves to the root)"
            )
        )


def path_in_root(root: Path, file_name: str, *, what: str = "file name") -> Path:
    """``root / file_name``, once ``file_name`` is one plain name that stays in ``root``.

    Raises PathOutsideRootError for an empty name, ``.``, ``..`` or a name with a
    ``/`` or a NUL. The root itself may be missing (it is created on first write).
    """
    if not file_name or file_name in (".", "..") or "/" in file_name or "\0" in file_name:
        raise PathOutsideRootError(file_name, root, what=what)
    return root / file_name


def contained_path(root: Path, recorded: str, *, what: str = "path") -> Path:
    """``recorded`` as a path, once its directory resolves to ``root`` (symlinks followed).

    The last component is not resolved: removing a symlink removes the link,
    and a rename replaces it; neither follows it out of the root. Raises
    PathOutsideRootError otherwise.
    """
    path = Path(recorded)
    if not path.is_absolute() or path.name in ("", ".", "..") or "\0" in recorded:
        raise PathOutsideRootError(recorded, root, what=what)
    if os.path.realpath(path.parent) != os.path.realpath(root):
        raise PathOutsideRootError(recorded, root, what=what)
    return path


def ensure_directory(path: Path, mode: int) -> None:
    """Create ``path`` and its missing parents, each with ``mode`` exactly (not umask-narrowed).

    A directory that exists already keeps its mode: it may be shared (``/etc/cdi``,
    the kubelet's registry) and an admin's choice. Raises FileExistsError when
    ``path`` (or a parent) is something other than a directory, and OSError
    when creating fails.
    """
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, mode included
        with contextlib.suppress(FileNotFoundError):
            os.chmod(directory, mode)
    if not path.is_dir():
        raise FileExistsError(errno.EEXIST, "exists and is not a directory", str(path))
