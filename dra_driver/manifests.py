"""Reading manifests: multi-document YAML, JSON, ``kind: List``, into typed, validated objects.

The offline tools (``dra-driver allocate`` / ``explain``) take the same files an
admin would ``kubectl apply``. Everything the API server would reject is an
:class:`~api.errors.InvalidInputError` naming the file, the object and the
field; kinds the tools do not use are skipped with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TextIO

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from api import limits
from api.errors import FieldError, InvalidInputError
from api.gpu_config import decode_gpu_config
from api.resource_v1 import (
    DeviceClass,
    K8sModel,
    Node,
    OpaqueDeviceConfiguration,
    ResourceClaim,
    ResourceClaimTemplate,
    ResourceSlice,
    UnknownKindError,
    describe,
    parse_object,
    strict_errors,
)
from api.validation import validate
from dra_driver.cel import compile_selector
from dra_driver.slices import DEFAULT_DRIVER_NAME

_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestBoundError(yaml.YAMLError):
    """A document past a bound of :mod:`api.limits` (size once aliases are expanded, depth,
    a recursive alias), found before anything of it is built. ``obj`` names the object
    (``claim default/c``) when its kind and name could be read from the nodes."""

    def __init__(self, message: str, obj: str = "") -> None:
        super().__init__(message)
        self.obj = obj


class _ManifestReading:
    """YAML as kubectl reads it, bounded as the API server reads it.

    - No YAML 1.1 base-60 numbers: PyYAML would read an unquoted ``pciBusID:
      0000:3b:00.0`` or ``12:30`` as a sexagesimal number; Kubernetes' YAML decoder keeps
      them strings.
    - The YAML 1.1 booleans ``y``/``n`` too (PyYAML reads only ``yes``/``no``/``on``/
      ``off``): kubectl's YAML to JSON conversion makes them ``true``/``false``, so a string
      field given an unquoted ``n`` is an error there and here.
    - Each document's node graph is measured before a Python object is built from it (see
      :func:`_check_bounds`): an alias bomb costs the size of its text, not of its expansion.
    """

    bool_values: ClassVar[dict[str, bool]] = {**SafeConstructor.bool_values, "y": True, "n": False}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """SafeConstructor's, as kubectl reads a mapping: each key becomes a JSON string
        (``on:`` and ``y:`` are the boolean true to YAML 1.1, so the key "true"; ``1:`` the
        key "1"), converted before insertion so that 1 and true, equal in Python, stay two
        keys; and a key given twice is an error ("mapping key ... already defined"), not
        the last one silently winning. Keys merged in with ``<<`` may be overridden."""
        own = {id(key_node) for key_node, _ in node.value}
        self.flatten_mapping(node)  # type: ignore[attr-defined]  # merge keys (<<)
        mapping: dict[Any, Any] = {}
        lines: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[attr-defined]
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found unhashable key",
                    key_node.start_mark,
                )
            if key.__class__ is not str:
                key = _json_key(key)
            if id(key_node) in own:
                if key in lines:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f'mapping key "{key}" already defined at line {lines[key]}',
                        key_node.start_mark,
                    )
                lines[key] = key_node.start_mark.line + 1
            mapping[key] = self.construct_object(value_node, deep=deep)  # type: ignore[attr-defined]
        return mapping

    def construct_document(self, node: yaml.Node) -> Any:
        _check_bounds(node)
        return super().construct_document(node)  # type: ignore[misc]


def _json_key(key: object) -> object:
    """A mapping key as sigs.k8s.io/yaml writes it in JSON; other keys stay (and fail)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float):
        return repr(key) if isinstance(key, float) else str(key)
    if key is None:
        return "null"
    return key


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _ManifestLoader(_ManifestReading, CParser, SafeConstructor, Resolver):
        """libyaml's parser and composer (C); our bounds, constructor and resolver."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class _ManifestLoader(_ManifestReading, yaml.SafeLoader):  # type: ignore[no-redef]
        """PyYAML's own parser; a composer this deep raises RecursionError, caught below."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if not tag.endswith((":int", ":float", ":bool"))
    ]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
