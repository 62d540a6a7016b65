"""Checking macros: their variables' scopes and frame slots, the range, the predicates, the cost.

``cel.bind`` and ``optMap``/``optFlatMap`` bind one variable to a value; the
comprehension macros bind one or two to the elements (or keys and values) of a
list, map or ``dyn`` range and cost their body once per element of the range's
largest size (:mod:`dra_driver.cel.cost`).
"""

from __future__ import annotations

from typing import Protocol

from dra_driver.cel import ast, cost, types
from dra_driver.cel.checker.result import Binding, CheckResult, Info
from dra_driver.cel.cost import SCALAR, UNKNOWN, Shape
from dra_driver.cel.types import BOOL, DYN, INT, CelType


class Scopes:
    """The macro variables in scope, innermost last; each bound variable takes a frame slot."""

    def __init__(self, result: CheckResult) -> None:
        self.result = result
        self.stack: list[dict[str, Binding]] = []

    def lookup(self, name: str) -> Binding | None:
        """The innermost variable named ``name``, if any."""
        for scope in reversed(self.stack):
            binding = scope.get(name)
            if binding is not None:
                return binding
        return None

    def bind(self, name: str, t: CelType, shape: Shape, holds_errors: bool = False) -> Binding:
        """A new variable in the innermost scope, in the next free frame slot."""
        binding = Binding(self.result.slot_count, t, shape, holds_errors)
        self.result.slot_count += 1
        self.stack[-1][name] = binding
        return binding


class Checking(Protocol):
    """What macro checks need of the checker walking the tree."""

    @property
    def result(self) -> CheckResult: ...

    @property
    def scopes(self) -> Scopes: ...

    def visit(self, node: ast.Expr) -> Info: ...

    def error(self, node: ast.Expr, message: str) -> None: ...


def check_comprehension(checker: Checking, node: ast.Comprehension) -> Info:
    """Check a macro: its target outside, its variables and bodies in a scope of their own."""
    target = checker.visit(node.target)
    checker.scopes.stack.append({})
    try:
        if node.macro == "bind":
            return _bind_macro(checker, node, target)
        if node.macro in ("optMap", "optFlatMap"):
            return _optional_macro(checker, node, target)
        return _range_macro(checker, node, target)
    finally:
        checker.scopes.stack.pop()


def _bind_macro(checker: Checking, node: ast.Comprehension, init: Info) -> Info:
    binding = checker.scopes.bind(node.var, init.type, init.shape, holds_errors=True)
    checker.result.slots[node.id] = (binding.slot, None)
    body = checker.visit(node.args[0])
    return Info(body.type, cost.add(init.cost, body.cost), body.shape)


def _optional_macro(checker: Checking, node: ast.Comprehension, target: Info) -> Info:
    t = target.type
    if t.name == "optional_type":
        inner = t.params[0]
    else:
        if not types.is_dyn(t):
            checker.error(node, f"{node.macro}() needs an optional value, not '{t}'")
        inner = DYN
    binding = checker.scopes.bind(node.var, inner, target.shape)
    checker.result.slots[node.id] = (binding.slot, None)
    body = checker.visit(node.args[0])
    result = body.type
    if node.macro == "optMap":
        result = types.optional_of(result)
    elif result.name != "optional_type" and not types.is_dyn(result):
        checker.error(node, f"optFlatMap() needs an optional result, not '{result}'")
    return Info(result, cost.add(target.cost, body.cost, 1), body.shape)


def _range_macro(checker: Checking, node: ast.Comprehension, target: Info) -> Info:
    t = target.type
    shape = target.shape
    if t.name == "list":
        first, second = (INT, t.params[0]) if node.var2 else (t.params[0], DYN)
        first_shape, second_shape = (
            (SCALAR, shape.element) if node.var2 else (shape.element, UNKNOWN)
        )
        key_type = INT
    elif t.name == "map":
        first, second = t.params[0], t.params[1]
        first_shape, second_shape = shape.keys, shape.element
        key_type = t.params[0]
    elif types.is_dyn(t):
        first = second = key_type = DYN
        first_shape = second_shape = shape.element
    else:
        checker.error(
            node.target,
            f"expression of type '{t}' cannot be range of a comprehension "
            "(must be list, map, or dynamic)",
        )
        first = second = key_type = DYN
        first_shape, second_shape = UNKNOWN, UNKNOWN
    var = checker.scopes.bind(node.var, first, first_shape)
    var2 = checker.scopes.bind(node.var2, second, second_shape) if node.var2 else None
    checker.result.slots[node.id] = (var.slot, var2.slot if var2 else None)
    bodies = [checker.visit(arg) for arg in node.args]
    macro = node.macro
    predicate_count = {"all": 1, "exists": 1, "exists_one": 1, "filter": 1}.get(macro, 0)
    if macro in ("map", "transformList", "transformMap") and len(node.args) == 2:
        predicate_count = 1  # the filter form
    for arg, body in zip(node.args[:predicate_count], bodies, strict=False):
        if body.type not in (BOOL, DYN):
            checker.error(arg, f"{macro}() predicate must be bool, not '{body.type}'")
    iterations = shape.max_size
    per_iteration = cost.add(2, *(body.cost for body in bodies))
    total = cost.add(target.cost, cost.multiply(iterations, per_iteration))
    if macro in ("all", "exists", "exists_one"):
        return Info(BOOL, total, SCALAR)
    if macro == "filter":
        element = first if not node.var2 else second
        return Info(types.list_of(element), total, Shape(shape.size, elem=first_shape))
    transform = bodies[-1]
    if macro == "transformMap":
        result_shape = Shape(shape.size, key=first_shape, elem=transform.shape)
        return Info(types.map_of(key_type, transform.type), total, result_shape)
    return Info(types.list_of(transform.type), total, Shape(shape.size, elem=transform.shape))
