"""Node selection: which nodes a ResourceSlice (or one of its devices) is available on.

A ResourceSlice names its nodes in one of four ways: ``nodeName``, a core/v1
``nodeSelector``, ``allNodes: true`` or ``perDeviceNodeSelection: true`` (then
each device says it with the same three fields). Node selectors follow core/v1
node affinity:

- the terms of a selector are ORed; an empty term, or a selector without terms,
  matches no node;
- within a term, every ``matchExpressions`` requirement (node labels) and every
  ``matchFields`` requirement (only ``metadata.name``) must hold;
- operators ``In`` / ``NotIn`` / ``Exists`` / ``DoesNotExist`` / ``Gt`` / ``Lt``;
  ``NotIn`` and ``DoesNotExist`` hold for a missing label, ``Gt`` / ``Lt``
  compare the label as an integer (a non-integer label does not match).

Selectors are compiled once (:func:`compile_node_selector`) when the snapshot is
built, so a malformed selector is reported there, naming the slice and field,
instead of on every allocation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from api.errors import FieldError, InvalidInputError
from api.resource_v1 import NodeSelector, NodeSelectorRequirement

#: The only field a ``matchFields`` requirement may name.
FIELD_METADATA_NAME = "metadata.name"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What node selection looks at: the node's name and labels.

    A node known only from a slice's ``nodeName`` (no Node object given) has no
    labels: label selectors do not match it, ``metadata.name`` does.
    """

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


class _BadRequirementError(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.error = FieldError(path, message)


@dataclass(frozen=True, slots=True)
class _Requirement:
    key: str
    operator: str
    values: frozenset[str]
    number: int  # the single value of Gt / Lt

    def matches(self, value: str | None) -> bool:
        op = self.operator
        if op == "In":
            return value is not None and value in self.values
        if op == "NotIn":
            return value is None or value not in self.values
        if op == "Exists":
            return value is not None
        if op == "DoesNotExist":
            return value is None
        if value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        return number > self.number if op == "Gt" else number < self.number


@dataclass(frozen=True, slots=True)
class _Term:
    expressions: tuple[_Requirement, ...]
    fields: tuple[_Requirement, ...]

    def matches(self, node: NodeInfo) -> bool:
        if not self.expressions and not self.fields:
            return False
        labels = node.labels
        for requirement in self.expressions:
            if not requirement.matches(labels.get(requirement.key)):
                return False
        return all(requirement.matches(node.name) for requirement in self.fields)


@dataclass(frozen=True, slots=True)
class CompiledNodeSelector:
    """A node selector ready to be matched; keeps the model for allocation results."""

    model: NodeSelector
    terms: tuple[_Term, ...]

    def matches(self, node: NodeInfo) -> bool:
        return any(term.matches(node) for term in self.terms)


def _compile_requirement(
    requirement: NodeSelectorRequirement, path: str, *, is_field: bool
) -> _Requirement:
    op = requirement.operator
    values = requirement.values or []
    if is_field:
        if requirement.key != FIELD_METADATA_NAME:
            raise _BadRequirementError(
                f"{path}.key",
                f'unsupported field "{requirement.key}": only {FIELD_METADATA_NAME} is supported',
            )
        if op not in ("In", "NotIn"):
            raise _BadRequirementError(
                f"{path}.operator", f'unsupported operator "{op}" for a field: use In or NotIn'
            )
    if op in ("In", "NotIn"):
        if not values:
            raise _BadRequirementError(f"{path}.values", f"must be non-empty for operator {op}")
        return _Requirement(requirement.key, op, frozenset(values), 0)
    if op in ("Exists", "DoesNotExist"):
        if values:
            raise _BadRequirementError(f"{path}.values", f"must be empty for operator {op}")
        return _Requirement(requirement.key, op, frozenset(), 0)
    if op in ("Gt", "Lt"):
        if len(values) != 1:
            raise _BadRequirementError(
                f"{path}.values", f"must have exactly one value for operator {op}"
            )
        try:
            number = int(values[0])
        except ValueError:
            raise _BadRequirementError(
                f"{path}.values[0]", f'must be an integer for operator {op}, not "{values[0]}"'
            ) from None
        return _Requirement(requirement.key, op, frozenset(), number)
    raise _BadRequirementError(
        f"{path}.operator",
        f'unsupported operator "{op}": use In, NotIn, Exists, DoesNotExist, Gt or Lt',
    )


def compile_node_selector(selector: NodeSelector, *, obj: str, path: str) -> CompiledNodeSelector:
    """Compile ``selector``; raise InvalidInputError naming ``obj`` and the field at ``path``."""
    terms: list[_Term] = []
    try:
        for t, term in enumerate(selector.node_selector_terms):
            term_path = f"{path}.nodeSelectorTerms[{t}]"
            expressions = tuple(
                _compile_requirement(r, f"{term_path}.matchExpressions[{i}]", is_field=False)
                for i, r in enumerate(term.match_expressions or [])
            )
            fields = tuple(
                _compile_requirement(r, f"{term_path}.matchFields[{i}]", is_field=True)
                for i, r in enumerate(term.match_fields or [])
            )
            terms.append(_Term(expressions, fields))
    except _BadRequirementError as err:
        raise InvalidInputError(obj=obj, errors=[err.error]) from None
    return CompiledNodeSelector(selector, tuple(terms))


def node_matches(
    node: NodeInfo | None,
    node_name: str | None,
    all_nodes: bool,
    selector: CompiledNodeSelector | None,
) -> bool:
    """Whether a slice or device with these node fields is available on ``node``.

    ``node`` None stands for "no particular node": only ``allNodes`` matches it.
    Nothing set (an unknown future mode) matches no node.
    """
    if node_name:
        return node is not None and node.name == node_name
    if all_nodes:
        return True
    if selector is not None:
        return node is not None and selector.matches(node)
    return False
