"""Releasing: clearing allocations this controller wrote, never those of a claim a pod
has reserved (it is in use then)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agent_kit.kube import ApiError, ClusterClient, ConflictError, NotFoundError
from api.resource_v1 import ResourceClaim, claim_key, dump, object_key
from controller.cache import ClusterCache, decode
from controller.metrics import ControllerMetrics
from controller.placement.guard import CONFLICT_ATTEMPTS, Fence, NotLeaderError, check_fence
from controller.placement.marks import is_allocated, is_reserved
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
    ) -> None:
        self.client = client
        self.cache = cache
        self.metrics = metrics
        self.fence = fence

    def release(self, claim: ResourceClaim) -> bool:
        """Clear ``status.allocation`` unless a pod has reserved the claim; True when cleared.

        On a conflict the claim is re-read (into the cache too) and looked at again.
        Raises NotLeaderError, and ApiError other than a conflict or a 404."""
        namespace, name = claim.metadata.namespace or "", claim.metadata.name or ""
        for _ in range(CONFLICT_ATTEMPTS):
            if not is_allocated(claim) or is_reserved(claim):
                return False
            body = dump(claim)
            body.get("status", {}).pop("allocation", None)
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

    def rollback(self, claims: Sequence[ResourceClaim]) -> None:
        """Release ``claims`` in reverse order; failures are logged (a later attempt, or
        the next leader, finds them through the placed-for annotation)."""
        for claim in reversed(claims):
            try:
                self.release(claim)
            except (ApiError, NotLeaderError) as err:
                log.warning(
                    "could not release an allocation",
                    extra={"claim": claim_key(claim), "error": str(err)},
                )

    def release_pod(self, pod: PodInfo, names: Sequence[str]) -> list[str]:
        """Release the pod's claims ``names`` as the cache holds them; the keys released."""
        released = []
        for name in names:
            claim = self.cache.claim(object_key(pod.namespace, name))
            if claim is not None and self.release(claim):
                released.append(claim_key(claim))
        return released
