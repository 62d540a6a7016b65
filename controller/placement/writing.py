"""Writing: a decision's allocations and the gate's removal, each write guarded by the
object's resourceVersion (optimistic concurrency). All or nothing per pod: when one claim's
write fails, the allocations already written for the pod are released again."""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import Final

from agent_kit.kube import ApiError, ClusterClient, ConflictError, InvalidError, NotFoundError
from api import limits
from api.resource_v1 import ResourceClaim, claim_key, claim_label, dump
from controller.cache import ClusterCache, decode
from controller.metrics import ControllerMetrics
from controller.placement.deciding import Decision
from controller.placement.guard import CONFLICT_ATTEMPTS, Fence, check_fence
from controller.placement.marks import Marks
from controller.placement.releasing import Releaser
from controller.scheduling import PodInfo, parse_pod

__all__ = ["WriteOutcome", "Writer"]

log = logging.getLogger(__name__)

#: How the API server words a field the caller may not write (RBAC checked in validation).
_FORBIDDEN_FIELD: Final = "cannot update resource"


class WriteOutcome(enum.Enum):
    """How writing a decision went."""

    #: Every allocation is written; the decision holds the stored claims.
    DONE = "done"
    #: A claim changed meanwhile: nothing of the decision is left, the claims are re-read.
    CONFLICT = "conflict"
    #: The API server refused otherwise: nothing of the decision is left; back off.
    FAILED = "failed"


class _ClaimChangedError(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Writer:
    """Writes allocations and removes the gate (see the package docstring, steps 2, 3, 5)."""

    def __init__(
        self,
        client: ClusterClient,
        cache: ClusterCache,
        *,
        metrics: ControllerMetrics,
        fence: Fence,
        releaser: Releaser,
        marks: Marks,
    ) -> None:
        self.client = client
        self.cache = cache
        self.metrics = metrics
        self.fence = fence
        self.releaser = releaser
        self.marks = marks

    # -- allocations -----------------------------------------------------------------------

    def write(self, decision: Decision, names: Sequence[str]) -> WriteOutcome:
        """Write each decided allocation in the pod's order, all or nothing.

        On a conflict (the claim changed, was allocated by someone else, or is
        gone) the pod's claims ``names`` are re-read into the cache, so the next
        decision sees them. Raises NotLeaderError (after releasing what it wrote).
        """
        pod = decision.pod
        try:
            self._write_all(decision)
        except _ClaimChangedError as err:
            self.metrics.conflicts.labels("resourceclaims").inc()
            log.info("conflict; deciding again", extra={"pod": pod.key, "what": err.what})
            self.refresh(pod, names)
            return WriteOutcome.CONFLICT
        except ApiError as err:
            self.metrics.failures.labels("api-error").inc()
            log.warning("writing an allocation failed", extra={"pod": pod.key, "error": str(err)})
            return WriteOutcome.FAILED
        return WriteOutcome.DONE

    def _write_all(self, decision: Decision) -> None:
        written: list[ResourceClaim] = []
        try:
            for claim in decision.claims:
                stored = self._write_claim(claim, decision.pod)
                written.append(stored)
                self.cache.confirm(stored)
        except BaseException:
            for claim in decision.claims[len(written) :]:
                self.cache.forget(claim_key(claim))
            self.releaser.rollback(written)
            raise
        decision.claims = written

    def _write_claim(self, claim: ResourceClaim, pod: PodInfo) -> ResourceClaim:
        """First the delete-protection finalizer and ``placed-for`` (a normal update, as
        the scheduler adds that finalizer), then ``status.allocation`` (with the gated
        pod in ``status.reservedFor``)."""
        meta = claim.metadata
        namespace, name = meta.namespace or "", meta.name or ""
        what = claim_label(meta.namespace, meta.name)
        finalizers = list(meta.finalizers or [])
        version = meta.resource_version
        try:
            if (
                limits.DELETE_PROTECTION_FINALIZER not in finalizers
                or self.marks.owner(claim) != pod.uid
            ):
                if limits.DELETE_PROTECTION_FINALIZER not in finalizers:
                    finalizers.append(limits.DELETE_PROTECTION_FINALIZER)
                check_fence(self.fence)
                patched = self.client.patch(
                    "resourceclaims",
                    name,
                    {
                        "metadata": {
                            "resourceVersion": version,
                            "finalizers": finalizers,
                            "annotations": {self.marks.placed_for: pod.uid},
                        }
                    },
                    namespace=namespace,
                )
                version = (patched.get("metadata") or {}).get("resourceVersion")
                meta = decode(ResourceClaim, patched).metadata
            body = dump(claim)
            body["metadata"] = dump(meta)
            body["metadata"]["resourceVersion"] = version
            if pod.has_gate(self.marks.gate):
                # Reserved for its pod with the allocation: the scheduler, finding the
                # claim reserved, binds the pod without a claim write of its own. Only
                # while the gate holds the pod back (see releasing.Releaser.release).
                body["status"]["reservedFor"] = [
                    {"resource": "pods", "name": pod.name, "uid": pod.uid}
                ]
            check_fence(self.fence)
            stored = self.client.replace_status("resourceclaims", body)
        except (ConflictError, NotFoundError, InvalidError) as err:
            if isinstance(err, InvalidError) and _FORBIDDEN_FIELD in str(err):
                # The API server authorizes status.allocation in validation: a role
                # without resourceclaims/binding gets 422, not 403. Not a conflict.
                raise
            # Changed (or allocated: 422 "immutable"), or gone meanwhile.
            raise _ClaimChangedError(f"{what}: {err}") from None
        return decode(ResourceClaim, stored)

    def refresh(self, pod: PodInfo, names: Sequence[str]) -> None:
        """Re-read the pod's claims after a conflict, so the next decision sees them."""
        for name in names:
            try:
                raw = self.client.get("resourceclaims", name, namespace=pod.namespace)
            except NotFoundError:
                self.cache.apply(
                    "resourceclaims",
                    "DELETED",
                    {"metadata": {"name": name, "namespace": pod.namespace}},
                )
                continue
            self.cache.apply("resourceclaims", "MODIFIED", raw)

    # -- the gate --------------------------------------------------------------------------

    def ungate(self, pod: PodInfo) -> bool | None:
        """Remove our gate (a merge patch guarded by the pod's resourceVersion; on a
        conflict the pod is re-read): True when done, False to retry later, None when
        the pod is gone."""
        for _ in range(CONFLICT_ATTEMPTS):
            remaining = [{"name": gate} for gate in pod.gates if gate != self.marks.gate]
            check_fence(self.fence)
            try:
                self.client.patch(
                    "pods",
                    pod.name,
                    {
                        "metadata": {"resourceVersion": pod.resource_version},
                        "spec": {"schedulingGates": remaining or None},
                    },
                    namespace=pod.namespace,
                )
                return True
            except NotFoundError:
                return None
            except ConflictError:
                self.metrics.conflicts.labels("pods").inc()
            except ApiError as err:
                log.warning("removing the gate failed", extra={"pod": pod.key, "error": str(err)})
                return False
            try:
                raw = self.client.get("pods", pod.name, namespace=pod.namespace)
            except NotFoundError:
                return None
            except ApiError:
                return False
            self.cache.apply("pods", "MODIFIED", raw)
            fresh = parse_pod(raw)
            if fresh.uid != pod.uid:
                return None
            if not fresh.has_gate(self.marks.gate):
                return True
            pod = fresh
        return False
