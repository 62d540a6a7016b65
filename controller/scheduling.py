"""What the kube-scheduler checks besides devices: the pods, and which nodes can run one.

:class:`PodInfo` is what the controller keeps of a Pod (decoded once from the
raw object): its scheduling gates, node selector, required node affinity,
tolerations, cpu/memory requests, resource claims and PodScheduled condition.

:func:`filter_nodes` applies the scheduler's node filters that a placement
must honour, in the scheduler's order, and says why each rejected node was
rejected (the scheduler's own wording, so an Event reads like a
FailedScheduling one):

1. ``spec.unschedulable`` (cordoned) unless the pod tolerates
   ``node.kubernetes.io/unschedulable:NoSchedule``;
2. ``spec.nodeSelector`` labels and the required node affinity
   (``requiredDuringSchedulingIgnoredDuringExecution``: terms ORed, the
   requirements of a term ANDed; ``matchFields`` on ``metadata.name``);
3. node taints with effect ``NoSchedule`` or ``NoExecute`` that no toleration
   of the pod tolerates (``PreferNoSchedule`` never filters);
4. cpu, memory and pod count: the node's allocatable minus what the pods
   bound (or about to be bound) to it request must cover the pod's requests.

Pod requests follow the scheduler (``PodRequests``): the sum of the
containers' requests plus restartable (sidecar) init containers, or the
largest init container step if that is more, plus ``spec.overhead``; a
pod-level ``spec.resources.requests`` wins for cpu and memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from api.errors import InvalidInputError
from api.quantity import Quantity
from api.resource_v1 import Node, NodeSelector, object_key
from dra_driver.allocator.nodes import NodeInfo, compile_node_selector

__all__ = [
    "UNSCHEDULABLE_TAINT",
    "NodeFacts",
    "NodeFilter",
    "NodeUsage",
    "PodClaim",
    "PodInfo",
    "Requests",
    "Toleration",
    "filter_nodes",
    "node_facts",
    "parse_pod",
]

UNSCHEDULABLE_TAINT: Final = "node.kubernetes.io/unschedulable"
_FILTERING_EFFECTS: Final = frozenset({"NoSchedule", "NoExecute"})
_TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class Requests:
    """cpu (millicores) and memory (bytes) a pod requests, or a node has, as the
    scheduler counts them: integers, fractions rounded up."""

    cpu: int = 0
    memory: int = 0

    def __add__(self, other: Requests) -> Requests:
        return Requests(self.cpu + other.cpu, self.memory + other.memory)

    def __sub__(self, other: Requests) -> Requests:
        return Requests(self.cpu - other.cpu, self.memory - other.memory)

    def max(self, other: Requests) -> Requests:
        return Requests(max(self.cpu, other.cpu), max(self.memory, other.memory))


@dataclass(frozen=True, slots=True)
class Toleration:
    """core/v1 Toleration (operator ``Equal`` or ``Exists``; empty effect: all effects)."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, key: str, value: str, effect: str) -> bool:
        if self.effect and self.effect != effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != key:
            return False
        return self.operator == "Exists" or self.value == value


@dataclass(frozen=True, slots=True)
class PodClaim:
    """One ``spec.resourceClaims`` entry: a claim by name or from a template."""

    name: str
    claim_name: str | None
    template_name: str | None


@dataclass(frozen=True, slots=True)
class ScheduledCondition:
    """The pod's ``PodScheduled`` condition."""

    status: str
    reason: str
    message: str
    last_transition_time: str


