"""Releasing: clearing allocations this controller wrote, never those of a claim a pod
has reserved (it is in use then), except the reservation of the pod it was placed for while
that pod is gated (written with the allocation, cleared with it)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agent_kit.kube import ApiError, ClusterClient, ConflictError, NotFoundError
from api.resource_v1 import ResourceClaim, claim_key, dump, object_key
from controller.cache import ClusterCache, decode
from controller.metrics import ControllerMetrics
from controller.placement.guard import CONFLICT_ATTEMPTS, Fence, NotLeaderError, check_fence
from controller.placement.marks import Marks, is_allocated, is_reserved, reserved_by_others
from controller.scheduling import PodInfo

__all__ = ["Releaser"]

log = logging.getLogger(__name__)


class Releaser:
    """Clears ``status.allocation`` of claims, guarded by their resourceVersion."""

    def __init__(
        self,
        client: ClusterClient,
        cache: ClusterCache,
        metrics: ControllerMetrics,
        fence: Fence,
        marks: Marks,
    ) -> None:
        self.client = client
        self.cache = cache
        self.metrics = metrics
        self.fence = fence
        self.marks = marks

    def release(self, claim: ResourceClaim, *, gated: bool) -> bool:
        """Clear ``status.allocation`` (and ``reservedFor``) unless a pod uses the claim;
        True when cleared.

        ``gated``: whether the pod the claim was placed for is still gated (or gone). Then
        its own reservation does not keep the claim: it cannot be bound. Otherwise any
        reservation does (the scheduler may bind the pod at any moment, and would skip
        the claim it finds reserved).
        On a conflict the claim is re-read (into the cache too) and looked at again.
        Raises NotLeaderError, and ApiError other than a conflict or a 404."""
        namespace, name = claim.metadata.namespace or "", claim.metadata.name or ""
        for _ in range(CONFLICT_ATTEMPTS):
            if not is_allocated(claim):
                return False
            if reserved_by_others(claim, self.marks) if gated else is_reserved(claim):
                return False
            body = dump(claim)
            body.get("status", {}).pop("allocation", None)
            body.get("status", {}).pop("reservedFor", None)
            check_fence(self.fence)
            try:
                stored = decode(ResourceClaim, self.client.replace_status("resourceclaims", body))
            except NotFoundError:
                return False
            except ConflictError:
                self.metrics.conflicts.labels("resourceclaims").inc()
                raw = self.client.get("resourceclaims", name, namespace=namespace)
                self.cache.apply("resourceclaims", "MODIFIED", raw)
                claim = decode(ResourceClaim, raw)
                continue
            self.cache.confirm(stored)
            return True
        return False

    def unreserve(self, claim: ResourceClaim, pod_uid: str) -> bool:
        """Take the pod ``pod_uid`` out of the claim's ``reservedFor``, keeping the
        allocation (guarded by the resourceVersion; on a conflict the claim is re-read);
        True when it is out. Failures are logged: the caller tries again later."""
        namespace, name = claim.metadata.namespace or "", claim.metadata.name or ""
        for _ in range(CONFLICT_ATTEMPTS):
            reserved = claim.status.reserved_for if claim.status is not None else None
            if not any(ref.uid == pod_uid for ref in reserved or []):
                return True
            body = dump(claim)
            remaining = [r for r in body["status"]["reservedFor"] if r.get("uid") != pod_uid]
            body["status"]["reservedFor"] = remaining or None
            try:
                check_fence(self.fence)
                stored = decode(ResourceClaim, self.client.replace_status("resourceclaims", body))
            except NotFoundError:
                return True
            except ConflictError:
                self.metrics.conflicts.labels("resourceclaims").inc()
                try:
                    raw = self.client.get("resourceclaims", name, namespace=namespace)
                except ApiError:
                    return False
                self.cache.apply("resourceclaims", "MODIFIED", raw)
                claim = decode(ResourceClaim, raw)
                continue
            except (ApiError, NotLeaderError) as err:
                log.warning(
                    "could not remove a reservation",
                    extra={"claim": claim_key(claim), "error": str(err)},
                )
                return False
            self.cache.confirm(stored)
            return True
        return False

    def rollback(self, claims: Sequence[ResourceClaim], *, gated: bool = True) -> None:
        """Release ``claims`` in reverse order; failures are logged (a later attempt, or
        the next leader, finds them through the placed-for annotation)."""
        for claim in reversed(claims):
            try:
                self.release(claim, gated=gated)
            except (ApiError, NotLeaderError) as err:
                log.warning(
                    "could not release an allocation",
                    extra={"claim": claim_key(claim), "error": str(err)},
                )

    def release_pod(self, pod: PodInfo, names: Sequence[str]) -> list[str]:
        """Release the ungated pod's claims ``names`` as the cache holds them (those no pod
        has reserved); the keys released."""
        released = []
        for name in names:
            claim = self.cache.claim(object_key(pod.namespace, name))
            if claim is not None and self.release(claim, gated=False):
                released.append(claim_key(claim))
        return released
