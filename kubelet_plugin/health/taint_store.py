"""Health taints on disk: ``<plugin dir>/taints.json``, its reboot rules, and admins' clears.

The schema is :mod:`api.taint_state`. The file is written as the claims
checkpoint is (temp file, fsync, rename, directory fsync; mode 0600), after
every change of the taints and before the change is published, so no publish
carries a taint the file lacks; the plugin reads it at start-up before its
first publish.

Rules at start-up (:func:`restore`):

- a GPU no longer on the node, or with another UUID under its name (a GPU
  swapped), loses its entry: the taints were the old GPU's;
- after a reboot (the boot ID changed) the taints whose cause a reboot clears
  go (:data:`REBOOT_CLEARS`: XID errors, a lost GPU, an NVLink peer's drain fence;
  the driver reloads and resets the GPU, and a GPU still broken raises its event
  again, one still asking for DRAIN_P2P fences its peers again); the others
  (ECC errors, an unreadable taint file) stay, and a reboot does not restart
  their recovery window; a GPU waiting for a reboot (``awaitingReboot``: NVML
  asked for one) loses every taint the events raised;
- a file that cannot be read (not JSON, another schema or version, a link,
  a FIFO, too large, a read error) is moved aside to
  ``taints.json.corrupt-<UTC time>`` and every GPU is tainted ``NoSchedule``
  with ``<driver>/taint-state-unreadable`` (:func:`unreadable_state`): a taint
  that may have been lost is kept in the safest form rather than dropped. That
  taint has no recovery window; an admin clears it.

Clearing on purpose (:func:`request_clear`, ``dra-driver taints clear``): a
request is a small JSON file dropped in ``<plugin dir>/taint-clears/``; the
running plugin (or the next one to start, before it publishes) applies it,
saves the file and removes the request. The plugin stays the file's only
writer, so a clear can never be lost to a save racing it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from api import limits
from api.taint_state import (
    NVLINK_PEER_DRAIN,
    STATE_UNREADABLE,
    GpuTaints,
    PersistedTaint,
    TaintCause,
    TaintState,
    TaintStateError,
    decode_taint_state,
    encode_taint_state,
)
from kubelet_plugin.cdi_writer import (
    ForeignFileError,
    read_own_file,
    remove_stale_temp_files,
    write_atomically,
)
from kubelet_plugin.checkpoint_store import move_aside
from kubelet_plugin.plugin_dirs import CHECKPOINT_MODE, STATE_DIR_MODE, ensure_directory

__all__ = [
    "CLEARS_DIR_NAME",
    "REBOOT_CLEARS",
    "TAINT_FILE_NAME",
    "ClearRequest",
    "TaintStateCorruptError",
    "TaintStore",
    "load_taints",
    "pending_clears",
    "request_clear",
    "restore",
    "unreadable_state",
]

log = logging.getLogger(__name__)

TAINT_FILE_NAME: Final = "taints.json"
CLEARS_DIR_NAME: Final = "taint-clears"
#: Causes a reboot clears (see the module docstring).
REBOOT_CLEARS: Final = frozenset({"xid", "gpu-lost", NVLINK_PEER_DRAIN})
#: The largest taint file read: a few hundred bytes per taint, so far beyond any node.
MAX_TAINT_FILE_BYTES: Final = 4 * 2**20
_REQUEST_SUFFIX: Final = ".json"
_REJECTED_SUFFIX: Final = ".rejected"


class TaintStateCorruptError(TaintStateError):
    """The taint file could not be read; it was moved to ``moved_to`` (None: it could
    not be moved either). The plugin goes on with every GPU tainted."""

    def __init__(self, message: str, *, path: Path, moved_to: Path | None) -> None:
        self.path = path
        self.moved_to = moved_to
        super().__init__(message)


class TaintStore:
    """One taint file. Not thread-safe: the health monitor serialises saves."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock

    def load(self) -> TaintState:
        """The state on disk; an empty one when there is no file.

        Raises TaintStateCorruptError, after moving the file aside and logging
        the error, for anything unreadable (module docstring).
        """
        remove_stale_temp_files(self.path.parent, prefix=self.path.name)
        try:
            return decode_taint_state(read_own_file(self.path, MAX_TAINT_FILE_BYTES))
        except FileNotFoundError:
            return TaintState()
        except ForeignFileError as err:
            raise self._corrupt(f"it {err}") from None
        except TaintStateError as err:
            raise self._corrupt(str(err)) from None
        except OSError as err:
            raise self._corrupt(f"reading it failed: {err}") from None

    def _corrupt(self, reason: str) -> TaintStateCorruptError:
        try:
            moved_to: Path | None = move_aside(self.path, self.clock())
        except OSError as err:
            log.error("cannot move the unreadable taint file %s aside: %s", self.path, err)
            moved_to = None
        message = (
            f"taint file {self.path} is unreadable ({reason}); moved to {moved_to}; every GPU "
            "stays tainted NoSchedule until an admin clears it (dra-driver taints clear)"
        )
        log.error("TaintStateCorruptError: %s", message)
        return TaintStateCorruptError(message, path=self.path, moved_to=moved_to)

    def save(self, state: TaintState) -> None:
        """Write ``state`` crash-safely (mode 0600). Raises OSError on failure."""
        ensure_directory(self.path.parent, STATE_DIR_MODE)
        write_atomically(self.path, encode_taint_state(state), mode=CHECKPOINT_MODE)


