"""Pending claims checked and prepared for the search.

:func:`plan_claims` turns each pending ResourceClaim into a :class:`ClaimPlan`:
requests (or their ``firstAvailable`` subrequests) with their DeviceClass,
compiled CEL selectors, mode, count, tolerations and capacity requests, and the
claim's constraints. Everything that does not depend on a node is checked here,
once, before any node is searched; problems the API server would reject are
:class:`~api.errors.InvalidInputError` naming the claim and the field:

    claim default/c: spec.devices.requests[0].exactly.deviceClassName: device class "x" not found

A selector that does not compile is a :class:`~api.errors.CelCompileError`
located at its object and field (``class gpu: spec.selectors[1].cel.expression:
CEL compile error: ...``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from api import limits
from api.errors import CelCompileError, FieldError, InvalidInputError
from api.quantity import Quantity
from api.resource_v1 import (
    DeviceClass,
    DeviceSelector,
    DeviceToleration,
    ResourceClaim,
    describe,
)
from dra_driver.cel import CompiledSelector, compile_selector


@dataclass(frozen=True, slots=True)
class Selector:
    """One CEL selector: its index in the owner's list (for messages) and program."""

    index: int
    expression: str
    program: CompiledSelector


@dataclass(eq=False)
class ClassPlan:
    """A DeviceClass with its selectors compiled."""

    name: str
    model: DeviceClass
    selectors: tuple[Selector, ...]


@dataclass(eq=False)
class RequestPlan:
    """One request, or one subrequest of a ``firstAvailable`` request."""

    #: ``ns/name`` of the claim, as upstream messages print it.
    claim_ref: str
    claim_index: int
    request_index: int
    #: Position in ``firstAvailable`` (0 for a plain request).
    sub_index: int
    name: str
    sub_name: str | None
    device_class: ClassPlan
    selectors: tuple[Selector, ...]
    all_devices: bool
    count: int
    admin_access: bool
    tolerations: list[DeviceToleration] | None
    capacity_requests: dict[str, Quantity] | None
    #: JSON path of the request, e.g. ``spec.devices.requests[0].firstAvailable[1]``.
    path: str

    @property
    def full_name(self) -> str:
        """``request`` or ``request/subrequest``, as allocation results name it."""
        return self.name if self.sub_name is None else f"{self.name}/{self.sub_name}"


@dataclass(eq=False)
class RequestGroup:
    """A request of the claim: one plan, or the ordered alternatives of firstAvailable."""

    name: str
    alternatives: list[RequestPlan]
    first_available: bool


@dataclass(frozen=True, slots=True)
class ConstraintPlan:
    """matchAttribute or distinctAttribute over some requests (None: all requests)."""

    index: int
    distinct: bool
    attribute: str
    requests: frozenset[str] | None

    def applies_to(self, plan: RequestPlan) -> bool:
        if self.requests is None:
            return True
        return plan.name in self.requests or (
            plan.sub_name is not None and plan.full_name in self.requests
        )


@dataclass(eq=False)
class ClaimPlan:
    """One pending claim, ready to search for."""

    index: int
    claim: ResourceClaim
    #: ``claim ns/name``.
    label: str
    groups: list[RequestGroup]
    constraints: list[ConstraintPlan]
    shape: str = field(default="")

    @property
    def ref(self) -> str:
        """``ns/name`` as upstream messages print a claim."""
        return self.label.removeprefix("claim ")


def _compile(
    selectors: Sequence[DeviceSelector] | None, obj: str, path: str
) -> tuple[Selector, ...]:
    compiled: list[Selector] = []
    for i, selector in enumerate(selectors or []):
        field_path = f"{path}[{i}].cel.expression"
        if selector.cel is None:
            raise InvalidInputError(
                obj=obj,
                errors=[
                    FieldError(f"{path}[{i}].cel", "required: only CEL selectors are supported")
                ],
            )
        try:
            program = compile_selector(selector.cel.expression)
        except CelCompileError as err:
            located = copy.copy(err)
            located.detail = f"{field_path}: {err.detail}"
            raise located.located(obj=obj) from None
        compiled.append(Selector(i, selector.cel.expression, program))
    return tuple(compiled)


