"""The seam between the kubelet-facing gRPC services and the driver that prepares claims.

The gRPC servicers translate kubelet requests (v1 or v1beta1) into these types
and call a :class:`NodeDriver`; the driver never sees protobuf messages and the
servicers never see checkpoints or CDI files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from api import limits
from api.errors import PrepareError
from api.resource_v1 import claim_label
from api.validation import is_dns1123_label, is_dns1123_subdomain

#: What the plugin accepts as a claim UID. The API server issues lowercase RFC 4122
#: UUIDs (``7c9e6679-7425-40de-944b-e07fc1f90ae7``) and never validates a client's,
#: so the rule is the shape those have, not more: lowercase letters, digits and
#: ``-``, starting and ending with a letter or digit, at most 63 characters. Such
#: a UID is safe in a file name and in a CDI device name; ``/``, ``.``, upper case
#: and control characters are not (the kubelet never sends them).
_UID_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_UID_MAX_LENGTH: Final = 63


@dataclass(frozen=True, slots=True)
class ClaimRef:
    """A claim as the kubelet names it in NodePrepareResources / NodeUnprepareResources."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return claim_label(self.namespace, self.name)


def claim_ref_problem(ref: ClaimRef) -> str | None:
    """What is wrong with a claim reference, as the API server would see it; None when valid.

    Namespace: an RFC 1123 label; name: an RFC 1123 subdomain (a ResourceClaim's
    name); uid: see ``_UID_RE``. Every problem is named with its field and the
    rule, e.g. ``invalid uid "../x": must be ...``. The driver checks this before
    a UID reaches a file name or a name reaches the API server.
    """
    problems: list[str] = []
    if not ref.namespace or not is_dns1123_label(ref.namespace):
        problems.append(
            f"invalid namespace {json.dumps(ref.namespace)}: must be a lowercase RFC 1123 "
            f"label of at most {limits.DNS1123_LABEL_MAX_LENGTH} characters (letters, digits "
            "and '-', starting and ending with a letter or digit), as the API server names "
            "namespaces"
        )
    if not ref.name or not is_dns1123_subdomain(ref.name):
        problems.append(
            f"invalid name {json.dumps(ref.name)}: must be a lowercase RFC 1123 subdomain of "
            f"at most {limits.DNS1123_SUBDOMAIN_MAX_LENGTH} characters (dot-separated labels "
            "of letters, digits and '-'), as the API server names ResourceClaims"
        )
    if len(ref.uid) > _UID_MAX_LENGTH or not _UID_RE.fullmatch(ref.uid):
        problems.append(
            f"invalid uid {json.dumps(ref.uid)}: must be the claim's metadata.uid as the API "
            "server issues it, a lowercase RFC 4122 UUID such as "
            "7c9e6679-7425-40de-944b-e07fc1f90ae7 (at most "
            f"{_UID_MAX_LENGTH} lowercase letters, digits and '-')"
        )
    return "; ".join(problems) or None


def check_claim_ref(ref: ClaimRef) -> None:
    """Raise a PrepareError (not retryable) naming the claim when :func:`claim_ref_problem`
    finds one."""
    problem = claim_ref_problem(ref)
    if problem is not None:
        raise PrepareError(problem, claim=str(ref))


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
