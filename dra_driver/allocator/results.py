"""Turning a solution into the ``status.allocation`` the API server would store (§8).

- ``devices.results``: one entry per picked device in search order (claim,
  request, device), with ``adminAccess`` only when true, a copy of the request's
  tolerations, copies of the device's binding conditions, and for
  multi-allocatable devices a fresh ``shareID`` and the ``consumedCapacity`` of
  every capacity (under the name the device publishes it with).
- ``devices.config``: first the class configs (once per class, ``requests``
  listing every request or ``request/subrequest`` served by that class), then the
  claim configs that apply to a chosen request (``requests`` as written; an
  empty list applies to all).
- ``nodeSelector``: pinned to the node (``metadata.name In [node]``) when a
  device comes from a slice (or device) with ``nodeName`` or has
  ``bindsToNode``; otherwise the union of the slices' selector requirements in
  one term; unset when every device is available on all nodes.
"""

from __future__ import annotations

from collections.abc import Callable

from api import limits
from api.errors import FieldError, InvalidInputError
from api.resource_v1 import (
    AllocationResult,
    DeviceAllocationConfiguration,
    DeviceAllocationResult,
    DeviceRequestAllocationResult,
    NodeSelector,
    NodeSelectorRequirement,
    NodeSelectorTerm,
)
from dra_driver.allocator.matching import Pick
from dra_driver.allocator.nodes import FIELD_METADATA_NAME
from dra_driver.allocator.requests import ClaimPlan


def build_result(
    claim: ClaimPlan,
    picks: list[Pick],
    chosen: list[int],
    node: str | None,
    share_id: Callable[[], str],
) -> AllocationResult:
    """The allocation of one claim from its picks; ``share_id`` makes each shareID."""
    results = [_device_result(pick, share_id) for pick in picks]
    return AllocationResult(
        devices=DeviceAllocationResult(
            results=results or None, config=_configs(claim, chosen) or None
        ),
        node_selector=_node_selector(picks, node),
    )


def _device_result(pick: Pick, share_id: Callable[[], str]) -> DeviceRequestAllocationResult:
    device, plan = pick.device, pick.request
    consumed = None
    if pick.consumed:
        consumed = {
            device.capacity[name].published: amount for name, amount in pick.consumed.items()
        }
    return DeviceRequestAllocationResult(
        request=plan.full_name,
        driver=device.driver,
        pool=device.pool,
        device=device.name,
        admin_access=True if plan.admin_access else None,
        tolerations=[t.model_copy(deep=True) for t in plan.tolerations]
        if plan.tolerations
        else None,
        binding_conditions=list(device.binding_conditions) if device.binding_conditions else None,
        binding_failure_conditions=(
            list(device.binding_failure_conditions) if device.binding_failure_conditions else None
        ),
        share_id=share_id() if device.multi else None,
        consumed_capacity=consumed,
    )


def _configs(claim: ClaimPlan, chosen: list[int]) -> list[DeviceAllocationConfiguration]:
    configs: list[DeviceAllocationConfiguration] = []
    by_class: dict[str, list[DeviceAllocationConfiguration]] = {}
    names: set[str] = set()
    for group, index in zip(claim.groups, chosen, strict=True):
        plan = group.alternatives[index]
        names.add(plan.name)
        names.add(plan.full_name)
        entries = by_class.get(plan.device_class.name)
        if entries is not None:
            for entry in entries:
                assert entry.requests is not None
                entry.requests.append(plan.full_name)
            continue
        entries = [
            DeviceAllocationConfiguration(
                source=limits.CONFIG_SOURCE_FROM_CLASS,
                requests=[plan.full_name],
                opaque=config.opaque.model_copy(deep=True) if config.opaque else None,
            )
            for config in plan.device_class.model.spec.config or []
        ]
        by_class[plan.device_class.name] = entries
        configs.extend(entries)
    devices = claim.claim.spec.devices
    for config in (devices.config if devices else None) or []:
        if config.requests and not any(name in names for name in config.requests):
            continue
        configs.append(
            DeviceAllocationConfiguration(
                source=limits.CONFIG_SOURCE_FROM_CLAIM,
                requests=list(config.requests) if config.requests else None,
                opaque=config.opaque.model_copy(deep=True) if config.opaque else None,
            )
        )
    # As the scheduler does: a config naming every request of the claim (or the
    # subrequest chosen for it) applies to all, which an empty list says.
    for entry in configs:
        if entry.requests and all(
            group.alternatives[index].name in entry.requests
            or group.alternatives[index].full_name in entry.requests
            for group, index in zip(claim.groups, chosen, strict=True)
        ):
            entry.requests = None
    return configs


def _same_requirement(a: NodeSelectorRequirement, b: NodeSelectorRequirement) -> bool:
    return (
        a.key == b.key and a.operator == b.operator and set(a.values or []) == set(b.values or [])
    )


def _node_selector(picks: list[Pick], node: str | None) -> NodeSelector | None:
    expressions: list[NodeSelectorRequirement] = []
    fields: list[NodeSelectorRequirement] = []
    for pick in picks:
        device, record = pick.device, pick.device.slice
        if record.per_device:
            node_name, selector = device.node_name, device.node_selector
        else:
            node_name, selector = record.node_name, record.node_selector
        if (node_name or device.binds_to_node) and node is not None:
            return NodeSelector(
                node_selector_terms=[
                    NodeSelectorTerm(
                        match_fields=[
                            NodeSelectorRequirement(
                                key=FIELD_METADATA_NAME, operator="In", values=[node]
                            )
                        ]
                    )
                ]
            )
        if selector is None:
            continue
        terms = selector.model.node_selector_terms
        if len(terms) != 1:
            raise InvalidInputError(
                obj=record.label,
                errors=[
                    FieldError(
                        "spec.nodeSelector.nodeSelectorTerms",
                        f"must have exactly one term, not {len(terms)}",
                    )
                ],
            )
        for source, target in (
            (terms[0].match_fields, fields),
            (terms[0].match_expressions, expressions),
        ):
            for requirement in source or []:
                if not any(_same_requirement(requirement, known) for known in target):
                    target.append(requirement.model_copy(deep=True))
    if not expressions and not fields:
        return None
    return NodeSelector(
        node_selector_terms=[
            NodeSelectorTerm(match_expressions=expressions or None, match_fields=fields or None)
        ]
    )
