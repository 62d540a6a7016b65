"""Preparing and unpreparing one claim: the per-claim steps of :mod:`kubelet_plugin.driver`.

:class:`ClaimPreparer` walks one claim through the steps the package
docstring lists (checkpoint, MIG devices, device metadata files, CDI spec,
checkpoint again) and undoes its own attempt when a step fails; calls for the
same claim UID are serialised by a per-claim lock.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeAlias

from api.checkpoint import ClaimEntry, MigRecord, spec_digest
from api.errors import PrepareError
from api.resource_v1 import claim_label
from dra_driver.cdi import HostFiles, encode_cdi_spec, spec_file_name
from dra_driver.discovery.model import NodeInventory
from dra_driver.preparation import PreparationPlan, plan_preparation
from dra_driver.prepared_claims import checkpoint_devices, plan_from_checkpoint
from kubelet_plugin.cdi_writer import CdiWriter, remove_durably
from kubelet_plugin.claim_source import ClaimSource
from kubelet_plugin.driver.journal import ClaimJournal
from kubelet_plugin.driver.metadata_files import MetadataFiles
from kubelet_plugin.driver.mig_lifecycle import MigLifecycle, dynamic_migs
from kubelet_plugin.driver.ordering import ClaimLocks, UnprepareLedger
from kubelet_plugin.enforcement import Enforcers
from kubelet_plugin.node_driver import (
    ClaimRef,
    PreparedDevice,
    PrepareResult,
    check_claim_ref,
    claim_ref_problem,
)

__all__ = ["ClaimPreparer", "FaultPoint", "log_spec_rewrite"]

log = logging.getLogger(__name__)

#: Points where a test can stop the process (see ``fault_hook``): after the
#: PrepareStarted save, after creating the claim's dynamic MIG devices, after the
#: spec write, after the PrepareCompleted save, and after an unprepare removed
#: the spec but before it dropped the entry; at start-up, after recovery removed
#: a spec (an interrupted prepare, a claim gone) or wrote one again, each before
#: the recovered checkpoint is saved.
FaultPoint: TypeAlias = Literal[
    "checkpoint-started",
    "mig-created",
    "spec-written",
    "prepare-completed",
    "spec-removed",
    "recovery-spec-removed",
    "recovery-spec-rewritten",
]


def log_spec_rewrite(label: str, uid: str, path: Path, problem: str, entry: ClaimEntry) -> None:
    """Say that a prepared claim's spec is written again from the checkpoint, and why.

    A warning: the file is missing, or someone else changed it. Info for an
    entry from checkpoint version 1 (no digest yet): written again once, as expected.
    """
    level = logging.INFO if entry.cdi_spec_digest is None else logging.WARNING
    log.log(
        level,
        "%s (UID %s): CDI spec %s %s; writing it again from the checkpoint",
        label,
        uid,
        path,
        problem,
    )


class ClaimPreparer:
    """Prepares and unprepares one claim at a time; thread-safe.

    :meth:`prepare` and :meth:`unprepare` answer for their claim and never
    raise for it; the caller commits the journal after unprepares (one save
    for a whole kubelet call). ``inventory`` returns the node's current
    discovery result. ``fault_hook`` is called at each :data:`FaultPoint`.
    """

    def __init__(
        self,
        *,
        driver_name: str,
        pool_name: str,
        inventory: Callable[[], NodeInventory],
        claim_source: ClaimSource,
        journal: ClaimJournal,
        cdi: CdiWriter,
        host: HostFiles,
        boot_id: str,
        migs: MigLifecycle,
        fault_hook: Callable[[FaultPoint], None] | None = None,
        enforcers: Enforcers | None = None,
        metadata: MetadataFiles | None = None,
    ) -> None:
        self._driver_name = driver_name
        self._pool_name = pool_name
        self._inventory = inventory
        self._claims = claim_source
        self._journal = journal
        self._cdi = cdi
        self._host = host
        self._boot_id = boot_id
        self._migs = migs
        self._fault_hook = fault_hook
        self._enforcers = enforcers or Enforcers()
        self._metadata = metadata
        self._locks = ClaimLocks()
        self.ledger = UnprepareLedger()
        """Tickets of prepare calls and the unprepares that came after them."""

    # --- prepare ------------------------------------------------------------------------

    def prepare(self, ref: ClaimRef, ticket: int | None = None) -> PrepareResult:
        """Prepare one claim: its devices, or its error (logged). Never raises an Exception.

        ``ticket`` is the call's :meth:`UnprepareLedger.batch` ticket: a claim
        unprepared after the call arrived is not prepared (it answers an error),
        so an unprepare the kubelet was told succeeded is never undone.
        """
        started = time.monotonic()
        if not (ref.uid and ref.namespace and ref.name):
            return PrepareResult(
                error=f"{ref} (UID {ref.uid!r}): namespace, name and uid are all required"
            )
        try:
            check_claim_ref(ref)  # before its UID names a file or its name reaches the API
            with self._locks.hold(ref.uid):
                if ticket is not None and self.ledger.unprepared_since(ref.uid, ticket):
                    raise PrepareError(
                        "unprepared by a later NodeUnprepareResources while this "
                        "NodePrepareResources call was still running (the kubelet had given up "
                        "on it); not prepared, the kubelet prepares it again if a pod needs it",
                        claim=str(ref),
                        retryable=True,
                    )
                result = self._prepare_locked(ref)
        except PrepareError as err:
            log.warning("prepare %s (UID %s) failed: %s", ref, ref.uid, err)
            return PrepareResult(error=str(err))
        except Exception as err:  # a per-claim answer, never a crashed RPC
            log.exception("prepare %s (UID %s) failed", ref, ref.uid)
            return PrepareResult(error=f"{ref}: preparing failed: {err}; the kubelet retries")
        log.info(
            "prepared %s (UID %s): %s in %.1f ms",
            ref,
            ref.uid,
            ", ".join(d.device for d in result.devices) or "no devices of this driver",
            (time.monotonic() - started) * 1000,
        )
        return result

    def _prepare_locked(self, ref: ClaimRef) -> PrepareResult:
        entry = self._journal.get(ref.uid)
        if entry is not None and entry.state == "PrepareCompleted":
            # The spec is checked against the digest the checkpoint recorded, not only
            # for being there: content someone else put in its place (a host mount
            # added) must never reach a container.
            file_name = spec_file_name(self._driver_name, ref.uid)
            problem = self._cdi.spec_problem(file_name, entry.cdi_spec_digest)
            if problem is not None:
                log_spec_rewrite(str(ref), ref.uid, self._cdi.path(file_name), problem, entry)
                entry = self.rewrite_spec(ref.uid, entry)
                self._journal.set(ref.uid, entry)
                self._journal.commit()
            else:  # metadata files removed or changed since: written again (only then)
                self.restore_metadata(ref.uid, entry)
            return _result(entry)

        claim = self._claims.get(ref.namespace, ref.name)
        if claim is None:
            raise PrepareError(
                "not found in the API server: it was deleted; nothing to prepare",
                claim=str(ref),
            )
        plan = plan_preparation(
            claim,
            uid=ref.uid,
            inventory=self._inventory(),
            driver_name=self._driver_name,
            pool_name=self._pool_name,
            host=self._host,
        )
        if not plan.devices:
            # Nothing of this driver to inject; a stale attempt may still need undoing.
            if entry is not None:
                self._roll_back(ref.uid)
            return PrepareResult(devices=())

        new_entry = ClaimEntry(
            namespace=ref.namespace,
            name=ref.name,
            state="PrepareStarted",
            boot_id=self._boot_id,
            cdi_spec_path=str(self._cdi.path(plan.spec_file_name)),
            devices=checkpoint_devices(plan),
            device_metadata=plan.device_metadata,
        )
        self._journal.reserve(ref, plan, new_entry)
        created: list[MigRecord] = []
        try:
            # Not durable: a power cut that loses this entry also empties the CDI
            # tmpfs and takes the MIG devices with it, or leaves a spec that the same
            # prepare rewrites identically. A process crash still finds it, with the
            # placements of the MIG devices to destroy. The Completed save below is
            # durable before the kubelet hears of success.
            self._journal.commit(durable=False)
            self._fault("checkpoint-started")
            if plan.pending_migs:
                plan = self._migs.create(ref, plan, created)
                self._fault("mig-created")
            # Before the kubelet hears of success: a container started earlier would
            # run without its MPS daemon or time slice, silently.
            self._enforcers.hold(
                ref.uid,
                str(ref),
                [(d.uuid, d.sharing) for d in plan.devices if d.sharing],
                claim=claim,
            )
            assert plan.spec is not None  # devices, none pending
            # Before the spec that mounts them: a runtime never finds a mount without its file.
            self._write_metadata(ref.uid, plan)
            content = encode_cdi_spec(plan.spec)
            self._cdi.write(plan.spec_file_name, content)
            self._fault("spec-written")
            completed = new_entry.model_copy(
                update={
                    "state": "PrepareCompleted",
                    "devices": checkpoint_devices(plan),
                    "cdi_spec_digest": spec_digest(content),
                }
            )
            self._journal.set(ref.uid, completed)
            self._journal.commit()
        except BaseException:
            self._enforcers.release(ref.uid)
            self._migs.destroy(str(ref), created)
            self._roll_back(ref.uid)
            raise
        self._fault("prepare-completed")
        return _result(completed)

    def _roll_back(self, uid: str) -> bool:
        """Undo a prepare attempt: spec and metadata files removed, entry dropped; errors
        logged, not raised.

        True when undone. A spec that cannot be removed (a read-only or failing
        CDI root, EIO) leaves the entry cleanup-pending (see
        :mod:`~kubelet_plugin.driver.journal`): its devices are free for other
        claims, and :meth:`retry_cleanups`, the next start-up or a new prepare
        of the claim removes it once the cause is gone.
        """
        try:
            _remove_attempt(
                self._cdi.path(spec_file_name(self._driver_name, uid)), self._metadata, uid
            )
            self._journal.drop_started(uid)
            self._journal.commit()
        except OSError as err:
            self._defer_cleanup(uid, err)
            return False
        except Exception:
            log.exception("rolling back the prepare of claim UID %s failed", uid)
            return False
        return True

    def _defer_cleanup(self, uid: str, err: OSError) -> None:
        reason = f"removing its CDI spec or device metadata files failed: {err}"
        if not self._journal.mark_cleanup_pending(uid, reason):
            log.error("rolling back the prepare of claim UID %s: %s", uid, reason)
            return
        entry = self._journal.get(uid)
        label = claim_label(entry.namespace, entry.name) if entry is not None else "claim"
        _log_deferred(label, uid, reason, self._cdi.root)

    def retry_cleanups(self) -> dict[str, str]:
        """Try again to undo every cleanup-pending attempt; returns those still pending."""
        for uid in self._journal.cleanup_pending():
            with self._locks.hold(uid):
                if uid in self._journal.cleanup_pending() and self._roll_back(uid):
                    log.info("claim UID %s: the failed prepare is undone at last", uid)
        return self._journal.cleanup_pending()

    # --- unprepare ----------------------------------------------------------------------

    def unprepare(self, ref: ClaimRef) -> str | None:
        """Remove one claim's spec, MIG devices and entry; None, or the error. Never raises.

        The entry is dropped from the journal, not saved: the caller commits.
        An unknown claim succeeds (its spec, if any, is removed all the same).
        """
        if not ref.uid:
            return f"{ref}: uid is required"
        if (problem := claim_ref_problem(ref)) is not None:
            # Its UID would name the spec file to remove: never one with "/" or "..".
            log.warning("unprepare %s (UID %r) refused: %s", ref, ref.uid, problem)
            return f"{ref}: {problem}"
        try:
            with self._locks.hold(ref.uid):
                entry = self._journal.get(ref.uid)
                # Remove the spec first: a crash before the entry is dropped leaves an
                # entry whose spec start-up rewrites or removes, never a spec nobody owns.
                path = self._cdi.spec_to_remove(
                    spec_file_name(self._driver_name, ref.uid),
                    entry.cdi_spec_path if entry is not None else None,
                )
                removed = remove_durably(path)
                if self._metadata is not None:
                    removed = self._metadata.remove(ref.uid) or removed
                self._fault("spec-removed")
                if entry is not None:
                    failed = self._migs.destroy(str(ref), dynamic_migs(entry))
                    if failed:
                        # Entry kept: the kubelet's retry destroys what is left.
                        return f"{ref}: {failed}; the kubelet retries"
                    self._journal.drop(ref.uid)
                self._enforcers.release(ref.uid)  # an MPS daemon stops with its last claim
                # Still under the claim's lock: a running batch that reaches this
                # claim later sees the unprepare and leaves it alone.
                self.ledger.record_unprepare(ref.uid)
        except Exception as err:
            log.exception("unprepare %s (UID %s) failed", ref, ref.uid)
            return f"{ref}: unpreparing failed: {err}; the kubelet retries"
        if entry is not None or removed:
            log.info("unprepared %s (UID %s)", ref, ref.uid)
        return None

    # --- shared with start-up recovery ----------------------------------------------

    def rewrite_spec(self, uid: str, entry: ClaimEntry) -> ClaimEntry:
        """Write a prepared claim's CDI spec again, from its checkpoint entry alone, and its
        device metadata files where they are missing or differ.

        Returns the entry stamped with this boot, the spec's path and its
        digest (the caller records it). Deterministic: with the same host files
        it writes the bytes the prepare wrote. Raises OSError when writing fails.
        """
        plan = plan_from_checkpoint(uid, entry, driver_name=self._driver_name, host=self._host)
        self._write_metadata(uid, plan)
        digest = None
        if plan.spec is not None:
            content = encode_cdi_spec(plan.spec)
            self._cdi.write(plan.spec_file_name, content)
            digest = spec_digest(content)
        return entry.model_copy(
            update={
                "boot_id": self._boot_id,
                "cdi_spec_path": str(self._cdi.path(plan.spec_file_name)),
                "cdi_spec_digest": digest,
            }
        )

    def restore_metadata(self, uid: str, entry: ClaimEntry) -> None:
        """Write a prepared claim's device metadata files where they are missing or differ
        from what its devices are now. Raises OSError when writing fails."""
        if entry.device_metadata is not None and self._metadata is not None:
            plan = plan_from_checkpoint(uid, entry, driver_name=self._driver_name, host=self._host)
            self._write_metadata(uid, plan)

    # --- helpers ------------------------------------------------------------------------

    def _write_metadata(self, uid: str, plan: PreparationPlan) -> None:
        if self._metadata is not None:
            self._metadata.write_plan(uid, plan, self._inventory(), driver_name=self._driver_name)

    def _fault(self, point: FaultPoint) -> None:
        if self._fault_hook is not None:
            self._fault_hook(point)


def _log_deferred(label: str, uid: str, reason: str, cdi_root: Path) -> None:
    log.error(
        "%s (UID %s): undoing a failed prepare: %s; its devices are free for other "
        "claims, the plugin retries the removal (check that the CDI root %s and the "
        "device metadata directory are writable and healthy)",
        label,
        uid,
        reason,
        cdi_root,
    )


def _remove_attempt(spec: Path, metadata: MetadataFiles | None, uid: str) -> None:
    """Remove a prepare attempt's spec and metadata files, each tried whatever the other
    does (a spec that cannot go never keeps the files, nor the other way round); raises
    the first OSError."""
    removals: list[Callable[[], bool]] = [functools.partial(remove_durably, spec)]
    if metadata is not None:
        removals.append(functools.partial(metadata.remove, uid))
    failures: list[OSError] = []
    for remove in removals:
        try:
            remove()
        except OSError as err:
            failures.append(err)
    if failures:
        raise failures[0]


def _result(entry: ClaimEntry) -> PrepareResult:
    return PrepareResult(
        devices=tuple(
            PreparedDevice(
                requests=record.requests,
                pool=record.pool,
                device=record.device,
                cdi_device_ids=record.cdi_device_ids,
                share_id=record.share_id,
            )
            for record in entry.devices
        )
    )
