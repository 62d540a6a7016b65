"""The node filter of a decision, kept per pod shape and brought up to date node by node.

:func:`~controller.scheduling.filter_nodes` reads every node for every pod: at 5,000
nodes that was most of a decision's time, spent again and again on the same verdicts,
as the pods of one burst usually ask the same of a node (one workload's replicas: same
tolerations, node selector, affinity and requests). :class:`NodeFilters` keeps, per
such *shape*, each node's verdict, and before a decision re-examines only the nodes
whose facts (labels, taints, allocatable) or usage (requests of the pods bound or
nominated there) changed since that shape's last decision. The stores report those
changes to a :class:`NodeChanges` log.

The answer is the one :func:`~controller.scheduling.filter_nodes` gives on the whole
cluster. Not locked: the cache's lock covers it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Final

from controller.scheduling import NodeFacts, NodeFilter, NodeUsage, PodInfo, filter_nodes

__all__ = ["NodeChanges", "NodeFilters", "pod_shape"]

#: Shapes kept at once (least recently used first out).
MAX_SHAPES: Final = 64
#: Changes logged (times the node count) before the log starts over (and every shape
#: is examined afresh once).
LOG_FACTOR: Final = 4


class NodeChanges:
    """Names of the nodes whose facts or usage changed, in order (see the module docstring)."""

    def __init__(self) -> None:
        self.log: list[str] = []
        #: Bumped when the log starts over: positions into an older log mean nothing.
        self.epoch = 0

    def changed(self, node: str) -> None:
        self.log.append(node)

    def restart(self) -> None:
        self.log.clear()
        self.epoch += 1


def pod_shape(pod: PodInfo) -> Hashable:
    """What :func:`~controller.scheduling.filter_nodes` reads of a pod."""
    affinity = pod.affinity.model_dump_json() if pod.affinity is not None else None
    return (
        tuple(sorted(pod.node_selector.items())),
        affinity,
        pod.tolerations,
        pod.requests,
    )


@dataclass
class _Verdicts:
    """One shape's verdicts: node -> None (fits) or why not; valid up to ``position``."""

    epoch: int
    position: int
    verdicts: dict[str, str | None] = field(default_factory=dict)
    #: The answer built from ``verdicts`` (None: a verdict changed since).
    answer: NodeFilter | None = None


class NodeFilters:
    """Per pod shape, every node's verdict (see the module docstring)."""

    def __init__(
        self,
        nodes: Mapping[str, NodeFacts],
        usage: Mapping[str, NodeUsage],
        changes: NodeChanges,
    ) -> None:
        self._nodes = nodes
        self._usage = usage
        self._changes = changes
        self._shapes: dict[Hashable, _Verdicts] = {}
        #: Decisions answered from kept verdicts (observability; tests look at it).
        self.reused = 0

    def filter(self, pod: PodInfo) -> NodeFilter:
        """``filter_nodes(pod, nodes, usage)``, re-examining only the nodes changed since
        the last pod of the same shape. Raises InvalidInputError as filter_nodes does."""
        changes = self._changes
        if len(changes.log) > LOG_FACTOR * len(self._nodes) + 1000:
            changes.restart()
        shape = pod_shape(pod)
        kept = self._shapes.pop(shape, None)
        if kept is None or kept.epoch != changes.epoch:
            found = filter_nodes(pod, self._nodes, self._usage)
            verdicts: dict[str, str | None] = dict.fromkeys(found.nodes)
            verdicts.update(found.rejected)
            kept = _Verdicts(changes.epoch, len(changes.log), verdicts)
        else:
            self.reused += 1
            self._refresh(pod, kept)
        self._shapes[shape] = kept
        while len(self._shapes) > MAX_SHAPES:
            del self._shapes[next(iter(self._shapes))]
        if kept.answer is None:
            # In name order, as filter_nodes answers.
            ordered = sorted(kept.verdicts.items())
            fit = [name for name, why in ordered if why is None]
            rejected = {name: why for name, why in ordered if why is not None}
            kept.answer = NodeFilter(fit, rejected)
        # A copy: callers may keep or change what they get.
        return NodeFilter(list(kept.answer.nodes), dict(kept.answer.rejected))

    def _refresh(self, pod: PodInfo, kept: _Verdicts) -> None:
        log = self._changes.log
        touched = set(log[kept.position :])
        kept.position = len(log)
        if not touched:
            return
        present = {name: self._nodes[name] for name in touched if name in self._nodes}
        verdicts = kept.verdicts
        for name in touched - present.keys():
            if verdicts.pop(name, "") != "":
                kept.answer = None
        found = filter_nodes(pod, present, self._usage)
        fresh: dict[str, str | None] = dict.fromkeys(found.nodes)
        fresh.update(found.rejected)
        for name, why in fresh.items():
            if name not in verdicts or verdicts[name] != why:
                verdicts[name] = why
                kept.answer = None
