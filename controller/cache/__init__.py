"""The controller's picture of the cluster, kept up to date by the watches.

:class:`ClusterCache` is the :class:`~agent_kit.kube.Sink` of every
:class:`~agent_kit.kube.Reflector` (the sink and the stores are
:mod:`~controller.cache.stores`, the reads :mod:`~controller.cache.cluster`). It
decodes each object once and hands it to the store that keeps it:

- :mod:`~controller.cache.inventory`: ResourceSlices, DeviceClasses,
  DeviceTaintRules and Nodes, and from them (plus the allocated claims) one allocator
  :class:`~dra_driver.allocator.Snapshot`. A slice added, deleted or changed
  in content updates only its pool(s) of the snapshot
  (:meth:`~dra_driver.allocator.Snapshot.replace_pools`: the other pools keep
  their compiled records); a change of a class's content, of a
  DeviceTaintRule's spec or of a node's labels, marks the snapshot for a
  rebuild before the next decision; a change that only moves the
  resourceVersion (a status heartbeat, managed fields) does neither;
- :mod:`~controller.cache.ledger`: ResourceClaims. Their allocations go into
  the snapshot incrementally (``add_allocated`` / ``remove_allocated``),
  whoever wrote them: the scheduler's allocations for ungated pods count as
  devices in use as soon as the watch delivers them. And the *assumed*
  claims: allocations this controller decided and is writing. They count as
  in use from the decision on, so the next decision cannot hand out the same
  devices, and stay until the watch delivers a version at least as new as the
  one the write returned (or the write failed and they are forgotten) -- the
  scheduler's "assume cache", for the same reason;
- :mod:`~controller.cache.pods`: Pods (as
  :class:`~controller.scheduling.PodInfo`), which claims each uses, the
  cpu/memory/pod count requested on each node by the pods bound to it, and the
  pods this controller released to the scheduler that are not bound yet
  (*nominated*), so two placements in a row do not both count on the same
  free cpu.

Every change is turned into the pod keys (``namespace/name``) whose placement
it may affect, handed to ``on_change`` (the work queue): a pod's own change;
a claim's pods (by name, and the owner of a template claim); and for a change
that frees or adds capacity (a slice, class, DeviceTaintRule or node change, a claim released
or deleted, a bound pod gone) every pod marked *waiting* (unplaceable so far).

A placement reads what it needs in one call (:mod:`~controller.cache.views`):
:meth:`ClusterCache.placement_view` (a pod's claims, the nodes, their usage
and the snapshot, under the lock) and :meth:`ClusterCache.conflicts` (devices
held twice, with the claims and pods involved).

Thread-safety: the reflectors call in from their threads; every access holds
``lock`` (re-entrant). Decisions take the lock too, so a decision sees one
consistent state. A watch event is decoded before the lock is taken
(:func:`~controller.cache.decoding.decode_object`), so the workers wait only for
the store's update, not for the decoding.

A decision's node filter is kept per pod shape and re-examined only on the nodes
whose facts or usage changed (:mod:`~controller.cache.node_filters`).
"""

from controller.cache.cluster import ClusterCache
from controller.cache.decoding import decode
from controller.cache.views import ClaimUse, HeldTwice, PlacementView

__all__ = ["ClaimUse", "ClusterCache", "HeldTwice", "PlacementView", "decode"]
