"""Candidate nodes ranked by how used they are, one ranking per placement policy.

A ranking sorts every candidate node once; afterwards only the nodes whose
usage (or slices) changed are taken out and put back in place, so a policy that
visits nodes best first pays per change, not per decision.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any


class Ranking:
    """Nodes sorted by a usage-dependent key; nodes whose usage changed are re-sorted."""

    def __init__(self, names: Sequence[str], key: Callable[[str], Any]) -> None:
        self.key = key
        self.index = {name: i for i, name in enumerate(names)}
        self.current: dict[str, tuple[Any, int, str]] = {
            name: (key(name), i, name) for i, name in enumerate(names)
        }
        self.entries = sorted(self.current.values())
        #: The names of ``entries``, in the same order, moved along with them.
        self.ordered = [name for _, _, name in self.entries]
        self.dirty: set[str] = set()

    def names(self) -> list[str]:
        """The names, best first: a live list, copy it before changing it."""
        for name in self.dirty:
            old = self.current.get(name)
            if old is None:
                continue
            new = (self.key(name), old[1], name)
            if new == old:
                continue
            at = bisect.bisect_left(self.entries, old)
            del self.entries[at]
            del self.ordered[at]
            self.current[name] = new
            at = bisect.bisect_left(self.entries, new)
            self.entries.insert(at, new)
            self.ordered.insert(at, name)
        self.dirty.clear()
        return self.ordered


class Rankings:
    """The rankings of one snapshot, by name (one per policy)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Ranking] = {}

    def ranked(self, name: str, node_names: Sequence[str], key: Callable[[str], Any]) -> list[str]:
        """``node_names`` sorted by ``key``, ties in their order (:meth:`Snapshot.ranked_nodes`):
        a live list, copy it before changing it."""
        ranking = self._by_name.get(name)
        if ranking is None:
            ranking = Ranking(node_names, key)
            self._by_name[name] = ranking
        return ranking.names()

    def changed(self, node: str) -> None:
        """The node's usage or devices changed: re-sort it in every ranking."""
        for ranking in self._by_name.values():
            ranking.dirty.add(node)

    def clear(self) -> None:
        """Forget every ranking (the node list or the shared pools changed)."""
        self._by_name.clear()