@dataclass(frozen=True)
class PodInfo:
    """What the controller keeps of one Pod."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    node_name: str | None
    phase: str
    deleting: bool
    gates: tuple[str, ...]
    annotations: Mapping[str, str]
    node_selector: Mapping[str, str]
    affinity: NodeSelector | None
    tolerations: tuple[Toleration, ...]
    requests: Requests
    claims: tuple[PodClaim, ...]
    #: ``status.resourceClaimStatuses``: pod claim name -> generated claim name
    #: (None: the claim controller decided no claim is needed).
    claim_statuses: Mapping[str, str | None] = field(default_factory=dict)
    scheduled: ScheduledCondition | None = None
    #: ``spec.schedulingGroup.podGroupName``: the PodGroup (same namespace) it belongs to.
    pod_group: str | None = None

    @property
    def key(self) -> str:
        return object_key(self.namespace, self.name)

    @property
    def label(self) -> str:
        return f"pod {object_key(self.namespace, self.name)}"

    @property
    def terminal(self) -> bool:
        return self.phase in _TERMINAL_PHASES

    @property
    def bound(self) -> bool:
        return bool(self.node_name)

    @property
    def unschedulable(self) -> bool:
        """The scheduler tried and found no node (PodScheduled False, reason Unschedulable)."""
        return (
            self.scheduled is not None
            and self.scheduled.status == "False"
            and self.scheduled.reason == "Unschedulable"
        )

    def has_gate(self, gate: str) -> bool:
        return gate in self.gates

    def claim_names(self) -> tuple[list[str], list[str]]:
        """(claim names the pod uses, pod claim names whose claim does not exist yet).

        A template claim exists once ``status.resourceClaimStatuses`` names it;
        an entry without a name means no claim is needed.
        """
        names: list[str] = []
        waiting: list[str] = []
        for claim in self.claims:
            if claim.claim_name:
                names.append(claim.claim_name)
            elif claim.name in self.claim_statuses:
                generated = self.claim_statuses[claim.name]
                if generated:
                    names.append(generated)
            else:
                waiting.append(claim.name)
        return names, waiting


# --- Decoding -----------------------------------------------------------------------------


def _quantity(text: object, what: str, *, scale: int = 1) -> int:
    """``text`` times ``scale``, rounded up (cpu: scale 1000, millicores)."""
    try:
        value = Quantity.parse(text if isinstance(text, int) else str(text)).value
    except ValueError as err:
        raise InvalidInputError(f"{what}: {err}") from None
    return math.ceil(value * scale)


def _requests_of(resources: Mapping[str, Any] | None, what: str) -> Requests:
    requests = (resources or {}).get("requests") or {}
    return Requests(
        cpu=_quantity(requests["cpu"], f"{what}.cpu", scale=1000) if "cpu" in requests else 0,
        memory=_quantity(requests["memory"], f"{what}.memory") if "memory" in requests else 0,
    )


def pod_requests(spec: Mapping[str, Any]) -> Requests:
    """The pod's effective cpu/memory requests (see the module docstring)."""
    total = Requests()
    for i, container in enumerate(spec.get("containers") or []):
        total = total + _requests_of(container.get("resources"), f"containers[{i}]")
    sidecars = Requests()
    init_peak = Requests()
    for i, container in enumerate(spec.get("initContainers") or []):
        own = _requests_of(container.get("resources"), f"initContainers[{i}]")
        if container.get("restartPolicy") == "Always":
            sidecars = sidecars + own
            step = sidecars
        else:
            step = own + sidecars
        init_peak = init_peak.max(step)
    total = (total + sidecars).max(init_peak)
    pod_level = spec.get("resources")
    if pod_level and (pod_level.get("requests") or {}):
        level = _requests_of(pod_level, "resources")
        requested = pod_level["requests"]
        total = Requests(
            cpu=level.cpu if "cpu" in requested else total.cpu,
            memory=level.memory if "memory" in requested else total.memory,
        )
    overhead = spec.get("overhead") or {}
    if overhead:
        total = total + _requests_of({"requests": overhead}, "overhead")
    return total


def parse_pod(raw: Mapping[str, Any]) -> PodInfo:
    """Decode a Pod; raises InvalidInputError naming the pod and field for a bad value."""
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    label = f"pod {meta.get('namespace')}/{meta.get('name')}"
    try:
        requests = pod_requests(spec)
        affinity = _required_affinity(spec)
    except InvalidInputError as err:
        raise err.located(obj=label) from None
    scheduled = None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled":
            scheduled = ScheduledCondition(
                status=str(condition.get("status") or ""),
                reason=str(condition.get("reason") or ""),
                message=str(condition.get("message") or ""),
                last_transition_time=str(condition.get("lastTransitionTime") or ""),
            )
    return PodInfo(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        node_name=spec.get("nodeName") or None,
        phase=str(status.get("phase") or "Pending"),
        deleting=bool(meta.get("deletionTimestamp")),
        gates=tuple(str(g.get("name")) for g in spec.get("schedulingGates") or []),
        annotations=dict(meta.get("annotations") or {}),
        node_selector=dict(spec.get("nodeSelector") or {}),
        affinity=affinity,
        tolerations=tuple(
            Toleration(
                key=str(t.get("key") or ""),
                operator=str(t.get("operator") or "Equal"),
                value=str(t.get("value") or ""),
                effect=str(t.get("effect") or ""),
            )
            for t in spec.get("tolerations") or []
        ),
        requests=requests,
        pod_group=(spec.get("schedulingGroup") or {}).get("podGroupName") or None,
        claims=tuple(
            PodClaim(
                name=str(c.get("name")),
                claim_name=c.get("resourceClaimName"),
                template_name=c.get("resourceClaimTemplateName"),
            )
            for c in spec.get("resourceClaims") or []
        ),
        claim_statuses={
            str(s.get("name")): s.get("resourceClaimName")
            for s in status.get("resourceClaimStatuses") or []
        },
        scheduled=scheduled,
    )


def _required_affinity(spec: Mapping[str, Any]) -> NodeSelector | None:
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or None
    if required is None:
        return None
    try:
        return NodeSelector.model_validate(required)
    except ValueError as err:
        raise InvalidInputError(
            f"spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution: {err}"
        ) from None


# --- Node filtering -----------------------------------------------------------------------


