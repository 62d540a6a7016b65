"""The local cluster's one error type."""

from __future__ import annotations

from api.errors import DraDriverError

__all__ = ["ClusterError"]


class ClusterError(DraDriverError):
    """The local cluster could not be built, started, reached or torn down.

    The message names the component and what it was doing, and, for a
    component that failed, ends with the tail of its log. ``python -m
    e2e.cluster`` exits 1 on it. Retrying helps only where the message says so
    (a port taken between choosing and binding it, for instance).
    """
