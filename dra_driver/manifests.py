"""Manifests into typed, validated objects (the documents come from
:mod:`dra_driver.manifest_read`: multi-document YAML, JSON, ``kind: List``).

The offline tools (``dra-driver allocate`` / ``explain``) take the same files an
admin would ``kubectl apply``. Everything the API server would reject is an
:class:`~api.errors.InvalidInputError` naming the file, the object and the
field; kinds the tools do not use are skipped with a warning. A Pod asking for extended
resources (``nvidia.com/gpu: 2``) brings the claim the scheduler would make for it
(:mod:`dra_driver.extended_resources`).
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from api.errors import FieldError, InvalidInputError
from api.resource_v1 import (
    DeviceClass,
    DeviceTaintRule,
    K8sModel,
    Node,
    ParsedObject,
    Pod,
    ResourceClaim,
    ResourceClaimTemplate,
    ResourceSlice,
    UnknownKindError,
    describe,
    parse_object,
    strict_errors,
)
from api.validation import validate
from dra_driver.allocator import Snapshot
from dra_driver.cel import compile_selector
from dra_driver.extended_resources import extended_resource_claims
from dra_driver.gpu_configs import gpu_config_errors
from dra_driver.manifest_read import Document

__all__ = ["Inventory", "document_is_clean", "load_inventory"]


@dataclass
class Inventory:
    """The objects of a set of manifests, by kind, each validated."""

    classes: dict[str, DeviceClass] = field(default_factory=dict)
    slices: list[ResourceSlice] = field(default_factory=list)
    #: DeviceTaintRules: their taints count as if the slices carried them.
    taint_rules: list[DeviceTaintRule] = field(default_factory=list)
    claims: list[ResourceClaim] = field(default_factory=list)
    templates: list[ResourceClaimTemplate] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    #: Nodes where a device plugin serves a pod's extended resource, with why: no candidates.
    excluded_nodes: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    """Object (``claim default/c``) to the document it came from, for error messages."""

    @property
    def pending_claims(self) -> list[ResourceClaim]:
        """Claims without ``status.allocation``, in input order."""
        return [c for c in self.claims if c.status is None or c.status.allocation is None]

    @property
    def allocated_claims(self) -> list[ResourceClaim]:
        return [c for c in self.claims if c.status is not None and c.status.allocation is not None]

    def snapshot(self) -> Snapshot:
        """The allocator's snapshot of the input: its slices, classes, DeviceTaintRules and
        nodes, the allocated claims' devices in use."""
        return Snapshot.build(
            slices=self.slices,
            classes=list(self.classes.values()),
            claims=self.allocated_claims,
            nodes=self.nodes,
            taint_rules=self.taint_rules,
        )

    def locate(self, error: InvalidInputError) -> InvalidInputError:
        """The error, also naming the file of the object it names."""
        return error.located(source=self.sources.get(error.obj, ""))


def load_inventory(
    documents: Iterable[Document], *, lenient: bool = False, trusted: Container[int] = ()
) -> Inventory:
    """Parse and validate every document, as ``kubectl apply`` and the API server would.

    Raises InvalidInputError for the first invalid object, a duplicate object or
    a selector that does not compile. (A claim naming a DeviceClass missing from
    the input is the allocator's error: it applies to live clusters too.) Kinds the
    API server serves but the tools do not read (a ConfigMap, a Deployment) are skipped
    with a warning. A Pod asking for extended resources adds the pending claim the scheduler
    would make for it (its source is the pod's) and the nodes a device plugin serves it on.

    Strict, unless ``lenient``: an unknown kind or apiVersion (a typo, or a custom resource
    the tools cannot check), an unknown field, an integer beyond int64 (see
    :func:`api.resource_v1.strict_errors`) and an invalid GpuConfig for this driver (which
    the driver would refuse only at prepare) are errors. ``lenient`` makes them warnings,
    as they were before strict reading.

    ``trusted``: positions of documents :func:`document_is_clean` already found clean (in
    another process): they are parsed but not checked again. Everything else, and the
    result, is as without it.
    """
    inventory = Inventory()
    seen: dict[tuple[str, str], str] = {}
    for position, document in enumerate(documents):
        try:
            obj = parse_object(document.data)
        except UnknownKindError as exc:
            if not (exc.served or lenient):
                raise InvalidInputError(exc.detail, source=document.source, obj=exc.obj) from None
            inventory.warnings.append(f"{document.source}: ignored: {exc.detail}")
            continue
        except InvalidInputError as exc:
            raise exc.located(source=document.source) from exc
        name = describe(obj)
        if position not in trusted:
            errors, strict = _object_errors(obj)
            if lenient:
                inventory.warnings.extend(f"{document.source}: {name}: {e}" for e in strict)
            else:
                # Validation may have named the field already, with a better message.
                named = {e.path for e in errors}
                errors.extend(e for e in strict if e.path not in named)
            if errors:
                raise InvalidInputError(source=document.source, obj=name, errors=errors)
        key = (type(obj).__name__, name)
        if key in seen:
            raise InvalidInputError(
                f"defined twice (first in {seen[key]}); object names must be unique per kind",
                source=document.source,
                obj=name,
            )
        seen[key] = document.source
        inventory.sources[name] = document.source
        _add(inventory, obj)
    _add_extended_resource_claims(inventory)
    return inventory