# go-yaml v2's booleans (kubectl's YAML to JSON conversion): PyYAML's, and y/Y/n/N.
_ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(
        r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE"
        r"|on|On|ON|off|Off|OFF)$"
    ),
    list("yYnNtTfFoO"),
)
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


def _list_items(root: yaml.Node) -> list[yaml.Node] | None:
    """The ``items`` of a ``kind: ...List`` document: each is one object to the API server."""
    if not isinstance(root, yaml.MappingNode):
        return None
    fields = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    kind, items = fields.get("kind"), fields.get("items")
    if (
        isinstance(kind, yaml.ScalarNode)
        and str(kind.value).endswith("List")
        and isinstance(items, yaml.SequenceNode)
    ):
        return list(items.value)
    return None


def _node_object(node: yaml.Node) -> str:
    """The object a node holds, named from its ``kind`` and ``metadata`` scalars, or ""."""
    if not isinstance(node, yaml.MappingNode):
        return ""
    fields = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    meta = fields.get("metadata")
    raw: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "kind" and isinstance(value, yaml.ScalarNode):
            raw["kind"] = value.value
    if isinstance(meta, yaml.MappingNode):
        raw["metadata"] = {
            k.value: v.value
            for k, v in meta.value
            if isinstance(k, yaml.ScalarNode)
            and isinstance(v, yaml.ScalarNode)
            and k.value in ("name", "namespace")
            and len(v.value) <= limits.DNS1123_SUBDOMAIN_MAX_LENGTH
        }
    return describe(raw) if "kind" in raw else ""


