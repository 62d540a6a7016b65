"""The syntax tree of a CEL expression, as the parser builds it.

Operators are calls with CEL's internal function names (``_&&_``, ``_==_``,
``_[_]`` is an :class:`Index`, ``@in``...), so that the checker resolves
operators and library functions the same way. Macros (``all``, ``exists``,
``map``, ``cel.bind``...) are kept as :class:`Comprehension` nodes instead of
being expanded into CEL's generic comprehension, so that the compiler can emit a
dedicated loop for each.

Every node carries ``offset`` (index of its first character in the source, for
error messages) and ``id`` (unique within one tree, a key for the checker's
annotations).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False, kw_only=True)
class Expr:
    """Base of all nodes."""

    offset: int
    id: int


@dataclass(slots=True, eq=False, kw_only=True)
class Literal(Expr):
    """A constant: int, UInt, float, str, bytes, bool or None (CEL ``null``)."""

    value: object


@dataclass(slots=True, eq=False, kw_only=True)
class Ident(Expr):
    """A name: ``device``, a macro's variable, a type name such as ``int``."""

    name: str


@dataclass(slots=True, eq=False, kw_only=True)
class Select(Expr):
    """``operand.field``; ``has(operand.field)`` when ``test_only``; ``operand.?field`` when
    ``optional``."""

    operand: Expr
    field: str
    test_only: bool = False
    optional: bool = False


@dataclass(slots=True, eq=False, kw_only=True)
class Index(Expr):
    """``operand[index]``, or ``operand[?index]`` when ``optional``."""

    operand: Expr
    index: Expr
    optional: bool = False


@dataclass(slots=True, eq=False, kw_only=True)
class Call(Expr):
    """A global call ``f(args)`` (``target`` None) or a member call ``target.f(args)``.

    The checker rewrites namespaced calls such as ``sets.contains(a, b)`` into
    global calls named ``sets.contains``.
    """

    function: str
    args: list[Expr]
    target: Expr | None = None


@dataclass(slots=True, eq=False, kw_only=True)
class ListExpr(Expr):
    """``[a, ?b]``: elements at ``optional_indices`` are optionals, added only when set."""

    elements: list[Expr]
    optional_indices: frozenset[int] = field(default_factory=frozenset)


@dataclass(slots=True, eq=False, kw_only=True)
class MapEntry:
    """One ``key: value`` (``?key: value`` when ``optional``) of a map literal."""

    key: Expr
    value: Expr
    optional: bool = False


@dataclass(slots=True, eq=False, kw_only=True)
class MapExpr(Expr):
    """``{k: v, ...}``."""

    entries: list[MapEntry]


@dataclass(slots=True, eq=False, kw_only=True)
class Comprehension(Expr):
    """A macro over a range.

    ``macro`` is one of ``all exists exists_one map filter transformList
    transformMap bind optMap optFlatMap``. ``target`` is the range (the bound
    value for ``bind``, the optional for ``optMap``). ``var``/``var2`` are the
    bound names (``var2`` for the two-variable forms). ``args`` are, in order:
    the predicate (all, exists, exists_one, filter), the transform (map with two
    arguments), filter then transform (map with three, transformList/Map with a
    filter), or the body (bind, optMap, optFlatMap).
    """

    macro: str
    target: Expr
    var: str
    var2: str | None
    args: list[Expr]


def children(node: Expr) -> list[Expr]:
    """The direct sub-expressions of ``node``, in source order."""
    if isinstance(node, Select):
        return [node.operand]
    if isinstance(node, Index):
        return [node.operand, node.index]
    if isinstance(node, Call):
        return ([node.target] if node.target is not None else []) + list(node.args)
    if isinstance(node, ListExpr):
        return list(node.elements)
    if isinstance(node, MapExpr):
        out: list[Expr] = []
        for entry in node.entries:
            out.extend((entry.key, entry.value))
        return out
    if isinstance(node, Comprehension):
        return [node.target, *node.args]
    return []


def depth(root: Expr) -> int:
    """The nesting depth of the tree (a leaf has depth 1), computed without recursion."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children(node))
    return deepest