#: What a node that does not report a resource has of it: no limit.
_UNLIMITED: Final = 2**62


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the node filters read of a Node, decoded once when the Node changes."""

    name: str
    labels: Mapping[str, str]
    unschedulable: bool
    #: Taints that filter (NoSchedule, NoExecute): (key, value, effect).
    taints: tuple[tuple[str, str, str], ...]
    allocatable: Requests
    max_pods: int | None

    @property
    def info(self) -> NodeInfo:
        return NodeInfo(self.name, self.labels)


def node_facts(node: Node) -> NodeFacts:
    """Decode ``node`` for the filters; InvalidInputError names a bad allocatable value.

    A node that does not report cpu, memory or pods (a fake node) is not limited by it.
    """
    values = (node.status.allocatable if node.status is not None else None) or {}
    name = node.metadata.name or ""
    where = f"node {name}: status.allocatable"
    spec = node.spec
    return NodeFacts(
        name=name,
        labels=dict(node.metadata.labels or {}),
        unschedulable=bool(spec is not None and spec.unschedulable),
        taints=tuple(
            (t.key, t.value or "", t.effect)
            for t in (spec.taints if spec is not None else None) or []
            if t.effect in _FILTERING_EFFECTS
        ),
        allocatable=Requests(
            cpu=_quantity(values["cpu"], f"{where}.cpu", scale=1000)
            if "cpu" in values
            else _UNLIMITED,
            memory=_quantity(values["memory"], f"{where}.memory")
            if "memory" in values
            else _UNLIMITED,
        ),
        max_pods=_quantity(values["pods"], f"{where}.pods") if "pods" in values else None,
    )


@dataclass
class NodeFilter:
    """The outcome of :func:`filter_nodes`."""

    nodes: list[str]
    #: Rejected node -> the scheduler-style reason.
    rejected: dict[str, str]

    def summary(self) -> str:
        """``0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match ...``."""
        total = len(self.nodes) + len(self.rejected)
        counts: dict[str, int] = {}
        for reason in self.rejected.values():
            counts[reason] = counts.get(reason, 0) + 1
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        text = f"{len(self.nodes)}/{total} nodes are available"
        return f"{text}: {parts}" if parts else text


@dataclass
class NodeUsage:
    """What the pods bound (or about to be bound) to a node request."""

    requests: Requests = field(default_factory=Requests)
    pods: int = 0


def filter_nodes(
    pod: PodInfo,
    nodes: Mapping[str, NodeFacts],
    usage: Mapping[str, NodeUsage],
    *,
    excluded: Iterable[str] = (),
    own: tuple[str, Requests] | None = None,
) -> NodeFilter:
    """The nodes ``pod`` may run on (in name order) and why the others may not.

    ``usage``: what pods bound (or about to be) request per node; ``own``: the
    pod's own share of it (node, requests), not counted against it.
    ``excluded``: nodes to leave out anyway (a previous placement there failed).
    Raises InvalidInputError for a required node affinity with a bad operator.
    """
    selector = (
        compile_node_selector(
            pod.affinity,
            obj=pod.label,
            path="spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        )
        if pod.affinity is not None
        else None
    )
    left_out = set(excluded)
    fit: list[str] = []
    rejected: dict[str, str] = {}
    for name in sorted(nodes):
        node = nodes[name]
        if name in left_out:
            rejected[name] = "node(s) where an earlier placement of the pod failed"
            continue
        used = usage.get(name)
        if own is not None and own[0] == name and used is not None:
            used = NodeUsage(used.requests - own[1], used.pods - 1)
        reason = _rejection(pod, node, used, selector)
        if reason is None:
            fit.append(name)
        else:
            rejected[name] = reason
    return NodeFilter(fit, rejected)


def _rejection(pod: PodInfo, node: NodeFacts, usage: NodeUsage | None, selector: Any) -> str | None:
    if node.unschedulable and not _tolerated(
        pod.tolerations, UNSCHEDULABLE_TAINT, "", "NoSchedule"
    ):
        return "node(s) were unschedulable"
    labels = node.labels
    if any(labels.get(k) != v for k, v in pod.node_selector.items()):
        return "node(s) didn't match Pod's node affinity/selector"
    if selector is not None and not selector.matches(node.info):
        return "node(s) didn't match Pod's node affinity/selector"
    for key, value, effect in node.taints:
        if not _tolerated(pod.tolerations, key, value, effect):
            shown = f"{key}: {value}" if value else key
            return f"node(s) had untolerated taint {{{shown}}}"
    used = usage or _NO_USAGE
    if node.max_pods is not None and used.pods + 1 > node.max_pods:
        return "Too many pods"
    if pod.requests.cpu > node.allocatable.cpu - used.requests.cpu:
        return "Insufficient cpu"
    if pod.requests.memory > node.allocatable.memory - used.requests.memory:
        return "Insufficient memory"
    return None


_NO_USAGE: Final = NodeUsage()


def _tolerated(tolerations: Sequence[Toleration], key: str, value: str, effect: str) -> bool:
    return any(t.tolerates(key, value, effect) for t in tolerations)
