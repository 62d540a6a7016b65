"""GpuDriver: the :class:`~kubelet_plugin.node_driver.NodeDriver` of this project, wired.

It builds the rooms of :mod:`kubelet_plugin.driver` (journal, MIG lifecycle,
claim preparer, start-up recovery) and holds the node lock around each call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from api.checkpoint import ClaimEntry
from api.errors import CheckpointError
from dra_driver.cdi import HostFiles
from dra_driver.discovery.model import MigManager, NodeInventory
from kubelet_plugin.cdi_writer import CdiWriter
from kubelet_plugin.checkpoint_store import CheckpointStore
from kubelet_plugin.claim_source import ClaimSource
from kubelet_plugin.driver.journal import ClaimJournal
from kubelet_plugin.driver.metadata_files import MetadataFiles
from kubelet_plugin.driver.mig_lifecycle import MigLifecycle
from kubelet_plugin.driver.preparer import ClaimPreparer, FaultPoint
from kubelet_plugin.driver.recovery import RecoveryReport, StartupRecovery
from kubelet_plugin.enforcement import Enforcers, SharingEnforcer
from kubelet_plugin.node_driver import ClaimRef, PrepareResult
from kubelet_plugin.node_lock import NodeFileLock

__all__ = ["PREPARE_WORKERS", "GpuDriver"]

log = logging.getLogger(__name__)

#: Claims of one prepare call worked on at once. Each waits mostly on fsyncs and
#: the API server, and concurrent claims share checkpoint saves (group commit),
#: so a few threads turn a call's many fsyncs into few; more buy nothing.
PREPARE_WORKERS: Final = 16


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
    on the node (rolling update): see :mod:`kubelet_plugin.driver`. ``enforcers``
    apply a shared GPU's settings on the node (:mod:`kubelet_plugin.enforcement`:
    MPS control daemons, the time slice); without them, sharing settings reach
    containers as env only.

    The claims of one prepare call are prepared concurrently, at most
    ``prepare_workers`` at a time (shared by all calls); unprepare stays one
    claim after another, with one save for the call.

    A prepare attempt that cannot be undone (its spec cannot be removed) is
    kept cleanup-pending (:meth:`cleanup_pending`) and retried at each call
    and every ``cleanup_retry_s`` seconds by a thread that runs only while
    one is pending; :meth:`close` stops it.
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
        cleanup_retry_s: float = 30.0,
        prepare_workers: int = PREPARE_WORKERS,
        enforcers: Sequence[SharingEnforcer] = (),
    ) -> None:
        if prepare_workers < 1:
            raise ValueError(f"prepare_workers must be at least 1, got {prepare_workers}")
        self.driver_name = driver_name
        self.pool_name = pool_name or inventory.node_name
        self._inventory = inventory
        self._node_lock = node_lock
        self._enforcers = Enforcers(enforcers)
        self._journal = ClaimJournal(checkpoints)
        self._cleanup_retry_s = cleanup_retry_s
        self._closed = threading.Event()
        self._retrier: threading.Thread | None = None
        self._retrier_guard = threading.Lock()
        self._workers = ThreadPoolExecutor(prepare_workers, thread_name_prefix="prepare-claim")
        # KEP-5304 device metadata files, where the host files name their root.
        metadata = MetadataFiles(Path(host.metadata_root)) if host.metadata_root else None
        migs = MigLifecycle(
            mig_manager, driver_name=driver_name, host=host, inventory=lambda: self._inventory
        )
        self._preparer = ClaimPreparer(
            driver_name=driver_name,
            pool_name=self.pool_name,
            inventory=lambda: self._inventory,
            claim_source=claim_source,
            journal=self._journal,
            cdi=cdi,
            host=host,
            boot_id=boot_id,
            migs=migs,
            fault_hook=fault_hook,
            enforcers=self._enforcers,
            metadata=metadata,
        )
        self._recovery = StartupRecovery(
            driver_name=driver_name,
            boot_id=boot_id,
            journal=self._journal,
            claim_source=claim_source,
            cdi=cdi,
            migs=migs,
            rewrite_spec=self._preparer.rewrite_spec,
            fault_hook=fault_hook,
            metadata=metadata,
            restore_metadata=self._preparer.restore_metadata,
        )

    @property
    def inventory(self) -> NodeInventory:
        return self._inventory

    def update_inventory(self, inventory: NodeInventory) -> None:
        """Use a newer discovery result for claims prepared from now on."""
        self._inventory = inventory

    def prepared(self) -> Mapping[str, ClaimEntry]:
        """A snapshot of the checkpoint entries, by claim UID."""
        return self._journal.snapshot()

    def start(self) -> RecoveryReport:
        """Load the checkpoint and repair what a crash or a reboot left behind.

        A corrupt checkpoint is moved aside (logged by the store) and the driver
        starts empty; a checkpoint of a newer version raises CheckpointError
        (refuse to run rather than rewrite state this version does not know).
        """
        with self._serialised(adopt=False):
            report = self._recovery.run()
            # After recovery: only the claims still prepared hold their GPUs.
            self._enforcers.start(self._journal.snapshot())
        self._watch_cleanups()
        return report

    def cleanup_pending(self) -> Mapping[str, str]:
        """Prepare attempts that could not be undone yet: claim UID to why.

        Each holds no device; its spec file is removed by a later retry.
        """
        return self._journal.cleanup_pending()

    def retry_cleanups(self) -> Mapping[str, str]:
        """Try again to undo the cleanup-pending attempts; returns those still pending.

        Never raises: a failure is logged and retried later.
        """
        try:
            with self._serialised():
                return self._preparer.retry_cleanups()
        except (CheckpointError, OSError) as err:
            log.error("retrying the cleanup of failed prepares: %s", err)
            return self._journal.cleanup_pending()

    def close(self) -> None:
        """Stop the cleanup retries and the prepare workers (the plugin is stopping)."""
        self._closed.set()
        self._workers.shutdown(wait=True)
        self._enforcers.close()
        with self._retrier_guard:
            retrier = self._retrier
        if retrier is not None:
            retrier.join()

    def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        """Prepare each claim; see :mod:`kubelet_plugin.driver`. Never raises.

        The call's ticket is taken as it arrives, before the node lock: a claim
        of this call that an unprepare reaches first is not prepared by it.
        """
        with self._preparer.ledger.batch() as ticket:
            try:
                with self._serialised():
                    self._retry_pending()
                    return self._prepare_each(claims, ticket)
            except (CheckpointError, OSError) as err:  # the node lock or the other's checkpoint
                return {
                    claim.uid: PrepareResult(error=f"{claim}: {err}; the kubelet retries")
                    for claim in claims
                }
            finally:
                self._watch_cleanups()

    def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str | None]:
        """Remove each claim's spec and entry; an unknown claim succeeds. Never raises.

        One durable checkpoint save covers all claims of the call.
        """
        answers: dict[str, str | None] = {claim.uid: None for claim in claims}
        try:
            with self._serialised():
                self._retry_pending()
                answers.update((claim.uid, self._preparer.unprepare(claim)) for claim in claims)
                self._journal.commit()
        except (CheckpointError, OSError) as err:
            log.error("unprepare: %s", err)
            return {
                uid: answer or f"claim UID {uid}: unpreparing failed: {err}; the kubelet retries"
                for uid, answer in answers.items()
            }
        return answers

    def _prepare_each(self, claims: Sequence[ClaimRef], ticket: int) -> dict[str, PrepareResult]:
        """Each claim's result, the claims worked on concurrently (see the class docstring).

        Caller holds the node lock (if any): the workers prepare under it.
        Claims with the same UID are serialised by the preparer's claim lock.
        """
        if len(claims) <= 1:
            return {claim.uid: self._preparer.prepare(claim, ticket) for claim in claims}
        results = self._workers.map(lambda claim: self._preparer.prepare(claim, ticket), claims)
        return {claim.uid: result for claim, result in zip(claims, results, strict=True)}

    def _retry_pending(self) -> None:
        """Retry cleanups before a call's own work; caller holds the node lock (if any)."""
        if self._journal.cleanup_pending():
            self._preparer.retry_cleanups()

    def _watch_cleanups(self) -> None:
        """Start the retry thread when a cleanup is pending and none runs."""
        if not self._journal.cleanup_pending() or self._closed.is_set():
            return
        with self._retrier_guard:
            if self._retrier is not None:
                return
            self._retrier = threading.Thread(
                target=self._retry_until_clean, name="cdi-cleanup-retry", daemon=True
            )
            self._retrier.start()

    def _retry_until_clean(self) -> None:
        while not self._closed.wait(self._cleanup_retry_s):
            if self.retry_cleanups():
                continue
            with self._retrier_guard:
                # Checked again under the guard: one marked meanwhile keeps this thread.
                if not self._journal.cleanup_pending():
                    self._retrier = None
                    return

    @contextlib.contextmanager
    def _serialised(self, *, adopt: bool = True) -> Iterator[None]:
        """Hold the node lock (if any) inside; first adopt the other instance's changes."""
        if self._node_lock is None:
            yield
            return
        with self._node_lock.held():
            if adopt and self._journal.adopt():
                # Claims the other instance prepared or unprepared hold their GPUs or not.
                self._enforcers.sync(self._journal.snapshot())
            yield
