"""Releasing: clearing allocations this controller wrote, never those of a claim a pod
has reserved (it is in use then), except the reservation of the pod it was placed for while
that pod is gated (written with the allocation, cleared with it)."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from typing import Any

from agent_kit.kube import ApiError, ClusterClient, ConflictError, NotFoundError
from api.resource_v1 import ResourceClaim, claim_key, dump, object_key
from controller.cache import ClusterCache, decode
from controller.metrics import ControllerMetrics
from controller.placement.guard import CONFLICT_ATTEMPTS, Fence, NotLeaderError, check_fence
from controller.placement.marks import Marks, is_allocated, is_reserved, reserved_by_others
from controller.scheduling import PodInfo

__all__ = ["Releaser"]


class _Write(enum.Enum):
    """How :meth:`Releaser._write_status` went."""

    DONE = "done"
    #: Nothing to write (the claim, as read, needs no change).
    NOTHING = "nothing"
    #: The claim is gone.
    GONE = "gone"
    #: Still conflicting after CONFLICT_ATTEMPTS tries.
    GAVE_UP = "gave-up"


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

        def released(current: ResourceClaim) -> dict[str, Any] | None:
            if not is_allocated(current):
                return None
            if reserved_by_others(current, self.marks) if gated else is_reserved(current):
                return None
            body = dump(current)
            body.get("status", {}).pop("allocation", None)
            body.get("status", {}).pop("reservedFor", None)
            return body

        return self._write_status(claim, released) is _Write.DONE

    def unreserve(self, claim: ResourceClaim, pod_uid: str) -> bool:
        """Take the pod ``pod_uid`` out of the claim's ``reservedFor``, keeping the
        allocation (guarded by the resourceVersion; on a conflict the claim is re-read);
        True when it is out. Failures are logged: the caller tries again later."""

        def unreserved(current: ResourceClaim) -> dict[str, Any] | None:
            reserved = current.status.reserved_for if current.status is not None else None
            if not any(ref.uid == pod_uid for ref in reserved or []):
                return None
            body = dump(current)
            remaining = [r for r in body["status"]["reservedFor"] if r.get("uid") != pod_uid]
            body["status"]["reservedFor"] = remaining or None
            return body

        try:
            return self._write_status(claim, unreserved) is not _Write.GAVE_UP
        except (ApiError, NotLeaderError) as err:
            log.warning(
                "could not remove a reservation",
                extra={"claim": claim_key(claim), "error": str(err)},
            )
            return False

    def _write_status(
        self, claim: ResourceClaim, body_of: Callable[[ResourceClaim], dict[str, Any] | None]
    ) -> _Write:
        """Write ``body_of(claim)`` as the claim's status, guarded by its resourceVersion;
        on a conflict re-read the claim (into the cache too) and ask ``body_of`` again,
        up to CONFLICT_ATTEMPTS times. ``body_of`` returning None: nothing to write.
        Raises NotLeaderError, and ApiError other than a conflict or a 404."""
        namespace, name = claim.metadata.namespace or "", claim.metadata.name or ""
        for _ in range(CONFLICT_ATTEMPTS):
            body = body_of(claim)
            if body is None:
                return _Write.NOTHING
            check_fence(self.fence)
            try:
                stored = decode(ResourceClaim, self.client.replace_status("resourceclaims", body))
            except NotFoundError:
                return _Write.GONE
            except ConflictError:
                self.metrics.conflicts.labels("resourceclaims").inc()
                raw = self.client.get("resourceclaims", name, namespace=namespace)
                self.cache.apply("resourceclaims", "MODIFIED", raw)
                claim = decode(ResourceClaim, raw)
                continue
            self.cache.confirm(stored)
            return _Write.DONE
        return _Write.GAVE_UP

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