def restore(state: TaintState, *, boot_id: str, gpus: Mapping[str, str]) -> TaintState:
    """What of ``state`` still holds on this node now (module docstring rules).

    ``gpus``: device name to UUID of every GPU found now. Each dropped taint is logged.
    """
    rebooted = bool(state.boot_id) and state.boot_id != boot_id
    kept: dict[str, GpuTaints] = {}
    for name, entry in state.gpus.items():
        if gpus.get(name) != entry.uuid:
            log.warning(
                "%s (%s) is not on this node now: its taints %s are dropped",
                name,
                entry.uuid,
                [t.key for t in entry.taints],
            )
            continue
        taints = entry.taints
        if rebooted:
            waited = {t.cause.kind for t in taints} - {STATE_UNREADABLE}
            clears = REBOOT_CLEARS | (waited if entry.awaiting_reboot else set())
            cleared = [t for t in taints if t.cause.kind in clears]
            taints = tuple(t for t in taints if t.cause.kind not in clears)
            for taint in cleared:
                log.info(
                    "%s: taint %s (%s) dropped: the node rebooted since",
                    name,
                    taint.key,
                    taint.cause.kind,
                )
        if taints:
            lost = entry.lost and not rebooted
            awaiting = entry.awaiting_reboot if not rebooted else None
            kept[name] = entry.model_copy(
                update={"taints": taints, "lost": lost, "awaiting_reboot": awaiting}
            )
    return TaintState(boot_id=boot_id, gpus=kept)


def unreadable_state(
    gpus: Mapping[str, str], *, domain: str, boot_id: str, now: str, detail: str
) -> TaintState:
    """Every GPU tainted ``NoSchedule`` with ``<domain>/taint-state-unreadable``."""
    cause = TaintCause(kind=STATE_UNREADABLE, seen_at=now, detail=detail)
    taint = PersistedTaint(
        key=f"{domain}/taint-{STATE_UNREADABLE}",
        effect=limits.TAINT_EFFECT_NO_SCHEDULE,
        time_added=now,
        cause=cause,
    )
    return TaintState(
        boot_id=boot_id,
        gpus={name: GpuTaints(uuid=uuid, taints=(taint,)) for name, uuid in gpus.items()},
    )


# --- clear requests ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClearRequest:
    """One admin's request: the device whose taints go (None: every device)."""

    path: Path
    device: str | None

    def done(self) -> None:
        """The request was applied (or refused, logged): forget it."""
        self.path.unlink(missing_ok=True)

    def reject(self, reason: str) -> None:
        """Keep the request as ``<name>.rejected`` and log why."""
        log.error("taint clear request %s refused: %s", self.path, reason)
        self.path.replace(self.path.with_name(self.path.name + _REJECTED_SUFFIX))


def request_clear(state_dir: Path, device: str | None) -> Path:
    """Drop a request to clear ``device``'s taints (None: every device's); returns the file.

    ``state_dir`` is the plugin directory (``<plugins dir>/<driver>``). The file
    appears whole (temp name, rename); names sort in writing order.
    """
    directory = state_dir / CLEARS_DIR_NAME
    ensure_directory(directory, STATE_DIR_MODE)
    fd, temp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump({"device": device} if device is not None else {"all": True}, handle)
    path = directory / f"{time.time_ns():020d}-{os.getpid()}{_REQUEST_SUFFIX}"
    os.replace(temp, path)
    return path


def pending_clears(state_dir: Path) -> list[ClearRequest]:
    """The clear requests waiting, oldest first; an unreadable one is rejected (logged)."""
    directory = state_dir / CLEARS_DIR_NAME
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(directory)
            if entry.name.endswith(_REQUEST_SUFFIX) and not entry.name.startswith(".")
        )
    except FileNotFoundError:
        return []
    requests: list[ClearRequest] = []
    for name in names:
        path = directory / name
        try:
            document = json.loads(read_own_file(path, 4096))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, ForeignFileError) as err:
            ClearRequest(path, None).reject(f"not a clear request: {err}")
            continue
        device = document.get("device") if isinstance(document, dict) else None
        if isinstance(device, str) and device:
            requests.append(ClearRequest(path, device))
        elif isinstance(document, dict) and document.get("all") is True:
            requests.append(ClearRequest(path, None))
        else:
            ClearRequest(path, None).reject('use {"device": "gpu-1"} or {"all": true}')
    return requests


def load_taints(
    store: TaintStore, *, boot_id: str, gpus: Mapping[str, str], domain: str
) -> TaintState:
    """The taints to start with: the file's after :func:`restore`, or, when it is
    unreadable (moved aside, logged), :func:`unreadable_state`. Never raises for the file."""
    try:
        state = store.load()
    except TaintStateCorruptError as err:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(store.clock()))
        return unreadable_state(gpus, domain=domain, boot_id=boot_id, now=now, detail=str(err))
    return restore(state, boot_id=boot_id, gpus=gpus)
