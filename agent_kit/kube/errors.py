"""The one error tree of calls to the API server, for both agents.

Every call through :mod:`agent_kit.kube` raises a subclass of :class:`ApiError`;
callers branch on the class, never on an HTTP status. :func:`api_error` is the
only place a status is read (the real client and the test fakes both build their
errors with it).

====================  ==================  ===================================  ===========
class                 HTTP status         meaning                              retry helps
====================  ==================  ===================================  ===========
NotFoundError         404                 the object does not exist            no
ConflictError         409                 stale resourceVersion, or the name   no: re-read
                                          is taken                             and decide
GoneError             410                 a watch or list position expired     no: relist
ForbiddenError        401, 403            RBAC or credentials                  no
InvalidError          400, 422            the API server's validation          no
UnavailableError      0, 429, 5xx         no answer, throttled, server error   yes
ApiError (itself)     any other           an unexpected refusal, or an answer  no
                                          that does not decode
====================  ==================  ===================================  ===========

:class:`KubeConfigError` is not an answer of the server: the client could not be
configured at all (no usable kubeconfig, not in a pod). An agent reports it at start-up
and exits; retrying does not help.
"""

from __future__ import annotations

from typing import ClassVar, Final

from api.errors import DraDriverError

__all__ = [
    "ApiError",
    "ConflictError",
    "ForbiddenError",
    "GoneError",
    "InvalidError",
    "KubeConfigError",
    "NotFoundError",
    "UnavailableError",
    "api_error",
]


class ApiError(DraDriverError):
    """A call to the API server failed; ``status`` is the HTTP status (0: no answer).

    ``status`` is for messages and metrics: callers branch on the subclass. Raised as
    itself only for a status none of the subclasses covers (e.g. 405), or for an answer
    that does not decode into this project's models.
    """

    #: The status of an error raised without one (by the fakes, or by a check on our side).
    default_status: ClassVar[int] = 0

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = self.default_status if status is None else status
        super().__init__(message)


class NotFoundError(ApiError):
    """404: the object (or its namespace) does not exist."""

    default_status = 404


class ConflictError(ApiError):
    """409: the write carried a stale ``metadata.resourceVersion``, or a create found the
    name taken. Not retryable as such: the caller re-reads and decides again."""

    default_status = 409


class GoneError(ApiError):
    """410: the resourceVersion a watch or list resumes from is no longer kept; list again."""

    default_status = 410


class ForbiddenError(ApiError):
    """401/403: the credentials or the RBAC role do not allow the call."""

    default_status = 403


class InvalidError(ApiError):
    """400/422: the API server's validation rejected the object or the request."""

    default_status = 422


class UnavailableError(ApiError):
    """No answer (connection refused, reset, timed out), throttling (429) or a server
    error (5xx): the same call may succeed later."""

    retryable = True


class KubeConfigError(DraDriverError):
    """The API client cannot be configured: the kubeconfig is missing or unusable, or
    (without one) the process does not run in a pod with a service account."""


_BY_STATUS: Final[dict[int, type[ApiError]]] = {
    400: InvalidError,
    401: ForbiddenError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: InvalidError,
}


def api_error(message: str, *, status: int = 0) -> ApiError:
    """The error of the tree for an HTTP ``status`` (0 when the server never answered)."""
    kind = _BY_STATUS.get(status)
    if kind is None:
        kind = UnavailableError if status in (0, 429) or status >= 500 else ApiError
    return kind(message, status=status)
