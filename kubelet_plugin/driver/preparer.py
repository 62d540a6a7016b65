"""GpuDriver: prepares and unprepares claims on this node, crash-safely.

Preparing one claim, in order:

1. Done already (``PrepareCompleted`` in the checkpoint for this UID)? Answer
   the recorded CDI IDs; rewrite the spec from the checkpoint if someone
   deleted it. No API read, no other work.
2. Read the claim (:class:`~kubelet_plugin.claim_source.ClaimSource`) and plan
   (:func:`dra_driver.preparation.plan_preparation`): UID, allocation, this
   driver's results in this node's pool, devices present, opaque config valid.
3. Checkpoint ``PrepareStarted`` (after checking no other claim holds the devices).
   Dynamic MIG devices are in it with their placement, so that a crash while
   creating them leaves a record to destroy them by.
4. Create the dynamic MIG devices (:class:`~dra_driver.discovery.model.MigManager`);
   write the CDI spec atomically.
5. Checkpoint ``PrepareCompleted``; answer the CDI IDs.

Any failure answers that claim's error and undoes steps 3-4 (MIG devices it
created destroyed, spec removed, entry dropped), so a retry starts clean; a
crash in between is undone by :meth:`GpuDriver.start` at the next start-up,
which rolls back ``PrepareStarted`` entries (destroying their dynamic MIG
devices by placement), makes sure the dynamic MIG devices of
``PrepareCompleted`` ones exist (MIG devices do not survive a reboot),
writes again the missing specs of ``PrepareCompleted`` ones (all of them after
a reboot: the CDI root is a tmpfs), and removes specs, MIG devices and entries
of claims that are gone from the API server. Unprepare destroys a claim's
dynamic MIG devices after removing its spec.

Durability: the ``PrepareStarted`` save is not fsynced to the directory (a
power cut that loses it also empties the CDI tmpfs; a spec that survives is
rewritten identically by the retried prepare); the ``PrepareCompleted`` save
and the unprepare save are fully durable before the kubelet hears of success.

Concurrency: calls for different claims run in parallel; calls for the same
claim UID are serialised by a per-claim lock. With a ``node_lock`` (two plugin
instances on the node during a rolling update) every call, and the start-up
recovery, runs holding that lock instead, and first adopts the checkpoint as
the other instance left it. Checkpoint saves are group-committed:
a save writes every change made so far, so concurrent prepares share fsyncs, and
each entry is encoded once, when it changes, not at every save.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

from api.checkpoint import (
    Checkpoint,
    ClaimEntry,
    MigRecord,
    assemble_checkpoint,
    encode_claim_entry,
)
from api.errors import CheckpointError, PrepareError
from api.resource_v1 import claim_label
from dra_driver.cdi import HostFiles, encode_cdi_spec, spec_file_name
from dra_driver.discovery.model import Gpu, MigDevice, MigManager, MigProfile, NodeInventory
from dra_driver.preparation import (
    PreparationPlan,
    checkpoint_devices,
    plan_from_checkpoint,
    plan_preparation,
    with_mig_devices,
)
from kubelet_plugin.cdi_writer import CdiWriter, remove_durably
from kubelet_plugin.checkpoint_store import CheckpointCorruptError, CheckpointStore
from kubelet_plugin.claim_source import ClaimSource
from kubelet_plugin.node_driver import ClaimRef, PreparedDevice, PrepareResult
from kubelet_plugin.node_lock import NodeFileLock

__all__ = ["FaultPoint", "GpuDriver", "RecoveryReport"]

log = logging.getLogger(__name__)

#: Points where a test can stop the process (see ``fault_hook``): after the
#: PrepareStarted save, after creating the claim's dynamic MIG devices, after the
#: spec write, after the PrepareCompleted save, and after an unprepare removed
#: the spec but before it dropped the entry.
FaultPoint: TypeAlias = Literal[
    "checkpoint-started", "mig-created", "spec-written", "prepare-completed", "spec-removed"
]


@dataclass
class RecoveryReport:
    """What :meth:`GpuDriver.start` did, by claim UID."""

    rolled_back: list[str] = field(default_factory=list)
    """PrepareStarted entries undone (spec removed, entry dropped)."""
    rewritten: list[str] = field(default_factory=list)
    """PrepareCompleted claims whose spec was written again (missing, or a new boot)."""
    removed: list[str] = field(default_factory=list)
    """Claims gone from the API server (deleted, or replaced by one with another UID)."""
    unverified: list[str] = field(default_factory=list)
    """Claims kept because the API server could not be asked."""
    orphan_specs: list[str] = field(default_factory=list)
    """Spec files of this driver without a checkpoint entry (left in place)."""
    checkpoint_corrupt: bool = False


class GpuDriver:
    """The :class:`~kubelet_plugin.node_driver.NodeDriver` of this project.

    Call :meth:`start` once before serving. ``pool_name`` defaults to the node
    name (the node-local pool the ResourceSlices publish). ``boot_id`` is the
    kernel's boot ID (:func:`~kubelet_plugin.checkpoint_store.read_boot_id`).
    ``fault_hook`` is called at each :data:`FaultPoint`; tests pass one that
    kills the process, production passes none. ``mig_manager`` creates and
    destroys dynamic MIG devices; without one, a claim for a MIG placement of a
    partitionable GPU fails with an error saying so (static MIG devices and
    full GPUs need none). ``node_lock`` is shared with another plugin instance
    on the node (rolling update): see the module docstring.
    """

    def __init__(
        self,
        *,
        driver_name: str,
        inventory: NodeInventory,
        claim_source: ClaimSource,
        checkpoints: CheckpointStore,
        cdi: CdiWriter,
        host: HostFiles,
        boot_id: str,
        pool_name: str | None = None,
        fault_hook: Callable[[FaultPoint], None] | None = None,
        mig_manager: MigManager | None = None,
        node_lock: NodeFileLock | None = None,
    ) -> None:
        self.driver_name = driver_name
        self.pool_name = pool_name or inventory.node_name
        self._inventory = inventory
        self._claims = claim_source
        self._store = checkpoints
        self._cdi = cdi
        self._host = host
        self._boot_id = boot_id
        self._fault_hook = fault_hook
        self._migs = mig_manager
        self._node_lock = node_lock
        self._entries: dict[str, ClaimEntry] = {}
        # Each entry's JSON, kept next to it, so a save encodes nothing but the change.
        self._encoded: dict[str, str] = {}
        self._state_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._changes = 0
        self._saved = 0
        self._synced = 0
        self._locks_guard = threading.Lock()
        self._claim_locks: dict[str, tuple[threading.Lock, int]] = {}

    # --- public surface ------------------------------------------------------------

    @property
    def inventory(self) -> NodeInventory:
        return self._inventory

    def update_inventory(self, inventory: NodeInventory) -> None:
        """Use a newer discovery result for claims prepared from now on."""
        self._inventory = inventory

    def prepared(self) -> Mapping[str, ClaimEntry]:
        """A snapshot of the checkpoint entries, by claim UID."""
        with self._state_lock:
            return dict(self._entries)

    def start(self) -> RecoveryReport:
        """Load the checkpoint and repair what a crash or a reboot left behind.

        A corrupt checkpoint is moved aside (logged by the store) and the driver
        starts empty; a checkpoint of a newer version raises CheckpointError
        (refuse to run rather than rewrite state this version does not know).
        """
        with self._serialised(adopt=False):
            return self._recover()

    def _recover(self) -> RecoveryReport:
        report = RecoveryReport()
        self._cdi.ensure_root()
        self._cdi.remove_stale_temp_files()
        try:
            checkpoint = self._store.load()
        except CheckpointCorruptError:
            checkpoint = Checkpoint()
            report.checkpoint_corrupt = True
        entries = dict(checkpoint.claims)
        api_error: PrepareError | None = None
        for uid in sorted(entries):
            entry = entries[uid]
            label = claim_label(entry.namespace, entry.name)
            if entry.state == "PrepareStarted":
                remove_durably(Path(entry.cdi_spec_path))
                self._destroy_migs(label, _dynamic_migs(entry))
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
                    remove_durably(Path(entry.cdi_spec_path))
                    self._destroy_migs(label, _dynamic_migs(entry))
                    del entries[uid]
                    report.removed.append(uid)
                    log.info("%s (UID %s): gone from the API server, spec removed", label, uid)
                    continue
            file_name = spec_file_name(self.driver_name, uid)
            recreated = False
            if _dynamic_migs(entry):
                try:
                    entry, recreated = self._ensure_migs(entry)
                except PrepareError as err:
                    # Kept: unprepare destroys what exists; a container started now fails.
                    log.error("%s (UID %s): its MIG devices cannot be made: %s", label, uid, err)
                entries[uid] = entry
            if recreated or entry.boot_id != self._boot_id or not self._cdi.exists(file_name):
                try:
                    entries[uid] = self._rewrite_spec(uid, entry)
                except OSError as err:
                    # Kept: the next prepare of this claim tries again.
                    log.error("%s (UID %s): writing its CDI spec failed: %s", label, uid, err)
                else:
                    report.rewritten.append(uid)
        known = {spec_file_name(self.driver_name, uid) for uid in entries}
        report.orphan_specs = [f for f in self._cdi.spec_files() if f not in known]
        for orphan in report.orphan_specs:
            log.warning(
                "CDI spec %s has no checkpoint entry; left in place (unprepare removes it)",
                self._cdi.path(orphan),
            )
        encoded = {uid: encode_claim_entry(entry) for uid, entry in entries.items()}
        with self._state_lock:
            self._entries = entries
            self._encoded = encoded
            self._changes += 1
        self._commit()
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

    def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        """Prepare each claim; see the module docstring. Never raises."""
        try:
            with self._serialised():
                return {claim.uid: self._prepare_one(claim) for claim in claims}
        except (CheckpointError, OSError) as err:  # the node lock or the other's checkpoint
            return {
                claim.uid: PrepareResult(error=f"{claim}: {err}; the kubelet retries")
                for claim in claims
            }

    def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str | None]:
        """Remove each claim's spec and entry; an unknown claim succeeds. Never raises.

        One durable checkpoint save covers all claims of the call.
        """
        answers: dict[str, str | None] = {claim.uid: None for claim in claims}
        try:
            with self._serialised():
                answers.update((claim.uid, self._unprepare_one(claim)) for claim in claims)
                self._commit()
        except (CheckpointError, OSError) as err:
            log.error("unprepare: %s", err)
            return {
                uid: answer or f"claim UID {uid}: unpreparing failed: {err}; the kubelet retries"
                for uid, answer in answers.items()
            }
        return answers

    # --- one claim ---------------------------------------------------------------------

    def _prepare_one(self, ref: ClaimRef) -> PrepareResult:
        started = time.monotonic()
        if not (ref.uid and ref.namespace and ref.name):
            return PrepareResult(
                error=f"{ref} (UID {ref.uid!r}): namespace, name and uid are all required"
            )
        try:
            with self._claim_lock(ref.uid):
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
        with self._state_lock:
            entry = self._entries.get(ref.uid)
        if entry is not None and entry.state == "PrepareCompleted":
            if not self._cdi.exists(spec_file_name(self.driver_name, ref.uid)):
                log.warning("%s (UID %s): CDI spec was missing, writing it again", ref, ref.uid)
                entry = self._rewrite_spec(ref.uid, entry)
                self._set_entry(ref.uid, entry)
                self._commit()
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
            inventory=self._inventory,
            driver_name=self.driver_name,
            pool_name=self.pool_name,
            host=self._host,
        )
        if not plan.devices:
            # Nothing of this driver to inject; a stale attempt may still need undoing.
            if entry is not None:
                self._roll_back(ref.uid)
            return PrepareResult(devices=())

        spec_path = str(self._cdi.path(plan.spec_file_name))
        new_entry = ClaimEntry(
            namespace=ref.namespace,
            name=ref.name,
            state="PrepareStarted",
            boot_id=self._boot_id,
            cdi_spec_path=spec_path,
            devices=checkpoint_devices(plan),
        )
        new_text = encode_claim_entry(new_entry)
        with self._state_lock:
            self._check_devices_free(ref, plan)
            self._put(ref.uid, new_entry, new_text)
        created: list[MigRecord] = []
        try:
            # Not durable: a power cut that loses this entry also empties the CDI
            # tmpfs and takes the MIG devices with it, or leaves a spec that the same
            # prepare rewrites identically. A process crash still finds it, with the
            # placements of the MIG devices to destroy. The Completed save below is
            # durable before the kubelet hears of success.
            self._commit(durable=False)
            self._fault("checkpoint-started")
            if plan.pending_migs:
                plan = self._create_migs(ref, plan, created)
                self._fault("mig-created")
            assert plan.spec is not None  # devices, none pending
            self._cdi.write(plan.spec_file_name, encode_cdi_spec(plan.spec))
            self._fault("spec-written")
            completed = new_entry.model_copy(
                update={"state": "PrepareCompleted", "devices": checkpoint_devices(plan)}
            )
            self._set_entry(ref.uid, completed)
            self._commit()
        except BaseException:
            self._destroy_migs(str(ref), created)
            self._roll_back(ref.uid)
            raise
        self._fault("prepare-completed")
        return _result(completed)

    def _unprepare_one(self, ref: ClaimRef) -> str | None:
        if not ref.uid:
            return f"{ref}: uid is required"
        try:
            with self._claim_lock(ref.uid):
                with self._state_lock:
                    entry = self._entries.get(ref.uid)
                # Remove the spec first: a crash before the entry is dropped leaves an
                # entry whose spec start-up rewrites or removes, never a spec nobody owns.
                path = (
                    Path(entry.cdi_spec_path)
                    if entry is not None
                    else self._cdi.path(spec_file_name(self.driver_name, ref.uid))
                )
                removed = remove_durably(path)
                self._fault("spec-removed")
                if entry is not None:
                    failed = self._destroy_migs(str(ref), _dynamic_migs(entry))
                    if failed:
                        # Entry kept: the kubelet's retry destroys what is left.
                        return f"{ref}: {failed}; the kubelet retries"
                    with self._state_lock:
                        self._drop(ref.uid)
        except Exception as err:
            log.exception("unprepare %s (UID %s) failed", ref, ref.uid)
            return f"{ref}: unpreparing failed: {err}; the kubelet retries"
        if entry is not None or removed:
            log.info("unprepared %s (UID %s)", ref, ref.uid)
        return None

    # --- helpers -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _serialised(self, *, adopt: bool = True) -> Iterator[None]:
        """Hold the node lock (if any) inside; first adopt the other instance's changes."""
        if self._node_lock is None:
            yield
            return
        with self._node_lock.held():
            if adopt:
                self._adopt_checkpoint()
            yield

    def _adopt_checkpoint(self) -> None:
        """Take the checkpoint on disk as the state, when another instance changed it.

        Caller holds the node lock, so no save of ours is pending and the other
        instance is between calls. Raises CheckpointError (a newer version).
        """
        if not self._store.changed_elsewhere():
            return
        try:
            checkpoint = self._store.load()
        except CheckpointCorruptError:
            checkpoint = Checkpoint()
        entries = dict(checkpoint.claims)
        encoded = {uid: encode_claim_entry(entry) for uid, entry in entries.items()}
        with self._state_lock:
            self._entries = entries
            self._encoded = encoded
            # What is on disk is the state: nothing of ours waits to be saved.
            self._saved = self._synced = self._changes
        log.info(
            "checkpoint %s was changed by the other plugin instance of this node: %d claim(s) "
            "prepared",
            self._store.path,
            len(entries),
        )

    def _check_devices_free(self, ref: ClaimRef, plan: PreparationPlan) -> None:
        """The last line of defence: a device is prepared for one claim at a time.

        Admin access and shared (consumable-capacity) allocations may overlap.
        Caller holds the state lock.
        """
        for device in plan.devices:
            for uid, other in self._entries.items():
                if uid == ref.uid:
                    continue
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

    def _mig_target(self, record: MigRecord, who: str) -> tuple[Gpu, MigProfile, tuple[int, int]]:
        """The GPU, profile and placement of a MIG record, from the current inventory.

        The GPU is found by UUID: its minor number, hence its name, may change
        across a reboot. Raises _GpuGoneError when the node no longer has it.
        """
        gpu = next((g for g in self._inventory.gpus if g.uuid == record.parent_uuid), None)
        profile = None
        if gpu is not None:
            profile = next((p for p in gpu.mig_profiles if p.profile_id == record.profile_id), None)
        if gpu is None or profile is None:
            raise _GpuGoneError(
                f"MIG device {record.profile} at memory slice {record.placement_start} needs GPU "
                f"{record.parent_device} ({record.parent_uuid}) with profile ID "
                f"{record.profile_id}, which this node no longer has",
                claim=who,
            )
        return gpu, profile, (record.placement_start, record.placement_size)

    def _create_migs(
        self, ref: ClaimRef, plan: PreparationPlan, created: list[MigRecord]
    ) -> PreparationPlan:
        """Create the plan's dynamic MIG devices, appending each to ``created`` as it exists."""
        if self._migs is None:
            names = ", ".join(d.device for d in plan.pending_migs)
            raise PrepareError(
                f"{names}: a MIG placement to create, but this node's GPU backend cannot create "
                "MIG devices; publish without partitionable devices (--partitionable=false)",
                claim=str(ref),
            )
        made: dict[str, MigDevice] = {}
        for device in plan.pending_migs:
            assert device.mig is not None  # pending
            gpu, profile, placement = self._mig_target(device.mig, str(ref))
            try:
                made[device.device] = self._migs.create(gpu, profile, placement)
            except PrepareError as err:
                raise PrepareError(
                    f"creating MIG device {device.device} failed: {err}",
                    claim=str(ref),
                    retryable=err.retryable,
                ) from err
            created.append(device.mig)
            log.info("%s: created MIG device %s (%s)", ref, device.device, made[device.device].uuid)
        return with_mig_devices(plan, made, driver_name=self.driver_name, host=self._host)

    def _ensure_migs(self, entry: ClaimEntry) -> tuple[ClaimEntry, bool]:
        """Make sure a prepared claim's dynamic MIG devices exist; (entry, whether one changed).

        Creating is idempotent (an existing device is returned), so this only
        makes anew what a reboot took away; a device that comes back with
        another UUID or capability node updates the entry (and the spec).
        """
        if self._migs is None:
            raise PrepareError("no MIG manager on this node")
        label = claim_label(entry.namespace, entry.name)
        records = []
        changed = False
        for record in entry.devices:
            if record.mig is not None and record.mig.dynamic:
                gpu, profile, placement = self._mig_target(record.mig, label)
                mig = self._migs.create(gpu, profile, placement)
                updated = record.model_copy(
                    update={
                        "uuid": mig.uuid,
                        "mig": record.mig.model_copy(
                            update={
                                "gpu_instance_id": mig.gpu_instance_id,
                                "compute_instance_id": mig.compute_instance_id,
                                "cap_device_nodes": mig.cap_device_nodes,
                            }
                        ),
                    }
                )
                changed = changed or updated != record
                record = updated  # noqa: PLW2901 - the updated copy replaces it
            records.append(record)
        return entry.model_copy(update={"devices": tuple(records)}), changed

    def _destroy_migs(self, who: str, records: Sequence[MigRecord]) -> str | None:
        """Destroy these dynamic MIG devices; what failed, or None. Logs, never raises."""
        problems = []
        for record in records:
            try:
                if self._migs is None:
                    raise PrepareError("no MIG manager on this node")
                try:
                    gpu, profile, placement = self._mig_target(record, who)
                except _GpuGoneError as err:
                    # A MIG device cannot outlive its GPU: nothing left to destroy.
                    log.warning("%s: %s; nothing to destroy", who, err)
                    continue
                if self._migs.destroy(gpu, profile, placement):
                    log.info(
                        "%s: destroyed MIG device %s at memory slice %d of %s",
                        who,
                        record.profile,
                        record.placement_start,
                        record.parent_device,
                    )
            except Exception as err:
                log.error("%s: destroying MIG device %s failed: %s", who, record.profile, err)
                problems.append(f"destroying MIG device {record.profile} failed: {err}")
        return "; ".join(problems) or None

    def _rewrite_spec(self, uid: str, entry: ClaimEntry) -> ClaimEntry:
        plan = plan_from_checkpoint(uid, entry, driver_name=self.driver_name, host=self._host)
        if plan.spec is not None:
            self._cdi.write(plan.spec_file_name, encode_cdi_spec(plan.spec))
        return entry.model_copy(
            update={
                "boot_id": self._boot_id,
                "cdi_spec_path": str(self._cdi.path(plan.spec_file_name)),
            }
        )

    def _roll_back(self, uid: str) -> None:
        """Undo a prepare attempt: spec removed, entry dropped; errors logged, not raised.

        What cannot be undone now is undone by start-up recovery (the entry is
        still PrepareStarted on disk).
        """
        try:
            remove_durably(self._cdi.path(spec_file_name(self.driver_name, uid)))
            with self._state_lock:
                entry = self._entries.get(uid)
                if entry is not None and entry.state == "PrepareStarted":
                    self._drop(uid)
            self._commit()
        except Exception:
            log.exception("rolling back the prepare of claim UID %s failed", uid)

    def _set_entry(self, uid: str, entry: ClaimEntry) -> None:
        text = encode_claim_entry(entry)
        with self._state_lock:
            self._put(uid, entry, text)

    def _put(self, uid: str, entry: ClaimEntry, text: str) -> None:
        """Add or replace an entry and its JSON. Caller holds the state lock."""
        self._entries[uid] = entry
        self._encoded[uid] = text
        self._changes += 1

    def _drop(self, uid: str) -> None:
        """Remove an entry and its JSON. Caller holds the state lock."""
        self._entries.pop(uid, None)
        self._encoded.pop(uid, None)
        self._changes += 1

    def _commit(self, *, durable: bool = True) -> None:
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

    def _fault(self, point: FaultPoint) -> None:
        if self._fault_hook is not None:
            self._fault_hook(point)

    @contextlib.contextmanager
    def _claim_lock(self, uid: str) -> Iterator[None]:
        with self._locks_guard:
            lock, users = self._claim_locks.get(uid, (threading.Lock(), 0))
            self._claim_locks[uid] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._locks_guard:
                lock, users = self._claim_locks[uid]
                if users == 1:
                    del self._claim_locks[uid]
                else:
                    self._claim_locks[uid] = (lock, users - 1)


class _GpuGoneError(PrepareError):
    """The GPU (or its MIG profile) a MIG record names is not on this node any more."""


def _dynamic_migs(entry: ClaimEntry) -> list[MigRecord]:
    return [d.mig for d in entry.devices if d.mig is not None and d.mig.dynamic]


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
