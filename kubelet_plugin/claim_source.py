"""Where the driver reads ResourceClaims: the API server (tests inject
:class:`tests.fakes.claim_source.FakeClaimSource` through the same port).

The kubelet's prepare request carries only namespace, name and UID; the
allocation and the configuration are in the claim object, read on every
prepare that is not already done.
"""

from __future__ import annotations

from typing import Any, Protocol

from agent_kit.kube import ApiError, ClusterClient, NotFoundError
from api.errors import InvalidInputError, PrepareError
from api.resource_v1 import ResourceClaim, claim_label, parse_object

__all__ = ["ClaimSource", "KubernetesClaimSource", "decode_claim"]


class ClaimSource(Protocol):
    """Reads one ResourceClaim."""

    def get(self, namespace: str, name: str) -> ResourceClaim | None:
        """The claim as the API server has it now, or None when it does not exist.

        Raises PrepareError with ``retryable=True`` when the answer is unknown
        (API server unreachable, forbidden, an object that does not decode):
        callers must not treat that as "deleted".
        """
        ...


def decode_claim(data: Any, namespace: str, name: str) -> ResourceClaim:
    """The claim in ``data``; a retryable PrepareError when it is not a ResourceClaim."""
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
        return decode_claim(data, namespace, name)
