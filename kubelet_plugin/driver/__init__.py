"""The driver: prepares and unprepares claims on this node, crash-safely.

Its rooms, one job each:

- :mod:`~kubelet_plugin.driver.gpu_driver`: :class:`GpuDriver`, the
  :class:`~kubelet_plugin.node_driver.NodeDriver` that wires the others and
  holds the node lock;
- :mod:`~kubelet_plugin.driver.preparer`: one claim's prepare and unprepare;
- :mod:`~kubelet_plugin.driver.recovery`: start-up recovery of the checkpoint
  and the CDI files;
- :mod:`~kubelet_plugin.driver.mig_lifecycle`: dynamic MIG devices created
  and destroyed for claims;
- :mod:`~kubelet_plugin.driver.journal`: the checkpoint entries in memory and
  their group-committed saves;
- :mod:`~kubelet_plugin.driver.ordering`: prepares and unprepares of one claim
  kept in the order the kubelet made them;
- :mod:`~kubelet_plugin.driver.metadata_files`: the claims' device metadata files
  (KEP-5304) on disk.

Preparing one claim, in order:

1. Done already (``PrepareCompleted`` in the checkpoint for this UID)? Answer
   the recorded CDI IDs; rewrite the spec from the checkpoint if someone
   deleted it, and a device metadata file that is missing or differs. No API
   read, no other work.
2. Read the claim (:class:`~kubelet_plugin.claim_source.ClaimSource`) and plan
   (:func:`dra_driver.preparation.plan_preparation`): UID, allocation, this
   driver's results in this node's pool, devices present, opaque config valid.
3. Checkpoint ``PrepareStarted`` (after checking no other claim holds the devices).
   Dynamic MIG devices are in it with their placement, so that a crash while
   creating them leaves a record to destroy them by.
4. Create the dynamic MIG devices (:class:`~dra_driver.discovery.model.MigManager`);
   write each request's device metadata file, then the CDI spec that mounts them,
   atomically.
5. Checkpoint ``PrepareCompleted``; answer the CDI IDs.

Any failure answers that claim's error and undoes steps 3-4 (MIG devices it
created destroyed, spec and metadata files removed, entry dropped), so a retry
starts clean; a
crash in between is undone by :meth:`GpuDriver.start` at the next start-up,
which rolls back ``PrepareStarted`` entries (destroying their dynamic MIG
devices by placement), makes sure the dynamic MIG devices of
``PrepareCompleted`` ones exist (MIG devices do not survive a reboot),
writes again the missing specs of ``PrepareCompleted`` ones (all of them after
a reboot: the CDI root is a tmpfs) and their metadata files where missing or
changed, and removes specs, metadata files, MIG devices and entries of claims
that are gone from the API server. Unprepare destroys a claim's dynamic MIG
devices after removing its spec and metadata files.

Durability: the ``PrepareStarted`` save is not fsynced to the directory (a
power cut that loses it also empties the CDI tmpfs; a spec that survives is
rewritten identically by the retried prepare); the ``PrepareCompleted`` save
and the unprepare save are fully durable before the kubelet hears of success.

Concurrency: calls for different claims run in parallel, and so do the claims
of one prepare call (at most 16 at a time, sharing checkpoint saves); calls
for the same claim UID are serialised by a per-claim lock. A prepare call that
outlives the kubelet's deadline goes on, but never prepares a claim that a
later unprepare already reached (:mod:`~kubelet_plugin.driver.ordering`): an
unprepare that succeeded is never undone. With a ``node_lock`` (two plugin
instances on the node during a rolling update) every call, and the start-up
recovery, runs holding that lock instead, and first adopts the checkpoint as
the other instance left it. Checkpoint saves are group-committed:
a save writes every change made so far, so concurrent prepares share fsyncs, and
each entry is encoded once, when it changes, not at every save.
"""

from kubelet_plugin.driver.gpu_driver import GpuDriver
from kubelet_plugin.driver.preparer import FaultPoint
from kubelet_plugin.driver.recovery import RecoveryReport

__all__ = ["FaultPoint", "GpuDriver", "RecoveryReport"]
