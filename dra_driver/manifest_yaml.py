"""YAML as kubectl reads it, bounded as the API server reads it: the loader of
:mod:`dra_driver.manifest_read` (libyaml's parser where available, our resolver and
constructor) and the size, depth and alias checks run before a document is built.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from itertools import chain
from typing import Any, ClassVar, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from api import limits
from api.names import describe_raw

__all__ = ["ManifestBoundError", "ManifestLoader", "check_bounds", "plain_scalar", "plain_tag"]


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
    - Each document's node graph is measured with the bounds of :func:`check_bounds`, each
      node once however many aliases repeat it: an alias bomb costs the size of its text,
      not of its expansion.
    - Speed: a scalar's tag is found with one dict lookup and the regexes of its first
      character, and a document of plain mappings, sequences and scalars is measured and
      built in one walk (:func:`_build_plain`), which stops at the first bound passed;
      anything else (a bound passed, merge keys, a key that is not a string, a key given
      twice, a tag such as ``!!timestamp`` or ``!custom``) is measured by
      :func:`check_bounds` before PyYAML's constructor builds it, so the result and the
      errors are the same.
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

    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
        """Resolver.resolve for a loader without path resolvers or wildcard implicit resolvers
        (this one has neither), called by the composer for every node. A plain scalar's tag
        depends on its text only: remembered for the texts seen (names, types and numbers
        repeat from device to device), up to a bound."""
        if kind is _SCALAR_NODE:
            return plain_tag(value) if implicit[0] else _STR
        return _SEQUENCE if kind is yaml.SequenceNode else _MAPPING

    # No path resolvers either: nothing to track as the composer enters and leaves each node.
    def descend_resolver(self, current_node: yaml.Node | None, current_index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def construct_document(self, node: yaml.Node) -> Any:
        try:
            return _build_plain(node, self)
        except _NotPlainError:
            check_bounds(node)
            return super().construct_document(node)  # type: ignore[misc]


_SCALAR_NODE = yaml.ScalarNode
_PLAIN_TAGS: dict[str, str] = {}
"""Plain scalar text to its tag, as ManifestLoader's implicit resolvers give it."""
_PLAIN_TAGS_BOUND = 1 << 16
_STR = "tag:yaml.org,2002:str"
_SEQUENCE = "tag:yaml.org,2002:seq"
_MAPPING = "tag:yaml.org,2002:map"
#: Scalar tags built by the constructor's own function (its booleans include y/n).
_PLAIN_SCALARS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float"))


def plain_tag(value: str) -> str:
    """The tag ManifestLoader gives a plain (unquoted) scalar of this text: its implicit
    resolvers tried in order, the first that matches wins, ``str`` when none does."""
    tag = _PLAIN_TAGS.get(value)
    if tag is None:
        tag = _STR
        for candidate, regexp in ManifestLoader.yaml_implicit_resolvers.get(value[:1], ()):
            if regexp.match(value):
                tag = str(candidate)
                break
        if len(_PLAIN_TAGS) < _PLAIN_TAGS_BOUND:
            _PLAIN_TAGS[value] = tag
    return tag


def plain_scalar(value: str) -> Any:
    """What ManifestLoader makes of ``value`` written as a plain scalar (a mapping's value);
    raises yaml.YAMLError (or ValueError from a constructor) where it cannot."""
    # Our safe loader; the stubs name only PyYAML's own loader classes.
    return yaml.load(f"k: {value}", Loader=ManifestLoader)["k"]  # type: ignore[arg-type]


class _NotPlainError(Exception):
    """The document has a node :func:`_build_plain` leaves to PyYAML's constructor."""


def _build_plain(root: yaml.Node, constructor: Any) -> Any:
    """The document as SafeConstructor and :meth:`_ManifestReading.construct_mapping` build
    it, for documents of string-keyed mappings, sequences and null/bool/int/float/str
    scalars within the bounds of :func:`check_bounds`, measured the same way as it builds;
    raises _NotPlainError at anything else or at the first bound passed. An alias gives the
    same object, as in PyYAML, and its measure once."""
    if root.__class__ is yaml.ScalarNode:
        return _PlainBuilder(constructor, 0).scalar(root)
    text = root.end_mark.index - root.start_mark.index
    builder = _PlainBuilder(constructor, max(limits.MAX_OBJECT_BYTES, 2 * text))
    document, _, _ = builder.build(root, 1)
    items = _list_items(root)
    for item in items if items is not None else [root]:
        measured = builder.built.get(id(item))
        if (measured[1] if measured else len(item.value)) > limits.MAX_OBJECT_BYTES:
            raise _NotPlainError
    return document


