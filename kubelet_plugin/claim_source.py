"""Where the driver reads ResourceClaims: the API server, or a fake for tests.

The kubelet's prepare request carries only namespace, name and UID; the
allocation and the configuration are in the claim object, read on every
prepare that is not already done.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from agent_kit.kube import ApiError, ClusterClient, NotFoundError
from api.errors import InvalidInputError, PrepareError
from api.resource_v1 import ResourceClaim, claim_label, parse_object

__all__ = ["ClaimSource", "FakeClaimSource", "KubernetesClaimSource"]


class ClaimSource(Protocol):
    """Reads one ResourceClaim."""

    def get(self, namespace: str, name: str) -> ResourceClaim | None:
        """The claim as the API server has it now, or None when it does not exist.

        Raises PrepareError with ``retryable=True`` when the answer is unknown
        (API server unreachable, forbidden, an object that does not decode):
        callers must not treat that as "deleted".
        """
        ...


def _decode(data: Any, namespace: str, name: str) -> ResourceClaim:
    try:
        claim = parse_object(data)
    except InvalidInputError as err:
        raise PrepareError(
            f"the API server returned an object that does not decode: {err}",
            claim=claim_label(namespace, name),
            retryable=True,
        ) from None
    if not isinstance(claim, ResourceClaim):
        raise PrepareError(
            f"the API server returned a {claim.kind}, not a ResourceClaim",
            claim=claim_label(namespace, name),
            retryable=True,
        )
    return claim


class KubernetesClaimSource:
    """Claims from the API server, through the agents' one API client.

    The raw JSON is decoded with this project's models (not the official client's), so
    fields a newer server adds are kept and validation is the same everywhere. A
    NotFoundError is "deleted" (None); every other ApiError is "unknown", a retryable
    PrepareError (the kubelet calls again).
    """

    def __init__(self, client: ClusterClient) -> None:
        """``client``: a :class:`~agent_kit.kube.KubernetesClient` whose timeout leaves
        the kubelet's deadline (45 s) room for a retry."""
        self._client = client

    def get(self, namespace: str, name: str) -> ResourceClaim | None:
        try:
            data = self._client.get("resourceclaims", name, namespace=namespace)
        except NotFoundError:
            return None
        except ApiError as err:
            raise PrepareError(
                f"reading it from the API server failed: {err}",
                claim=claim_label(namespace, name),
                retryable=True,
            ) from None
        return _decode(data, namespace, name)


class FakeClaimSource:
    """An in-memory claim source for tests and the offline demo; thread-safe.

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
        return _decode(document, namespace, name)
