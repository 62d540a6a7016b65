"""Reading manifests: multi-document YAML, JSON, ``kind: List``, into typed, validated objects.

The offline tools (``dra-driver allocate`` / ``explain``) take the same files an
admin would ``kubectl apply``. Everything the API server would reject is an
:class:`~api.errors.InvalidInputError` naming the file, the object and the
field; kinds the tools do not use are skipped with a warning. A Pod asking for extended
resources (``nvidia.com/gpu: 2``) brings the claim the scheduler would make for it
(:mod:`dra_driver.extended_resources`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from api import limits
from api.errors import FieldError, InvalidInputError
from api.resource_v1 import (
    DeviceClass,
    DeviceTaintRule,
    K8sModel,
    Node,
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
from dra_driver.manifest_fast import fast_load_all
from dra_driver.manifest_yaml import ManifestBoundError, ManifestLoader

_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Document:
    """One object's raw data and where it came from (``file.yaml#2``: third document)."""

    source: str
    data: Mapping[str, Any]


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


def split_documents(text: str, source: str) -> list[Document]:
    """Parse YAML (one or more documents) or JSON; flatten ``kind: List``.

    Empty documents are skipped. Raises InvalidInputError naming ``source`` when
    the text does not parse, a document is not an object, or a document is past a bound
    the API server's decoder sets (size with aliases expanded, nesting depth; see
    :func:`check_bounds`), before that document is built.
    """
    if len(text) > limits.MAX_MANIFEST_BYTES:
        raise InvalidInputError(
            f"too large: {len(text)} characters, at most {limits.MAX_MANIFEST_BYTES} read",
            source=source,
        )
    loaded = fast_load_all(text)
    if loaded is None:
        loaded = _load_all(text, source)
    documents: list[Document] = []
    for index, data in enumerate(loaded):
        if data is None:
            continue
        label = f"{source}#{index}" if len(loaded) > 1 else source
        documents.extend(_flatten(data, label))
    return documents


def _load_all(text: str, source: str) -> list[Any]:
    """Every document of ``text`` read by ManifestLoader; its errors as InvalidInputError."""
    loaded: list[Any] = []
    try:
        # The stubs name only PyYAML's own loader classes.
        for data in yaml.load_all(text, Loader=ManifestLoader):  # type: ignore[arg-type]
            loaded.append(data)
    except ManifestBoundError as exc:
        label = f"{source}#{len(loaded)}" if loaded else source
        raise InvalidInputError(str(exc), source=label, obj=exc.obj) from None
    except RecursionError:
        # Only the pure-Python composer recurses; libyaml stops at its own depth bound.
        raise InvalidInputError(
            f"nested deeper than {limits.MAX_NESTING_DEPTH} levels", source=source
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInputError(f"not valid YAML or JSON{where}: {problem}", source=source) from exc
    return loaded


def _flatten(data: Any, label: str) -> Iterator[Document]:
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"a document must be an object with apiVersion and kind, not {type(data).__name__}",
            source=label,
        )
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in data:
        items = data.get("items")
        if not isinstance(items, list):
            raise InvalidInputError(
                "", source=label, errors=[FieldError("items", "must be a list of objects")]
            )
        for position, item in enumerate(items):
            yield from _flatten(item, f"{label} items[{position}]")
        return
    yield Document(label, data)


def _read_text(file: Path) -> str:
    """The file's text, at most one character past ``limits.MAX_MANIFEST_BYTES`` (so that
    :func:`split_documents` refuses it without reading a file of any size whole)."""
    with file.open(encoding="utf-8") as stream:
        return stream.read(limits.MAX_MANIFEST_BYTES + 1)


def read_documents(paths: Sequence[str], stdin: TextIO) -> list[Document]:
    """Every document of every path; directories contribute their manifest files, sorted."""
    documents: list[Document] = []
    for path in paths:
        if path == "-":
            documents.extend(split_documents(stdin.read(limits.MAX_MANIFEST_BYTES + 1), "<stdin>"))
            continue
        target = Path(path)
        if target.is_dir():
            files = sorted(
                p for p in target.rglob("*") if p.is_file() and p.suffix in _MANIFEST_SUFFIXES
            )
        else:
            files = [target]
        for file in files:
            try:
                text = _read_text(file)
            except OSError as exc:
                raise InvalidInputError(f"cannot read: {exc.strerror}", source=str(file)) from exc
            except UnicodeDecodeError as exc:
                raise InvalidInputError("not UTF-8 text", source=str(file)) from exc
            documents.extend(split_documents(text, str(file)))
    return documents


def load_inventory(documents: Iterable[Document], *, lenient: bool = False) -> Inventory:
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
    """
    inventory = Inventory()
    seen: dict[tuple[str, str], str] = {}
    for document in documents:
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
        errors = validate(obj)
        errors.extend(_selector_errors(obj))
        strict = strict_errors(obj) + gpu_config_errors(obj)
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
    _add_extended_resource_claims(inventory)
    return inventory


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
