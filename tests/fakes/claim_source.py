"""A ResourceClaim source in memory, for the kubelet plugin's tests, its prepare benchmark
and the real-GPU check (which prepares claims without a cluster)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

from api.errors import PrepareError
from api.resource_v1 import ResourceClaim, claim_label
from kubelet_plugin.claim_source import decode_claim

__all__ = ["FakeClaimSource"]


class FakeClaimSource:
    """An in-memory claim source (the kubelet plugin's ClaimSource port); thread-safe.

    Claims are stored as JSON documents and decoded on every :meth:`get`, like
    the real source, so a test that edits a claim sees its effect. ``fail``
    makes reads raise the retryable error the real source raises when the API
    server is unreachable.
    """

    def __init__(self, claims: Iterable[ResourceClaim | dict[str, Any]] = ()) -> None:
        self._lock = threading.Lock()
        self._claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads = 0
        """How many times :meth:`get` was called (tests check that done work is not redone)."""
        self.fail = False
        for claim in claims:
            self.put(claim)

    def put(self, claim: ResourceClaim | dict[str, Any]) -> None:
        """Create or replace a claim (keyed by namespace and name)."""
        document = (
            claim
            if isinstance(claim, dict)
            else claim.model_dump(mode="json", by_alias=True, exclude_none=True)
        )
        metadata = document.get("metadata") or {}
        key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        with self._lock:
            self._claims[key] = json.loads(json.dumps(document))

    def delete(self, namespace: str, name: str) -> None:
        with self._lock:
            self._claims.pop((namespace, name), None)

    def get(self, namespace: str, name: str) -> ResourceClaim | None:
        with self._lock:
            self.reads += 1
            if self.fail:
                raise PrepareError(
                    "reading it from the API server failed: connection refused",
                    claim=claim_label(namespace, name),
                    retryable=True,
                )
            document = self._claims.get((namespace, name))
        if document is None:
            return None
        return decode_claim(document, namespace, name)
