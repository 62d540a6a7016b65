"""The one exception tree of the project.

Every error a person reads names the object, the field and the fix, e.g.
``claim default/train-0: spec.devices.requests[0].exactly.deviceClassName: device
class "gpu-h100" not found``.

What the caller sees, per class:

==========================  =================================  ==========  ===========
class                       meaning                            CLI exit    retry helps
==========================  =================================  ==========  ===========
InvalidInputError           input the API server would reject  2           no
                            or that does not parse
CelCompileError             a selector does not compile        2           no
CelEvaluationError          a selector failed at run time      1           no (fix the
                            (missing key, type mismatch)                   selector)
UnsatisfiableError          valid input, no allocation fits    1           yes, when
                                                                           devices free
==========================  =================================  ==========  ===========

The kubelet plugin maps them to per-claim errors in its gRPC responses, the
controller to Kubernetes Events. :class:`ExitCode` holds the exit codes of every
``dra-driver`` subcommand, the offline tools and both agents.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """The exit status of every ``dra-driver`` subcommand (offline tools and agents)."""

    OK = 0
    #: Valid input without a result now: no allocation fits, discovery failed, an agent
    #: stopped on an error. A retry may help.
    FAILED = 1
    #: Invalid input or flags: the message names the file, object or flag and the fix.
    INVALID = 2


class DraDriverError(Exception):
    """Base of every error raised on purpose by this project."""

    #: Whether retrying the same operation later may succeed.
    retryable: bool = False


@dataclass(frozen=True)
class FieldError:
    """One problem in one field of one object, as the API server reports it."""

    path: str
    """Dotted field path in JSON names, e.g. ``spec.devices[3].name``."""
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidInputError(DraDriverError):
    """Input that does not parse or that the API server would reject.

    ``source`` names where it came from (a file path, ``<stdin>``), ``obj`` the
    object (``claim default/claim-0``, ``slice node-a-gpus``), ``errors`` the
    offending fields.
    """

    def __init__(
        self,
        message: str = "",
        *,
        source: str = "",
        obj: str = "",
        errors: list[FieldError] | None = None,
    ) -> None:
        self.source = source
        self.obj = obj
        self.errors = list(errors or [])
        self.detail = message
        super().__init__(self._render())

    def _render(self) -> str:
        prefix = ": ".join(p for p in (self.source, self.obj) if p)
        parts = [str(e) for e in self.errors]
        if self.detail:
            parts.insert(0, self.detail)
        body = "; ".join(parts) if parts else "invalid input"
        return f"{prefix}: {body}" if prefix else body

    def located(self, *, source: str = "", obj: str = "") -> InvalidInputError:
        """A copy of this error that also names the file and/or the object."""
        located = copy.copy(self)
        located.source = self.source or source
        located.obj = self.obj or obj
        located.args = (located._render(),)
        return located


class CelCompileError(InvalidInputError):
    """A selector does not parse, does not type-check, is too long or too costly.

    ``expression`` is the selector's source text; ``reason`` the compiler's message.
    """

    def __init__(self, reason: str, *, expression: str = "") -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"CEL compile error: {reason}")


class CelEvaluationError(DraDriverError):
    """Evaluation failed at run time: a missing key, no matching overload, cost limit.

    Upstream aborts the whole allocation attempt on such an error instead of
    skipping the device; so do we.
    """

    def __init__(self, reason: str, *, expression: str = "") -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"CEL runtime error: {reason}")


class UnsatisfiableError(DraDriverError):
    """Valid input for which no allocation exists right now.

    ``reasons`` maps each claim (``claim ns/name``) to why it does not fit, in
    words a person can act on; it may be empty when the cause is not per claim.
    """

    retryable = True

    def __init__(self, message: str, reasons: Mapping[str, str] | None = None) -> None:
        self.reasons: dict[str, str] = dict(reasons or {})
        super().__init__(message)


class DiscoveryError(DraDriverError):
    """GPU discovery failed (NVML missing or erroring). The kubelet plugin logs it and
    retries; it publishes nothing rather than a wrong inventory."""

    retryable = True


class PrepareError(DraDriverError):
    """Preparing or unpreparing one claim failed.

    The kubelet plugin answers it as that claim's ``error`` in the gRPC response
    (never as an RPC failure, never a crash); the kubelet retries the pod's
    prepare, so ``retryable`` says whether a retry can succeed without a change
    to the claim (e.g. the API server was unreachable) or not (bad opaque config,
    a claim for another node).
    """

    def __init__(self, message: str, *, claim: str = "", retryable: bool = False) -> None:
        self.claim = claim
        self.retryable = retryable
        super().__init__(f"{claim}: {message}" if claim else message)


class CheckpointError(DraDriverError):
    """The on-disk checkpoint cannot be read (corrupt, or a newer schema version).

    The kubelet plugin moves the file aside with a log line naming both paths;
    it never resets state silently."""
