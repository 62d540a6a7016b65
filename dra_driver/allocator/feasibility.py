"""What the snapshot remembers about where claim shapes do not fit, and when to forget it.

Infeasibility is monotonic while devices are only added to the in-use state:
a node that cannot fit a claim shape cannot fit it after more devices are
taken. So a node's *release epoch* changes only when devices on it are
released (or, for pools not bound to one node, a global epoch), and a node
remembered as infeasible is skipped until its epoch moves. Slices that add
devices to a node move its epoch too.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

#: Claim shapes whose infeasible nodes are remembered (least recently used dropped).
FEASIBILITY_MEMO_SHAPES: Final = 256
#: Release-log entries kept before memos fall back to a full (memoised) rescan.
_RELEASE_LOG_LIMIT: Final = 4096


@dataclass(eq=False)
class FeasibilityMemo:
    """What is known about one claim shape: nodes proven infeasible, by epoch."""

    infeasible: dict[str | None, tuple[int, int]] = field(default_factory=dict)
    #: First-fit resumes here: every node before it is known infeasible.
    cursor: int = 0
    log_position: int = 0


class Feasibility:
    """Release epochs per node, the log of releases, and a memo per claim shape."""

    def __init__(self, node_names: Sequence[str]) -> None:
        self._node_index = {name: i for i, name in enumerate(node_names)}
        self._node_epoch: dict[str, int] = {}
        self._global_epoch = 0
        self._release_log: list[str | None] = []
        self._log_base = 0
        self._memos: OrderedDict[object, FeasibilityMemo] = OrderedDict()

    def set_nodes(self, node_names: Sequence[str]) -> None:
        """A new candidate node list: first-fit cursors into the old one no longer hold."""
        self._node_index = {name: i for i, name in enumerate(node_names)}
        self._memos.clear()

    def released(self, node: str | None) -> None:
        """Devices ``node`` can use were released or added (None: devices any node can use)."""
        if node is None:
            self._global_epoch += 1
        else:
            self._node_epoch[node] = self._node_epoch.get(node, 0) + 1
        self._release_log.append(node)
        if len(self._release_log) > _RELEASE_LOG_LIMIT:
            self._log_base += len(self._release_log)
            self._release_log.clear()

    def epoch(self, node: str | None) -> tuple[int, int]:
        """Release epoch of a node: changes whenever devices it can use are released."""
        return (self._node_epoch.get(node, 0) if node is not None else 0, self._global_epoch)

    def node_index(self, name: str) -> int:
        return self._node_index[name]

    def memo(self, shape: object) -> FeasibilityMemo:
        """The memo for a claim shape, with its first-fit cursor moved back before
        every node that released devices since the memo was last used."""
        memo = self._memos.get(shape)
        if memo is None:
            memo = FeasibilityMemo(log_position=self._log_base + len(self._release_log))
            self._memos[shape] = memo
            if len(self._memos) > FEASIBILITY_MEMO_SHAPES:
                self._memos.popitem(last=False)
            return memo
        self._memos.move_to_end(shape)
        end = self._log_base + len(self._release_log)
        if memo.log_position < self._log_base:
            memo.cursor = 0
        else:
            for node in self._release_log[memo.log_position - self._log_base :]:
                if node is None:
                    memo.cursor = 0
                    break
                index = self._node_index.get(node)
                if index is not None and index < memo.cursor:
                    memo.cursor = index
        memo.log_position = end
        return memo