def _check_bounds(root: yaml.Node) -> None:
    """Raise ManifestBoundError for a document the API server would refuse to read.

    Gives each collection node its nesting height and its size as compact JSON once every
    alias is expanded, memoised per node, so a node that aliases repeat is measured once
    (scalars are counted inline). Bounds: the object (the document, or each item of a List)
    at most ``limits.MAX_OBJECT_BYTES`` expanded; the whole document at most that or twice
    its own text; ``limits.MAX_NESTING_DEPTH`` levels; no alias inside the node it names.
    The walk recurses at most ``MAX_NESTING_DEPTH`` deep, well within Python's limit.
    """
    text = root.end_mark.index - root.start_mark.index
    document_limit = max(limits.MAX_OBJECT_BYTES, 2 * text)
    measured: dict[int, tuple[int, int]] = {}
    """id(collection node) -> (size, height)."""
    open_nodes: set[int] = set()
    scalar = yaml.ScalarNode

    def fail(message: str, node: yaml.Node) -> NoReturn:
        raise ManifestBoundError(f"{message} (line {node.start_mark.line + 1})", _node_object(root))

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        known = measured.get(key)
        if known is None:
            if key in open_nodes:
                fail("an alias refers to a node that contains it: no JSON form", node)
            if depth >= limits.MAX_NESTING_DEPTH:
                fail(f"nested deeper than {limits.MAX_NESTING_DEPTH} levels", node)
            open_nodes.add(key)
            value = node.value
            mapping = node.__class__ is not yaml.SequenceNode
            parts = chain.from_iterable(value) if mapping else value
            # Brackets, and a separator per item (comma, or colon and comma per pair).
            size, height = 2 + len(value) * (2 if mapping else 1), 1
            for part in parts:
                if part.__class__ is scalar:
                    size += len(part.value) + 2
                else:
                    part_size, part_height = measure(part, depth + 1)
                    size += part_size
                    height = max(height, part_height + 1)
            open_nodes.discard(key)
            if size > document_limit:
                fail(
                    f"too large once aliases are expanded: over {document_limit} bytes of "
                    f"JSON from {text} bytes of text; the API server takes at most "
                    f"{limits.MAX_OBJECT_BYTES} bytes per object",
                    node,
                )
            known = measured[key] = (size, height)
        elif depth + known[1] > limits.MAX_NESTING_DEPTH:
            fail(f"nested deeper than {limits.MAX_NESTING_DEPTH} levels", node)
        return known

    if isinstance(root, scalar):
        return
    measure(root, 1)
    items = _list_items(root)
    for position, item in enumerate(items if items is not None else [root]):
        size = measured[id(item)][0] if not isinstance(item, scalar) else len(item.value)
        if size > limits.MAX_OBJECT_BYTES:
            where = f"items[{position}] " if items is not None else ""
            raise ManifestBoundError(
                f"{where}too large: {size} bytes as JSON (aliases expanded); the "
                f"API server takes at most {limits.MAX_OBJECT_BYTES} bytes per object",
                _node_object(item),
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
    the text does not parse, a document is not an object, or a document is past a bound
    the API server's decoder sets (size with aliases expanded, nesting depth; see
    :func:`_check_bounds`), before that document is built.
    """
    if len(text) > limits.MAX_MANIFEST_BYTES:
        raise InvalidInputError(
            f"too large: {len(text)} characters, at most {limits.MAX_MANIFEST_BYTES} read",
            source=source,
        )
    loaded: list[Any] = []
    try:
        # The stubs name only PyYAML's own loader classes.
        for data in yaml.load_all(text, Loader=_ManifestLoader):  # type: ignore[arg-type]
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
    API server serves but the tools do not read (a Pod, a ConfigMap) are skipped with a
    warning.

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
        strict = strict_errors(obj) + _gpu_config_errors(obj)
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
        elif isinstance(obj, ResourceClaim):
            inventory.claims.append(obj)
        elif isinstance(obj, ResourceClaimTemplate):
            inventory.templates.append(obj)
        else:
            inventory.nodes.append(obj)
    return inventory


def _opaque_configs(obj: K8sModel) -> list[tuple[str, OpaqueDeviceConfiguration]]:
    """Every opaque config of a class or claim (spec and allocation), with its path."""
    found: list[tuple[str, OpaqueDeviceConfiguration | None]] = []
    if isinstance(obj, DeviceClass):
        found += [
            (f"spec.config[{i}].opaque", c.opaque) for i, c in enumerate(obj.spec.config or [])
        ]
    elif isinstance(obj, ResourceClaim | ResourceClaimTemplate):
        devices = obj.spec.devices if isinstance(obj, ResourceClaim) else obj.spec.spec.devices
        prefix = "spec.devices" if isinstance(obj, ResourceClaim) else "spec.spec.devices"
        configs = (devices.config if devices else None) or []
        found += [(f"{prefix}.config[{i}].opaque", c.opaque) for i, c in enumerate(configs)]
        allocation = (
            obj.status.allocation if isinstance(obj, ResourceClaim) and obj.status else None
        )
        if allocation is not None and allocation.devices is not None:
            found += [
                (f"status.allocation.devices.config[{i}].opaque", c.opaque)
                for i, c in enumerate(allocation.devices.config or [])
            ]
    return [(path, opaque) for path, opaque in found if opaque is not None]


def _gpu_config_errors(obj: K8sModel) -> list[FieldError]:
    """This driver's opaque configs decoded as GpuConfig, as prepare would decode them."""
    errors: list[FieldError] = []
    for path, opaque in _opaque_configs(obj):
        if opaque.driver != DEFAULT_DRIVER_NAME:
            continue
        try:
            decode_gpu_config(opaque.parameters)
        except InvalidInputError as exc:
            where = f"{path}.parameters"
            why = "the driver would refuse it at prepare"
            if not exc.errors:
                errors.append(FieldError(where, f"{exc.detail} ({why})"))
            errors.extend(
                FieldError(f"{where}.{e.path}", f"{e.message} ({why})") for e in exc.errors
            )
    return errors


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
