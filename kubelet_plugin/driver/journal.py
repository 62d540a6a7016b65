"""The claim journal: the checkpoint's entries in memory, saved by group commit.

Every prepare, unprepare and start-up recovery changes the entries here and
then commits; a commit writes every change made so far, so concurrent
prepares share fsyncs. Each entry is encoded once, when it changes.

An entry may be *cleanup-pending*: a ``PrepareStarted`` attempt whose undoing
failed (its spec could not be removed). It stays in the checkpoint, so a
restart retries the cleanup too, but holds no device: nothing on the node uses
it (the kubelet never heard of its CDI IDs), and a GPU refused to every other
claim while a CDI directory misbehaves would wedge the node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from api.checkpoint import Checkpoint, ClaimEntry, assemble_checkpoint, encode_claim_entry
from api.errors import CheckpointError, PrepareError
from api.resource_v1 import claim_label
from dra_driver.preparation import PreparationPlan
from kubelet_plugin.checkpoint_store import CheckpointCorruptError, CheckpointStore
from kubelet_plugin.node_driver import ClaimRef

__all__ = ["ClaimJournal"]

log = logging.getLogger(__name__)


class ClaimJournal:
    """The prepared claims by UID, and their saving to a :class:`CheckpointStore`.

    Thread-safe: reads and changes take a state lock, saves a save lock, so a
    change may be made while another thread's save is writing.
    """

    def __init__(self, store: CheckpointStore) -> None:
        self._store = store
        self._entries: dict[str, ClaimEntry] = {}
        # Each entry's JSON, kept next to it, so a save encodes nothing but the change.
        self._encoded: dict[str, str] = {}
        # Cleanup-pending entries (see the module docstring): UID to why.
        self._cleanup_pending: dict[str, str] = {}
        # (pool, device) to the UIDs of the entries that record it: the device check
        # of a reserve looks at those, not at every entry (1,000 claims in one call).
        self._holders: dict[tuple[str, str], set[str]] = {}
        self._state_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._changes = 0
        self._saved = 0
        self._synced = 0

    # --- reading ----------------------------------------------------------------------

    def get(self, uid: str) -> ClaimEntry | None:
        with self._state_lock:
            return self._entries.get(uid)

    def snapshot(self) -> dict[str, ClaimEntry]:
        """A copy of every entry, by claim UID."""
        with self._state_lock:
            return dict(self._entries)

    def cleanup_pending(self) -> dict[str, str]:
        """The cleanup-pending entries: claim UID to why undoing it failed."""
        with self._state_lock:
            return dict(self._cleanup_pending)

    def load(self) -> tuple[dict[str, ClaimEntry], bool]:
        """The entries of the checkpoint on disk, and whether it was corrupt.

        A corrupt checkpoint reads as empty (the store moved it aside and
        logged both paths). Raises CheckpointError for a newer version.
        """
        try:
            checkpoint = self._store.load()
        except CheckpointCorruptError:
            return dict(Checkpoint().claims), True
        return dict(checkpoint.claims), False

    # --- changing ---------------------------------------------------------------------

    def set(self, uid: str, entry: ClaimEntry) -> None:
        """Add or replace one entry (saved by the next commit)."""
        text = encode_claim_entry(entry)
        with self._state_lock:
            self._put(uid, entry, text)

    def reserve(self, ref: ClaimRef, plan: PreparationPlan, entry: ClaimEntry) -> None:
        """Record ``entry`` for ``ref`` once no other claim holds the plan's devices.

        The last line of defence: a device is prepared for one claim at a
        time. Admin access and shared (consumable-capacity) allocations may
        overlap. Raises a retryable PrepareError naming the other claim.
        """
        text = encode_claim_entry(entry)
        with self._state_lock:
            self._check_devices_free(ref, plan)
            self._put(ref.uid, entry, text)

    def drop(self, uid: str) -> None:
        """Remove one entry, if there is one (saved by the next commit)."""
        with self._state_lock:
            self._drop(uid)

    def drop_started(self, uid: str) -> None:
        """Remove the entry of ``uid`` if it is ``PrepareStarted``: an attempt undone."""
        with self._state_lock:
            entry = self._entries.get(uid)
            if entry is not None and entry.state == "PrepareStarted":
                self._drop(uid)

    def mark_cleanup_pending(self, uid: str, reason: str) -> bool:
        """Mark the ``PrepareStarted`` entry of ``uid`` cleanup-pending; its devices are free.

        Changes nothing on disk. False (and nothing marked) when ``uid`` has no
        ``PrepareStarted`` entry. Any later change to the entry clears the mark.
        """
        with self._state_lock:
            entry = self._entries.get(uid)
            if entry is None or entry.state != "PrepareStarted":
                return False
            self._cleanup_pending[uid] = reason
            return True

    def replace(self, entries: Mapping[str, ClaimEntry]) -> None:
        """Make ``entries`` the whole state (start-up recovery); saved by the next commit."""
        encoded = {uid: encode_claim_entry(entry) for uid, entry in entries.items()}
        with self._state_lock:
            self._entries = dict(entries)
            self._encoded = encoded
            self._reindex()
            self._cleanup_pending.clear()
            self._changes += 1

    def adopt(self) -> bool:
        """Take the checkpoint on disk as the state, when another instance changed it;
        True when it did.

        Caller holds the node lock, so no save of ours is pending and the other
        instance is between calls. Raises CheckpointError (a newer version).
        """
        if not self._store.changed_elsewhere():
            return False
        entries, _ = self.load()
        encoded = {uid: encode_claim_entry(entry) for uid, entry in entries.items()}
        with self._state_lock:
            self._entries = entries
            self._encoded = encoded
            self._reindex()
            # The other instance's attempts are its own; ours still to clean are still ours.
            self._cleanup_pending = {
                uid: reason
                for uid, reason in self._cleanup_pending.items()
                if uid in entries and entries[uid].state == "PrepareStarted"
            }
            # What is on disk is the state: nothing of ours waits to be saved.
            self._saved = self._synced = self._changes
        log.info(
            "checkpoint %s was changed by the other plugin instance of this node: %d claim(s) "
            "prepared",
            self._store.path,
            len(entries),
        )
        return True

    # --- saving -----------------------------------------------------------------------

    def commit(self, *, durable: bool = True) -> None:
        """Write every state change made so far to the checkpoint (group commit).

        A caller whose change a concurrent save already covered returns at once;
        otherwise it saves everything up to now, so concurrent prepares share
        fsyncs. ``durable`` also makes it survive a power cut (directory fsync);
        without it the file is still never torn. Raises CheckpointError when
        saving fails.
        """
        with self._state_lock:
            wanted = self._changes
        with self._save_lock:
            if self._synced >= wanted or (not durable and self._saved >= wanted):
                return
            try:
                if self._saved < wanted:
                    with self._state_lock:
                        data = assemble_checkpoint(self._encoded)
                        covered = self._changes
                    self._store.save_bytes(data, durable=durable)
                    self._saved = covered
                    if durable:
                        self._synced = covered
                        return
                if durable:  # written by a save that was not durable: sync it now
                    self._store.sync()
                    self._synced = self._saved
            except OSError as err:
                raise CheckpointError(
                    f"saving checkpoint {self._store.path} failed: {err}"
                ) from err

    # --- under the state lock ---------------------------------------------------------

    def _put(self, uid: str, entry: ClaimEntry, text: str) -> None:
        """Add or replace an entry and its JSON. Caller holds the state lock."""
        self._unindex(uid)
        self._entries[uid] = entry
        self._encoded[uid] = text
        self._index(uid)
        self._cleanup_pending.pop(uid, None)
        self._changes += 1

    def _drop(self, uid: str) -> None:
        """Remove an entry and its JSON. Caller holds the state lock."""
        self._unindex(uid)
        self._entries.pop(uid, None)
        self._encoded.pop(uid, None)
        self._cleanup_pending.pop(uid, None)
        self._changes += 1

    def _index(self, uid: str) -> None:
        """Add an entry's devices to the holders. Caller holds the state lock."""
        for record in self._entries[uid].devices:
            self._holders.setdefault((record.pool, record.device), set()).add(uid)

    def _unindex(self, uid: str) -> None:
        """Remove an entry's devices from the holders, if it has an entry. Caller holds the
        state lock."""
        entry = self._entries.get(uid)
        if entry is None:
            return
        for record in entry.devices:
            key = (record.pool, record.device)
            holders = self._holders.get(key)
            if holders is not None:
                holders.discard(uid)
                if not holders:
                    del self._holders[key]

    def _reindex(self) -> None:
        """Build the holders from scratch. Caller holds the state lock."""
        self._holders = {}
        for uid in self._entries:
            self._index(uid)

    def _check_devices_free(self, ref: ClaimRef, plan: PreparationPlan) -> None:
        """See :meth:`reserve`. Caller holds the state lock."""
        for device in plan.devices:
            for uid in sorted(self._holders.get((device.pool, device.device), ())):
                if uid == ref.uid or uid in self._cleanup_pending:
                    continue
                other = self._entries[uid]
                for record in other.devices:
                    if (record.pool, record.device) != (device.pool, device.device):
                        continue
                    if device.admin_access or record.admin_access:
                        continue
                    if device.share_id is not None and record.share_id is not None:
                        continue
                    raise PrepareError(
                        f"device {device.device} is already prepared for "
                        f"{claim_label(other.namespace, other.name)} (UID {uid}); a device "
                        "serves one claim at a time: that claim must be unprepared first",
                        claim=str(ref),
                        retryable=True,
                    )
