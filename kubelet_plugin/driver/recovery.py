"""Start-up recovery: the checkpoint and the CDI files made consistent again before serving.

A crash or a reboot can leave half-prepared claims, missing specs (the CDI
root is a tmpfs), missing dynamic MIG devices and claims deleted meanwhile;
:class:`StartupRecovery` repairs each, and :class:`RecoveryReport` says what it did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from api.checkpoint import ClaimEntry
from api.errors import PrepareError
from api.resource_v1 import claim_label
from dra_driver.cdi import spec_file_name
from kubelet_plugin.cdi_writer import CdiWriter, remove_durably
from kubelet_plugin.checkpoint_store import contained_entry
from kubelet_plugin.claim_source import ClaimSource
from kubelet_plugin.driver.journal import ClaimJournal
from kubelet_plugin.driver.metadata_files import MetadataFiles
from kubelet_plugin.driver.mig_lifecycle import MigLifecycle, dynamic_migs
from kubelet_plugin.driver.preparer import FaultPoint, log_spec_rewrite

__all__ = ["RecoveryReport", "StartupRecovery"]

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What :meth:`GpuDriver.start <kubelet_plugin.driver.GpuDriver.start>` did, by claim UID."""

    rolled_back: list[str] = field(default_factory=list)
    """PrepareStarted entries undone (spec removed, entry dropped)."""
    rewritten: list[str] = field(default_factory=list)
    """PrepareCompleted claims whose spec was written again (a new boot, or not the spec
    whose digest the checkpoint recorded: missing, changed, or no digest yet)."""
    removed: list[str] = field(default_factory=list)
    """Claims gone from the API server (deleted, or replaced by one with another UID)."""
    unverified: list[str] = field(default_factory=list)
    """Claims kept because the API server could not be asked."""
    orphan_specs: list[str] = field(default_factory=list)
    """Spec files of this driver without a checkpoint entry (left in place)."""
    orphan_metadata: list[str] = field(default_factory=list)
    """Claim UIDs with device metadata files but neither a checkpoint entry nor a spec:
    removed, since no spec can mount them (those beside an orphan spec stay with it)."""
    cleanup_pending: list[str] = field(default_factory=list)
    """PrepareStarted entries whose spec could not be removed: kept, holding no device,
    retried while the plugin serves."""
    checkpoint_corrupt: bool = False


