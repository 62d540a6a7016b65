"""The seam between the kubelet-facing gRPC services and the driver that prepares claims.

The gRPC servicers translate kubelet requests (v1 or v1beta1) into these types
and call a :class:`NodeDriver`; the driver never sees protobuf messages and the
servicers never see checkpoints or CDI files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from api.resource_v1 import claim_label


@dataclass(frozen=True, slots=True)
class ClaimRef:
    """A claim as the kubelet names it in NodePrepareResources / NodeUnprepareResources."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return claim_label(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class PreparedDevice:
    """One device of a prepared claim, as the kubelet needs it."""

    requests: tuple[str, ...]
    """Request names of the claim this device was allocated for (``req`` or ``req/sub``)."""
    pool: str
    device: str
    cdi_device_ids: tuple[str, ...]
    """Fully qualified CDI names, e.g. ``gpu.dra-driver.io/gpu=<claim uid>-gpu-0``."""
    share_id: str | None = None


@dataclass(frozen=True, slots=True)
class PrepareResult:
    """The outcome for one claim: devices, or an error message for the kubelet."""

    devices: tuple[PreparedDevice, ...] = field(default=())
    error: str | None = None


class NodeDriver(Protocol):
    """Prepares and unprepares claims on this node.

    Contract (both calls): every claim of the request gets an entry in the
    answer, keyed by claim UID; a failing claim gets its own error and never
    fails the others nor raises; calls are idempotent and safe to run
    concurrently; each returns well inside the kubelet's 45 s deadline.
    """

    def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]: ...

    def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str | None]:
        """UID to None (done, or nothing to do for an unknown claim) or an error message."""
        ...
