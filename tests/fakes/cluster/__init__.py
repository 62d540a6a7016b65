"""An in-memory API server: :class:`FakeCluster`, the test double of the cluster port.

:class:`FakeCluster` implements :class:`~agent_kit.kube.ClusterClient`.

It keeps the REST semantics the controller depends on, so unit tests exercise
the same code paths a real API server drives:

- one resourceVersion counter for every object (a string on the wire, as the
  real server's), bumped on every write; lists carry the current version;
- ``replace`` / ``replace_status`` / ``patch`` / ``patch_status`` guarded by
  ``metadata.resourceVersion`` (409 Conflict when stale, 404 when gone);
  ``create`` answers 409 AlreadyExists for a taken name;
- a status subresource for ResourceClaims: ``replace`` keeps the stored
  status, ``replace_status`` keeps the stored spec and metadata; a claim's
  ``spec`` is immutable and ``status.allocation``, once set, may only be
  removed (422 Invalid otherwise), as the real validation says;
- pods' scheduling gates can only be removed (422 when a patch adds one);
- device taints of ResourceSlices written without ``timeAdded`` get one, as the
  real server stamps them;
- deletion of an object with finalizers only sets ``deletionTimestamp``;
- watches replay the changes after a version from a bounded history; a
  version older than the history answers 410 Gone (:meth:`compact` drops the
  history to provoke that); a field or label selector turns an object that
  stops matching into a DELETED event, as the real watch cache does.

Test controls: :meth:`fail` injects HTTP errors into the next matching calls,
:meth:`before` runs a callback before a write (e.g. a competing writer, to
provoke a conflict), :meth:`drop_fields` makes it a server that does not know
some fields (a feature gate off: they are not stored), :attr:`calls` records
every call in order, :meth:`put` and :meth:`remove` change objects as another
client would.

Modules, one seam each:

- :mod:`~tests.fakes.cluster.store`: the objects by key, the resourceVersion counter,
  404/409, selectors and :func:`merge_patch`;
- :mod:`~tests.fakes.cluster.admission`: the server's defaulting and validation
  (immutable fields, the status subresource, scheduling gates, dropped fields);
- :mod:`~tests.fakes.cluster.watches`: the change history, compaction and watches;
- :mod:`~tests.fakes.cluster.controls`: the call log, injected faults and write hooks;
- :mod:`~tests.fakes.cluster.server`: :class:`FakeCluster`, the verbs over all four.
"""

from tests.fakes.cluster.controls import Call
from tests.fakes.cluster.server import FakeCluster
from tests.fakes.cluster.store import merge_patch

__all__ = ["Call", "FakeCluster", "merge_patch"]