def document_is_clean(document: Document) -> bool:
    """Whether the document is an object the tools read with nothing to say about it: it
    parses, and validation, its selectors, strict reading and its GpuConfigs find nothing
    (so :func:`load_inventory` may trust it). Never raises for bad input."""
    try:
        obj = parse_object(document.data)
    except InvalidInputError:  # UnknownKindError too: a warning or an error to give
        return False
    errors, strict = _object_errors(obj)
    return not errors and not strict


def _object_errors(obj: ParsedObject) -> tuple[list[FieldError], list[FieldError]]:
    """What the API server's validation and the CEL compiler refuse; what strict reading
    and the driver's GpuConfig checks refuse."""
    errors = validate(obj)
    errors.extend(_selector_errors(obj))
    return errors, strict_errors(obj) + gpu_config_errors(obj)


def _add(inventory: Inventory, obj: ParsedObject) -> None:
    if isinstance(obj, DeviceClass):
        inventory.classes[obj.metadata.name or ""] = obj
    elif isinstance(obj, ResourceSlice):
        inventory.slices.append(obj)
    elif isinstance(obj, DeviceTaintRule):
        inventory.taint_rules.append(obj)
    elif isinstance(obj, ResourceClaim):
        inventory.claims.append(obj)
    elif isinstance(obj, ResourceClaimTemplate):
        inventory.templates.append(obj)
    elif isinstance(obj, Pod):
        inventory.pods.append(obj)
    else:
        inventory.nodes.append(obj)


def _add_extended_resource_claims(inventory: Inventory) -> None:
    made = extended_resource_claims(
        inventory.pods, list(inventory.classes.values()), inventory.claims, inventory.nodes
    )
    for pod, warning in made.warnings:
        inventory.warnings.append(f"{inventory.sources.get(pod, '')}: {pod}: {warning}")
    for claim in made.claims:
        label = describe(claim)
        inventory.sources[label] = inventory.sources.get(made.owners[label], "")
        inventory.claims.append(claim)
    inventory.excluded_nodes.update(made.excluded_nodes)


def _selector_errors(obj: K8sModel) -> list[FieldError]:
    """Compile every CEL selector of a class or claim, as the API server does on create."""
    located: list[tuple[str, str]] = []
    if isinstance(obj, DeviceClass):
        for i, selector in enumerate(obj.spec.selectors or []):
            if selector.cel is not None:
                located.append((f"spec.selectors[{i}].cel.expression", selector.cel.expression))
    elif isinstance(obj, ResourceClaim | ResourceClaimTemplate):
        devices = obj.spec.devices if isinstance(obj, ResourceClaim) else obj.spec.spec.devices
        for r, request in enumerate((devices.requests or []) if devices else []):
            variants = []
            if request.exactly is not None:
                variants.append((f"spec.devices.requests[{r}].exactly", request.exactly.selectors))
            for s, sub in enumerate(request.first_available or []):
                variants.append((f"spec.devices.requests[{r}].firstAvailable[{s}]", sub.selectors))
            for prefix, selectors in variants:
                for i, selector in enumerate(selectors or []):
                    if selector.cel is not None:
                        located.append(
                            (f"{prefix}.selectors[{i}].cel.expression", selector.cel.expression)
                        )
        if isinstance(obj, ResourceClaimTemplate):
            located = [("spec." + path, expr) for path, expr in located]
    errors: list[FieldError] = []
    for path, expression in located:
        try:
            compile_selector(expression)
        except InvalidInputError as exc:
            errors.append(FieldError(path, exc.detail))
    return errors
