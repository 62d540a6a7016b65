"""Placement: the claims of gated pods, allocated together on the best node, then the gate removed.

For each pod key the work queue hands out, :meth:`Placer.reconcile` does one
of these (every write goes through the leader fence first, :mod:`.guard`):

**A pod carrying the gate** (``<driver>/placement``) whose claims all exist
(template claims once ``status.resourceClaimStatuses`` names them):

1. decide, holding the cache's lock: the pod's pending claims (no
   ``status.allocation``) are allocated *together* on one node by the policy
   (``--policy``; the pod annotation ``<driver>/policy``, else a claim's,
   overrides it) among the nodes the pod can run on
   (:func:`~controller.scheduling.filter_nodes`: node selector, required
   affinity, taints, cpu/memory/pods), narrowed by the node selectors of the
   pod's claims that are already allocated (by anyone: they are respected,
   never moved). The decision is *assumed* in the cache at once, so the next
   decision does not hand out the same devices;
2. write each claim, in the pod's order: first the finalizer
   ``resource.kubernetes.io/delete-protection`` and the annotation
   ``<driver>/placed-for: <pod uid>`` (a normal update, as the scheduler adds
   that finalizer: it lets the claim controller deallocate the claim when its
   pods are done), then ``status.allocation`` (the status subresource), both
   guarded by the resourceVersion, with the gated pod in ``status.reservedFor``
   (the scheduler then binds the pod without a claim write of its own). All or
   nothing: when one write fails, the allocations already written for this pod are
   removed again;
3. on a conflict (409: someone changed a claim, e.g. the scheduler allocated
   it for another pod): re-read the claim, decide again (up to
   ``CONFLICT_ATTEMPTS`` times, then back off);
4. settle, then confirm. The scheduler, allocating for an ungated pod, may
   have decided on one of our devices from its informer's view just before
   that view showed our write; its write goes to another claim (no conflict)
   and may land *after* ours. So the gate stays on for ``settle_s``
   (``--settle-delay``): the key is requeued with that delay and the workers
   place other pods meanwhile (the pod's cpu/memory already count on the node:
   it is nominated from the write on). When the key comes back, the cache
   (kept current by the watches) is checked for another claim holding one of
   our devices, by the allocator's own in-use state
   (:func:`~dra_driver.allocator.conflicts.device_conflicts`: exclusive
   devices, consumed capacity of shared ones, counters of partitions;
   ``adminAccess`` never counts). Our claim
   yields to a claim a pod has reserved, to one someone else allocated, and
   to one of ours whose pod has no gate any more; between two claims of ours
   whose pods both wait (the assume-cache rules it out) the later key yields.
   Yielding releases our allocations (never a claim another pod has reserved;
   our gated pod's own reservation goes with the allocation), writes a
   ``PlacementConflict`` Event and decides again, which restarts the settle
   delay; after ``max_retries`` yields in a row the pod backs off. With
   ``settle_s`` 0 the confirm runs right after the writes.

   What marks the state "written, awaiting confirm" is in the cluster, not in
   memory: a gated pod whose claims are all allocated, ours carrying the
   ``placed-for`` annotation with the pod's UID. A new leader (or a restart)
   finding such a pod does not place it again; not knowing when the writes
   happened, it waits one whole delay from when it first sees them, then
   confirms. A pod with no claim of ours (all allocated by others) has nothing
   to confirm;
5. only when the confirm is clean, remove the gate (a merge patch guarded
   by the pod's resourceVersion; on a conflict the pod is re-read). The
   scheduler then binds the pod to the chosen node: it honours an existing
   allocation through ``allocation.nodeSelector``. Allocations carry
   ``allocationTimestamp``: the scheduler stamps one that lacks it, and the API
   server refuses that change of an allocation, so the pod would never bind.

When no node fits, the explainer's summary (which node came closest and what
each request lacked, plus why other nodes were filtered out) becomes a
Warning Event on the pod and on each claim (rate-limited, renewed when the
reason changes) and the pod waits: it is looked at again when capacity
changes (a slice, class or node change, a claim released, a pod gone) and
after a backoff.

**A placed pod the scheduler cannot bind** (ungated, unbound, PodScheduled
False/Unschedulable: some other resource changed): first the pod's own reservation
is taken out of its claims (the allocation stays, so that a binding racing this still
finds its claim allocated: the claim controller reserves a bound pod's claims again);
a settle delay later, its claims that no pod has
reserved are released and placed again away from the failed node, at most
``max_retries`` times, with an Event each time (the first retry at once, later
ones after ``grace_s``). The pod has no gate any more, so the scheduler may
allocate the released claims itself meanwhile; whichever write lands first
wins, the other gets a conflict.

**A conflict found after the gate was removed** (a device of a claim of ours
that another claim holds too, looked at whenever an ungated pod with claims
comes by: ours, or the other claim's pod that the watch brings back when the
late write lands): nothing is undone, as the pod may be bound and its claim
reserved; the kubelet plugin refuses to prepare the second claim of the
device. Each such conflict is counted
(``dra_driver_device_conflicts_total{outcome="after-gate"}``) and reported
once as a Warning Event ``DeviceConflict`` on the pods and claims involved,
naming the device, for an admin to act on.

**A pending pod without the gate that the scheduler reports failing on
claims**: an Event with the explanation, on the pod and its pending claims.

**A gated pod of a gang PodGroup** (``spec.schedulingGroup.podGroupName``, the
PodGroup's ``gang`` policy): steps 1 and 2 are taken for every gated pod of the group
at once, only when ``minCount`` of its pods exist and all of them fit, and nothing is
held while the group waits (:mod:`.grouping`); then each pod goes on from step 4.

Nothing else is touched: pods without the gate are the scheduler's.

Where each part lives:

- :mod:`.reconciler` (:class:`Placer`): the steps above in order, one pod at a time;
- :mod:`.deciding`: step 1, pure, from one :meth:`~controller.cache.ClusterCache.placement_view`;
- :mod:`.grouping`: steps 1 and 2 for a whole pod group;
- :mod:`.writing`: steps 2, 3 and 5, each write guarded by the resourceVersion;
- :mod:`.releasing`: clearing our allocations (never those of a claim another pod
  reserved) and taking our pod's reservation out;
- :mod:`.conflicts`: who gives way when a device is held twice (step 4), and
  which conflicts after the gate are ours to report;
- :mod:`.reporting`: Events, metrics and their log lines;
- :mod:`.records`: what this replica remembers between reconciles;
- :mod:`.worker`: the loop between the work queue and the reconciler.
"""

from controller.placement.grouping import serves_pod_groups
from controller.placement.guard import CONFLICT_ATTEMPTS, AlwaysLeader, Fence, NotLeaderError
from controller.placement.reconciler import Placer, Result
from controller.placement.worker import run_worker

__all__ = [
    "CONFLICT_ATTEMPTS",
    "AlwaysLeader",
    "Fence",
    "NotLeaderError",
    "Placer",
    "Result",
    "run_worker",
    "serves_pod_groups",
]