class _Planner:
    def __init__(
        self, classes: Mapping[str, DeviceClass], class_plans: dict[str, ClassPlan]
    ) -> None:
        self.classes = classes
        self.class_plans = class_plans

    def device_class(self, name: str, label: str, path: str) -> ClassPlan:
        plan = self.class_plans.get(name)
        if plan is not None:
            return plan
        if not name:
            raise InvalidInputError(obj=label, errors=[FieldError(path, "required")])
        model = self.classes.get(name)
        if model is None:
            raise InvalidInputError(
                obj=label,
                errors=[
                    FieldError(
                        path,
                        f'device class "{name}" not found: create the DeviceClass '
                        "or name an existing one",
                    )
                ],
            )
        obj = describe(model)
        plan = ClassPlan(name, model, _compile(model.spec.selectors, obj, "spec.selectors"))
        self.class_plans[name] = plan
        return plan

    def request(
        self,
        claim_index: int,
        request_index: int,
        sub_index: int,
        name: str,
        sub_name: str | None,
        *,
        label: str,
        path: str,
        class_name: str,
        selectors: Sequence[DeviceSelector] | None,
        mode: str | None,
        count: int | None,
        admin_access: bool,
        tolerations: list[DeviceToleration] | None,
        capacity: dict[str, Quantity] | None,
    ) -> RequestPlan:
        device_class = self.device_class(class_name, label, f"{path}.deviceClassName")
        mode = mode or limits.ALLOCATION_MODE_EXACT_COUNT
        if mode == limits.ALLOCATION_MODE_EXACT_COUNT:
            number = 1 if count is None else count
            if number <= 0:
                raise InvalidInputError(
                    obj=label, errors=[FieldError(f"{path}.count", "must be greater than zero")]
                )
        elif mode == limits.ALLOCATION_MODE_ALL:
            if count:
                raise InvalidInputError(
                    obj=label,
                    errors=[
                        FieldError(f"{path}.count", "must not be set when allocationMode is All")
                    ],
                )
            number = 0
        else:
            raise InvalidInputError(
                obj=label,
                errors=[
                    FieldError(
                        f"{path}.allocationMode",
                        f"unsupported count mode {mode}: use ExactCount or All",
                    )
                ],
            )
        return RequestPlan(
            claim_ref=label.removeprefix("claim "),
            claim_index=claim_index,
            request_index=request_index,
            sub_index=sub_index,
            name=name,
            sub_name=sub_name,
            device_class=device_class,
            selectors=_compile(selectors, label, f"{path}.selectors"),
            all_devices=mode == limits.ALLOCATION_MODE_ALL,
            count=number,
            admin_access=admin_access,
            tolerations=tolerations or None,
            capacity_requests=capacity or None,
            path=path,
        )

    def claim(self, index: int, claim: ResourceClaim) -> ClaimPlan:
        label = describe(claim)
        devices = claim.spec.devices
        groups: list[RequestGroup] = []
        names: set[str] = set()
        for r, request in enumerate((devices.requests if devices else None) or []):
            path = f"spec.devices.requests[{r}]"
            if request.name in names:
                raise InvalidInputError(
                    obj=label,
                    errors=[FieldError(f"{path}.name", f'duplicate request "{request.name}"')],
                )
            names.add(request.name)
            exact, alternatives = request.exactly, request.first_available
            if (exact is None) == (not alternatives):
                raise InvalidInputError(
                    obj=label,
                    errors=[
                        FieldError(path, "exactly one of exactly or firstAvailable is required")
                    ],
                )
            if exact is not None:
                plan = self.request(
                    index,
                    r,
                    0,
                    request.name,
                    None,
                    label=label,
                    path=f"{path}.exactly",
                    class_name=exact.device_class_name,
                    selectors=exact.selectors,
                    mode=exact.allocation_mode,
                    count=exact.count,
                    admin_access=bool(exact.admin_access),
                    tolerations=exact.tolerations,
                    capacity=exact.capacity.requests if exact.capacity else None,
                )
                groups.append(RequestGroup(request.name, [plan], first_available=False))
                continue
            plans = [
                self.request(
                    index,
                    r,
                    s,
                    request.name,
                    sub.name,
                    label=label,
                    path=f"{path}.firstAvailable[{s}]",
                    class_name=sub.device_class_name,
                    selectors=sub.selectors,
                    mode=sub.allocation_mode,
                    count=sub.count,
                    admin_access=False,
                    tolerations=sub.tolerations,
                    capacity=sub.capacity.requests if sub.capacity else None,
                )
                for s, sub in enumerate(alternatives or [])
            ]
            groups.append(RequestGroup(request.name, plans, first_available=True))
        constraints: list[ConstraintPlan] = []
        for c, constraint in enumerate((devices.constraints if devices else None) or []):
            match, distinct = constraint.match_attribute, constraint.distinct_attribute
            if bool(match) == bool(distinct):
                raise InvalidInputError(
                    obj=label,
                    errors=[
                        FieldError(
                            f"spec.devices.constraints[{c}]",
                            "exactly one of matchAttribute or distinctAttribute is required",
                        )
                    ],
                )
            attribute = match or distinct or ""
            if "/" not in attribute:
                key = "matchAttribute" if match else "distinctAttribute"
                raise InvalidInputError(
                    obj=label,
                    errors=[
                        FieldError(
                            f"spec.devices.constraints[{c}].{key}",
                            f'"{attribute}" must be fully qualified (<domain>/<name>)',
                        )
                    ],
                )
            requests = frozenset(constraint.requests) if constraint.requests else None
            constraints.append(ConstraintPlan(c, bool(distinct), attribute, requests))
        return ClaimPlan(index, claim, label, groups, constraints)


def plan_claims(
    claims: Sequence[ResourceClaim],
    classes: Mapping[str, DeviceClass],
    class_plans: dict[str, ClassPlan] | None = None,
) -> list[ClaimPlan]:
    """Check and prepare the pending claims, in order (see the module docstring).

    ``class_plans`` caches prepared DeviceClasses between calls; it must belong
    to the same (unchanging) ``classes``.
    """
    planner = _Planner(classes, {} if class_plans is None else class_plans)
    return [planner.claim(i, claim) for i, claim in enumerate(claims)]


def claim_shape(claim: ResourceClaim) -> str:
    """What decides where a claim fits: its requests and constraints (not name, not config).

    Two claims with the same shape fit on exactly the same nodes.
    """
    devices = claim.spec.devices
    if devices is None:
        return ""
    return devices.model_dump_json(include={"requests", "constraints"}, exclude_none=True)
