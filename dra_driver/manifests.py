"""Reading manifests: multi-document YAML, JSON, ``kind: List``, into typed, validated objects.

The offline tools (``dra-driver allocate`` / ``explain``) take the same files an
admin would ``kubectl apply``. Everything the API server would reject is an
:class:`~api.errors.InvalidInputError` naming the file, the object and the
field; kinds the tools do not use are skipped with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from api.errors import FieldError, InvalidInputError
from api.resource_v1 import (
    DeviceClass,
    K8sModel,
    Node,
    ResourceClaim,
    ResourceClaimTemplate,
    ResourceSlice,
    UnknownKindError,
    describe,
    parse_object,
)
from api.validation import validate
from dra_driver.cel import compile_selector

_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class _ManifestLoader(yaml.SafeLoader):
    """YAML as kubectl reads it: no YAML 1.1 base-60 numbers.

    PyYAML's safe loader would read an unquoted ``pciBusID: 0000:3b:00.0`` or
    ``12:30`` as a sexagesimal number; Kubernetes' YAML decoder keeps them strings.
    """


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if not tag.endswith((":int", ":float"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# PyYAML's own int and float patterns, less their base-60 alternatives.
_ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
        r"|\.[0-9_]+(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


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
    claims: list[ResourceClaim] = field(default_factory=list)
    templates: list[ResourceClaimTemplate] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
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

    def locate(self, error: InvalidInputError) -> InvalidInputError:
        """The error, also naming the file of the object it names."""
        return error.located(source=self.sources.get(error.obj, ""))


def split_documents(text: str, source: str) -> list[Document]:
    """Parse YAML (one or more documents) or JSON; flatten ``kind: List``.

    Empty documents are skipped. Raises InvalidInputError naming ``source`` when
    the text does not parse or a document is not an object.
    """
    try:
        loaded = list(yaml.load_all(text, Loader=_ManifestLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInputError(f"not valid YAML or JSON{where}: {problem}", source=source) from exc
    documents: list[Document] = []
    for index, data in enumerate(loaded):
        if data is None:
            continue
        label = f"{source}#{index}" if len(loaded) > 1 else source
        documents.extend(_flatten(data, label))
    return documents


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


def read_documents(paths: Sequence[str], stdin: TextIO) -> list[Document]:
    """Every document of every path; directories contribute their manifest files, sorted."""
    documents: list[Document] = []
    for path in paths:
        if path == "-":
            documents.extend(split_documents(stdin.read(), "<stdin>"))
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
                text = file.read_text(encoding="utf-8")
            except OSError as exc:
                raise InvalidInputError(f"cannot read: {exc.strerror}", source=str(file)) from exc
            except UnicodeDecodeError as exc:
                raise InvalidInputError("not UTF-8 text", source=str(file)) from exc
            documents.extend(split_documents(text, str(file)))
    return documents


def load_inventory(documents: Iterable[Document]) -> Inventory:
    """Parse and validate every document; skip unknown kinds with a warning.

    Raises InvalidInputError for the first invalid object, a duplicate object or
    a selector that does not compile. (A claim naming a DeviceClass missing from
    the input is the allocator's error: it applies to live clusters too.)
    """
    inventory = Inventory()
    seen: dict[tuple[str, str], str] = {}
    for document in documents:
        try:
            obj = parse_object(document.data)
        except UnknownKindError as exc:
            inventory.warnings.append(f"{document.source}: ignored: {exc.detail}")
            continue
        except InvalidInputError as exc:
            raise exc.located(source=document.source) from exc
        name = describe(obj)
        errors = validate(obj)
        errors.extend(_selector_errors(obj))
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
        elif isinstance(obj, ResourceClaim):
            inventory.claims.append(obj)
        elif isinstance(obj, ResourceClaimTemplate):
            inventory.templates.append(obj)
        else:
            inventory.nodes.append(obj)
    return inventory


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
