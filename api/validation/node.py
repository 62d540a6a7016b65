"""Everything about nodes: node selectors (on slices, devices and allocations), the
one-of choice of which nodes a slice or device serves, and the Node object itself.
"""

from __future__ import annotations

from api import limits
from api.resource_v1 import (
    Device,
    Node,
    NodeSelector,
    NodeSelectorRequirement,
    ResourceSliceSpec,
)
from api.validation._common import Errors, Path, _error, _not_supported, _required
from api.validation.names import (
    _check_subdomain,
    _k8s_qualified_name_problem,
    is_dns1123_subdomain,
)


def _check_requirement(
    errors: Errors, path: Path, req: NodeSelectorRequirement, *, field: bool
) -> None:
    values = req.values or []
    if not req.key:
        _required(errors, (*path, "key"))
    elif field and req.key != "metadata.name":
        _not_supported(errors, (*path, "key"), req.key, ["metadata.name"])
    elif not field and (problem := _k8s_qualified_name_problem(req.key)) is not None:
        _error(errors, (*path, "key"), f'invalid label key "{req.key}": {problem}')
    supported = ("In", "NotIn") if field else limits.NODE_SELECTOR_OPERATORS
    if req.operator not in supported:
        _not_supported(errors, (*path, "operator"), req.operator, supported)
    elif req.operator in ("In", "NotIn"):
        if not values:
            _required(errors, (*path, "values"), f"at least one value for operator {req.operator}")
        elif field and len(values) != 1:
            _error(errors, (*path, "values"), "must have exactly one value for a field selector")
    elif req.operator in ("Exists", "DoesNotExist"):
        if values:
            _error(errors, (*path, "values"), f"must be empty for operator {req.operator}")
    elif len(values) != 1 or not values[0].lstrip("-").isdigit():
        _error(errors, (*path, "values"), f"must be a single integer for operator {req.operator}")


def _check_node_selector(
    errors: Errors, path: Path, selector: NodeSelector, *, one_term: bool
) -> None:
    terms = selector.node_selector_terms
    if one_term and len(terms) != 1:
        _error(
            errors,
            (*path, "nodeSelectorTerms"),
            f"must have exactly one term, not {len(terms)}",
        )
    elif not terms:
        _required(errors, (*path, "nodeSelectorTerms"), "at least one term")
    for i, term in enumerate(terms):
        term_path = (*path, "nodeSelectorTerms", i)
        if not term.match_expressions and not term.match_fields:
            _required(errors, term_path, "matchExpressions or matchFields")
        for j, req in enumerate(term.match_expressions or []):
            _check_requirement(errors, (*term_path, "matchExpressions", j), req, field=False)
        for j, req in enumerate(term.match_fields or []):
            _check_requirement(errors, (*term_path, "matchFields", j), req, field=True)


def _check_node_selection(errors: Errors, path: Path, target: ResourceSliceSpec | Device) -> None:
    """Exactly one of nodeName, nodeSelector, allNodes (for a slice: or perDeviceNodeSelection)."""
    node_name, node_selector, all_nodes = target.node_name, target.node_selector, target.all_nodes
    names = ["nodeName", "nodeSelector", "allNodes"]
    chosen: list[str] = []
    if node_name is not None:
        chosen.append("nodeName")
        if not is_dns1123_subdomain(node_name):
            _error(
                errors,
                (*path, "nodeName"),
                f'invalid node name "{node_name}": must be a non-empty DNS subdomain',
            )
    if node_selector is not None:
        chosen.append("nodeSelector")
        _check_node_selector(errors, (*path, "nodeSelector"), node_selector, one_term=True)
    if all_nodes is not None:
        chosen.append("allNodes")
        if all_nodes is not True:
            _error(errors, (*path, "allNodes"), "must be true when set (or leave it unset)")
    if isinstance(target, ResourceSliceSpec):
        names.append("perDeviceNodeSelection")
        per_device = target.per_device_node_selection
        if per_device is not None:
            chosen.append("perDeviceNodeSelection")
            if per_device is not True:
                _error(
                    errors,
                    (*path, "perDeviceNodeSelection"),
                    "must be true when set (or leave it unset)",
                )
    if len(chosen) != 1:
        listed = ", ".join(f"`{n}`" for n in names)
        found = f"; found {', '.join(chosen)}" if chosen else ""
        _error(errors, path, f"exactly one of {listed} is required{found}")


def validate_node(node: Node) -> Errors:
    """A Node only needs a valid name here; the driver reads, never writes, nodes."""
    errors: Errors = []
    _check_subdomain(errors, ("metadata", "name"), node.metadata.name, "node name")
    return errors