class StartupRecovery:
    """Replays the checkpoint on disk into the journal, repairing as it goes.

    For each entry, in UID order:

    - ``PrepareStarted``: the spec and the device metadata files removed, its
      dynamic MIG devices destroyed (by placement), the entry dropped;
    - a claim the API server no longer has (or has with another UID): the
      same; when the API server cannot be asked, the claim is kept
      (``unverified``) and the others are not asked either;
    - ``PrepareCompleted``: its dynamic MIG devices made to exist, its spec
      written again (``rewrite_spec``) when of another boot, when a MIG device
      came back different, or when the file is not the spec whose digest the
      entry records (missing, changed by someone else: logged as a warning;
      an entry of checkpoint version 1 without a digest: written once, info);
      its device metadata files written again where missing or changed.

    Spec files of this driver without an entry are reported, never removed; device
    metadata files without an entry are removed unless such a spec is there to mount them.
    The journal then holds the result, saved durably.

    A file that cannot be removed (a read-only or failing CDI root) never
    stops the start-up: a ``PrepareStarted`` entry is kept cleanup-pending
    (its MIG devices destroyed, its devices free, the removal retried while
    the plugin serves); a gone claim's entry is kept for the kubelet's
    unprepare to retry.

    ``fault_hook`` is called at the recovery's fault points (:data:`FaultPoint`; tests stop
    the process there); production passes none.
    """

    def __init__(
        self,
        *,
        driver_name: str,
        boot_id: str,
        journal: ClaimJournal,
        claim_source: ClaimSource,
        cdi: CdiWriter,
        migs: MigLifecycle,
        rewrite_spec: Callable[[str, ClaimEntry], ClaimEntry],
        fault_hook: Callable[[FaultPoint], None] | None = None,
        metadata: MetadataFiles | None = None,
        restore_metadata: Callable[[str, ClaimEntry], None] | None = None,
    ) -> None:
        self._driver_name = driver_name
        self._boot_id = boot_id
        self._journal = journal
        self._claims = claim_source
        self._cdi = cdi
        self._migs = migs
        self._rewrite_spec = rewrite_spec
        self._fault_hook = fault_hook
        self._metadata = metadata
        self._restore_metadata = restore_metadata

    def run(self) -> RecoveryReport:
        """Recover; raises CheckpointError for a checkpoint of a newer version or a failed save."""
        report = RecoveryReport()
        try:
            self._cdi.ensure_root()
            self._cdi.remove_stale_temp_files()
            if self._metadata is not None:
                self._metadata.remove_stale_temp_files()
        except OSError as err:
            # Serve anyway: a prepare answers its own error while the root fails.
            log.error(
                "CDI root %s: %s; claims cannot be prepared until it works", self._cdi.root, err
            )
        entries, report.checkpoint_corrupt = self._journal.load()
        pending: dict[str, str] = {}
        api_error: PrepareError | None = None
        for uid in sorted(entries):
            # The checkpoint is input: an entry with a UID or name the API server would not
            # issue is skipped (logged), a cdiSpecPath outside the CDI root replaced by
            # <root>/<driver>-<uid>.json, so nothing below touches a file elsewhere.
            checked = contained_entry(uid, entries[uid], self._cdi)
            if checked is None:
                del entries[uid]
                continue
            entry = entries[uid] = checked
            label = claim_label(entry.namespace, entry.name)
            if entry.state == "PrepareStarted":
                try:
                    self._discard(uid, label, entry)
                except OSError as err:
                    self._migs.destroy(label, dynamic_migs(entry))
                    pending[uid] = f"removing its CDI spec failed: {err}"
                    report.cleanup_pending.append(uid)
                    log.error(
                        "%s (UID %s): rolling back an interrupted prepare: %s; kept, its "
                        "devices free, the removal is retried (check that the CDI root %s is "
                        "writable and healthy)",
                        label,
                        uid,
                        pending[uid],
                        self._cdi.root,
                    )
                    continue
                del entries[uid]
                report.rolled_back.append(uid)
                log.warning("%s (UID %s): rolled back an interrupted prepare", label, uid)
                continue
            try:
                if api_error is not None:
                    # One failure is enough: do not wait out a timeout per claim.
                    raise api_error
                claim = self._claims.get(entry.namespace, entry.name)
            except PrepareError as err:
                api_error = err
                report.unverified.append(uid)
                log.warning("%s (UID %s): kept, the API server cannot tell: %s", label, uid, err)
            else:
                if claim is None or claim.metadata.uid != uid:
                    try:
                        self._discard(uid, label, entry)
                    except OSError as err:
                        # Kept: the kubelet's unprepare of the claim retries the removal.
                        log.error(
                            "%s (UID %s): gone, but removing its spec failed: %s", label, uid, err
                        )
                        continue
                    del entries[uid]
                    report.removed.append(uid)
                    log.info("%s (UID %s): gone from the API server, spec removed", label, uid)
                    continue
            if self._restore(uid, entry, entries):
                report.rewritten.append(uid)
        report.orphan_specs = self._orphan_specs(entries)
        report.orphan_metadata = self._orphan_metadata(entries, report.orphan_specs)
        self._journal.replace(entries)
        for uid, reason in pending.items():
            self._journal.mark_cleanup_pending(uid, reason)
        self._journal.commit()
        log.info(
            "checkpoint recovered: %d claim(s) prepared, %d rolled back, %d spec(s) rewritten, "
            "%d removed, %d unverified",
            len(entries),
            len(report.rolled_back),
            len(report.rewritten),
            len(report.removed),
            len(report.unverified),
        )
        return report

    def _discard(self, uid: str, label: str, entry: ClaimEntry) -> None:
        """Remove a claim's spec and device metadata files, and destroy its dynamic MIG
        devices (failures logged)."""
        remove_durably(Path(entry.cdi_spec_path))
        if self._metadata is not None:
            self._metadata.remove(uid)
        self._fault("recovery-spec-removed")
        self._migs.destroy(label, dynamic_migs(entry))

    def _restore(self, uid: str, entry: ClaimEntry, entries: dict[str, ClaimEntry]) -> bool:
        """A kept claim's MIG devices and spec back in place; True when the spec was rewritten.

        ``entries[uid]`` gets the updated entry. A failure is logged and the
        claim kept: unprepare destroys what exists, and a later prepare
        rewrites the spec.
        """
        label = claim_label(entry.namespace, entry.name)
        recreated = False
        if dynamic_migs(entry):
            try:
                entry, recreated = self._migs.ensure(entry)
            except PrepareError as err:
                # Kept: unprepare destroys what exists; a container started now fails.
                log.error("%s (UID %s): its MIG devices cannot be made: %s", label, uid, err)
            entries[uid] = entry
        file_name = spec_file_name(self._driver_name, uid)
        if not recreated and entry.boot_id == self._boot_id:
            problem = self._cdi.spec_problem(file_name, entry.cdi_spec_digest)
            if problem is None:
                self._restore_files(uid, label, entry)
                return False
            log_spec_rewrite(label, uid, self._cdi.path(file_name), problem, entry)
        try:
            entries[uid] = self._rewrite_spec(uid, entry)
        except OSError as err:
            # Kept: the next prepare of this claim tries again.
            log.error("%s (UID %s): writing its CDI spec failed: %s", label, uid, err)
            return False
        self._fault("recovery-spec-rewritten")
        return True

    def _restore_files(self, uid: str, label: str, entry: ClaimEntry) -> None:
        """The claim's metadata files back where its spec is fine (rewrite_spec writes them
        with the spec otherwise). A failure is logged: the next prepare writes them."""
        if self._restore_metadata is None:
            return
        try:
            self._restore_metadata(uid, entry)
        except OSError as err:
            log.error("%s (UID %s): writing its device metadata files failed: %s", label, uid, err)

    def _fault(self, point: FaultPoint) -> None:
        if self._fault_hook is not None:
            self._fault_hook(point)

    def _orphan_specs(self, entries: dict[str, ClaimEntry]) -> list[str]:
        """Spec files of this driver that no entry owns; logged, left in place."""
        known = {spec_file_name(self._driver_name, uid) for uid in entries}
        orphans = [f for f in self._cdi.spec_files() if f not in known]
        for orphan in orphans:
            log.warning(
                "CDI spec %s has no checkpoint entry; left in place (unprepare removes it)",
                self._cdi.path(orphan),
            )
        return orphans

    def _orphan_metadata(
        self, entries: dict[str, ClaimEntry], orphan_specs: list[str]
    ) -> list[str]:
        """Remove the metadata files of claims with no entry and no spec; the UIDs removed.

        A claim whose orphan spec is kept keeps its files too: a container restarted
        from that spec mounts them. A failed removal is logged and retried at the
        next start-up.
        """
        if self._metadata is None:
            return []
        specs = set(orphan_specs)
        removed = []
        for uid in self._metadata.claim_uids():
            if uid in entries or spec_file_name(self._driver_name, uid) in specs:
                continue
            try:
                self._metadata.remove(uid)
            except OSError as err:
                log.error(
                    "device metadata files of claim UID %s: removing them failed: %s", uid, err
                )
                continue
            removed.append(uid)
            log.warning(
                "device metadata files of claim UID %s: no checkpoint entry and no spec, removed",
                uid,
            )
        return removed
