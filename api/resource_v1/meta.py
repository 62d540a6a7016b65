"""What every object carries: ObjectMeta with its owner references, the
metav1.Condition, and :class:`K8sObject`, the base of the top-level kinds.
"""

from __future__ import annotations

from pydantic import Field

from api import limits
from api.resource_v1.base import K8sModel, Timestamp


def object_key(namespace: str | None, name: str | None) -> str:
    """The one key of an object in maps, caches and logs: ``namespace/name``, or ``name``
    for a cluster-scoped object."""
    return f"{namespace}/{name}" if namespace else str(name or "")


def claim_label(namespace: str | None, name: str | None) -> str:
    """How errors a person reads name a claim: ``claim default/train-0``."""
    return f"claim {object_key(namespace, name)}"


class OwnerReference(K8sModel):
    api_version: str | None = None
    kind: str | None = None
    name: str | None = None
    uid: str | None = None
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(K8sModel):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Timestamp | None = None
    deletion_timestamp: Timestamp | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[str] | None = None


class Condition(K8sModel):
    """metav1.Condition."""

    type: str
    status: str
    observed_generation: int | None = None
    last_transition_time: Timestamp | None = None
    reason: str | None = None
    message: str | None = None


class K8sObject(K8sModel):
    """A top-level object: apiVersion, kind, metadata.

    ``metadata`` is never None for convenience; :func:`dump` leaves it out when
    it was neither given nor filled in.
    """

    api_version: str = limits.API_VERSION
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
