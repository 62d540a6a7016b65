"""The core/v1 pieces the driver reads: node selectors (used by slices, devices and
allocations too), and the Node with its taints and resources.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator

from api import limits
from api.resource_v1.base import K8sModel, Timestamp
from api.resource_v1.meta import K8sObject


class NodeSelectorRequirement(K8sModel):
    key: str
    operator: str
    values: list[str] | None = None


class NodeSelectorTerm(K8sModel):
    match_expressions: list[NodeSelectorRequirement] | None = None
    match_fields: list[NodeSelectorRequirement] | None = None


class NodeSelector(K8sModel):
    node_selector_terms: list[NodeSelectorTerm]


class Taint(K8sModel):
    """core/v1 Taint of a Node."""

    key: str
    value: str | None = None
    effect: str
    time_added: Timestamp | None = None


class NodeSpec(K8sModel):
    taints: list[Taint] | None = None
    unschedulable: bool | None = None


def _quantity_text(value: object) -> object:
    # Node resources are Quantities; YAML writes ``cpu: 16`` as a number.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


#: A quantity kept as the text the Node reports (``"15500m"``, ``"129024Mi"``).
_QuantityText = Annotated[str, BeforeValidator(_quantity_text)]


class NodeStatus(K8sModel):
    """Resources of a Node, as text; :func:`parse_quantity` gives their values."""

    capacity: dict[str, _QuantityText] | None = None
    allocatable: dict[str, _QuantityText] | None = None


class Node(K8sObject):
    api_version: str = limits.CORE_API_VERSION
    kind: str = limits.KIND_NODE
    spec: NodeSpec | None = None
    status: NodeStatus | None = None
