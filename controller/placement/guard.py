"""What guards every write of the placement: the leader fence, and how many times a write
that met a conflict is tried again."""

from __future__ import annotations

from typing import Final, Protocol

from api.errors import DraDriverError

__all__ = ["CONFLICT_ATTEMPTS", "AlwaysLeader", "Fence", "NotLeaderError", "check_fence"]

#: Decide-and-write rounds per reconcile when claims keep changing under us (and tries
#: of one release or gate removal that meets conflicts).
CONFLICT_ATTEMPTS: Final = 3


class NotLeaderError(DraDriverError):
    """This replica may not write (not the leader, or its lease may have expired)."""

    retryable = True


class Fence(Protocol):
    """Says whether writes are allowed now (the leader elector)."""

    def can_write(self) -> bool: ...


class AlwaysLeader:
    """The fence of a single replica run without leader election."""

    def can_write(self) -> bool:
        return True


def check_fence(fence: Fence) -> None:
    """Raise NotLeaderError unless ``fence`` allows a write now; called before each write."""
    if not fence.can_write():
        raise NotLeaderError("this replica is not the leader")