class _PlainBuilder:
    """One document's walk (a class, not a closure that calls itself: such a closure is a
    reference cycle that would keep every object built alive until the collector runs).

    Each collection node is measured as :func:`check_bounds` measures it (its size as
    compact JSON once aliases are expanded, its height) and built once: ``built`` maps it
    to (object, size, height); ``open`` holds the nodes being built, so an alias to one of
    them (a recursive alias) stops the walk."""

    def __init__(self, constructor: Any, document_limit: int) -> None:
        self.constructor = constructor
        self.constructors = constructor.yaml_constructors
        self.document_limit = document_limit
        self.built: dict[int, tuple[Any, int, int]] = {}
        self.open: set[int] = set()

    def scalar(self, node: yaml.Node) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag not in _PLAIN_SCALARS:
            raise _NotPlainError
        return self.constructors[tag](self.constructor, node)

    def build(self, node: yaml.Node, depth: int) -> tuple[Any, int, int]:
        """A collection node's (object, size, height), at ``depth`` (the root is 1)."""
        key = id(node)
        known = self.built.get(key)
        if known is not None:
            if depth + known[2] > limits.MAX_NESTING_DEPTH:
                raise _NotPlainError
            return known
        if key in self.open or depth >= limits.MAX_NESTING_DEPTH:
            raise _NotPlainError
        self.open.add(key)
        scalar_node, value = yaml.ScalarNode, node.value
        out: Any
        height = 1
        if node.__class__ is yaml.SequenceNode:
            if node.tag != _SEQUENCE:
                raise _NotPlainError
            out = []
            size = 2 + len(value)
            for item in value:
                if item.__class__ is scalar_node:
                    out.append(self.scalar(item))
                    size += len(item.value) + 2
                else:
                    built, part_size, part_height = self.build(item, depth + 1)
                    out.append(built)
                    size += part_size
                    height = max(height, part_height + 1)
        else:
            if node.tag != _MAPPING:
                raise _NotPlainError
            out = {}
            size = 2 + 2 * len(value)
            for key_node, value_node in node.value:
                name = key_node.value
                if key_node.__class__ is not scalar_node or key_node.tag != _STR or name in out:
                    raise _NotPlainError
                size += len(name) + 2
                if value_node.__class__ is scalar_node:
                    out[name] = self.scalar(value_node)
                    size += len(value_node.value) + 2
                else:
                    built, part_size, part_height = self.build(value_node, depth + 1)
                    out[name] = built
                    size += part_size
                    height = max(height, part_height + 1)
        self.open.discard(key)
        if size > self.document_limit:
            raise _NotPlainError
        result = self.built[key] = (out, size, height)
        return result


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

    class ManifestLoader(_ManifestReading, CParser, SafeConstructor, Resolver):
        """libyaml's parser and composer (C); our bounds, constructor and resolver."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml

    class ManifestLoader(_ManifestReading, yaml.SafeLoader):  # type: ignore[no-redef]
        """PyYAML's own parser; a composer this deep raises RecursionError, caught below."""


ManifestLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if not tag.endswith((":int", ":float", ":bool"))
    ]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}
# go-yaml v2's booleans (kubectl's YAML to JSON conversion): PyYAML's, and y/Y/n/N.
ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(
        r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE"
        r"|on|On|ON|off|Off|OFF)$"
    ),
    list("yYnNtTfFoO"),
)
# PyYAML's own int and float patterns, less their base-60 alternatives.
ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
ManifestLoader.add_implicit_resolver(
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
    return describe_raw(raw) if "kind" in raw else ""


def check_bounds(root: yaml.Node) -> None:
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
        # The object is named below: measure refers to itself (a cycle until the collector
        # runs), and through fail it would hold the document's whole node graph.
        raise ManifestBoundError(f"{message} (line {node.start_mark.line + 1})")

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
    try:
        measure(root, 1)
    except ManifestBoundError as exc:
        exc.obj = _node_object(root)
        raise
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
