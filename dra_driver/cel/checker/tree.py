"""The walk over a parsed tree: names, fields, indexes, calls and literals checked node by node.

Each node's :class:`~.result.Info` (type, cost, shape) is computed from its
children's; macros are checked by :mod:`.macros`, in scopes of their own.
"""

from __future__ import annotations

from dra_driver.cel import ast, cost, types
from dra_driver.cel.checker.macros import Scopes, check_comprehension
from dra_driver.cel.checker.result import CheckResult, Info
from dra_driver.cel.cost import SCALAR, UNKNOWN, Shape
from dra_driver.cel.library import Registry
from dra_driver.cel.library.regex import validate as validate_regex
from dra_driver.cel.runtime import UInt
from dra_driver.cel.types import (
    BOOL,
    BYTES,
    DEVICE,
    DOUBLE,
    DYN,
    INT,
    NULL,
    STRING,
    TYPE,
    UINT,
    CelType,
)

_REGEX_FUNCTIONS = frozenset({"matches", "find", "findAll"})
_MAP_KEY_TYPES = frozenset({"int", "uint", "bool", "string", "dyn"})


def check(root: ast.Expr, registry: Registry) -> CheckResult:
    """Check ``root``; problems are in ``result.errors`` as ``(offset, message)``."""
    checker = _Checker(registry)
    info = checker.visit(root)
    checker.result.cost = info.cost
    return checker.result


def _literal_type(value: object) -> CelType:
    t = type(value)
    if t is bool:
        return BOOL
    if t is UInt:
        return UINT
    if t is int:
        return INT
    if t is float:
        return DOUBLE
    if t is str:
        return STRING
    if t is bytes:
        return BYTES
    return NULL


def _default_shape(t: CelType) -> Shape:
    return SCALAR if t in types.SCALARS else UNKNOWN


class _Checker:
    """One walk over the tree: annotates each node into :attr:`result`, reports problems."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.result = CheckResult()
        self.scopes = Scopes(self.result)

    def error(self, node: ast.Expr, message: str) -> None:
        self.result.errors.append((node.offset, message))

    def record(self, node: ast.Expr, info: Info) -> Info:
        self.result.types[node.id] = info.type
        return info

    def visit(self, node: ast.Expr) -> Info:
        if isinstance(node, ast.Literal):
            info = self.literal(node)
        elif isinstance(node, ast.Ident):
            info = self.ident(node)
        elif isinstance(node, ast.Select):
            info = self.select(node)
        elif isinstance(node, ast.Index):
            info = self.index(node)
        elif isinstance(node, ast.Call):
            info = self.call(node)
        elif isinstance(node, ast.ListExpr):
            info = self.list_expr(node)
        elif isinstance(node, ast.MapExpr):
            info = self.map_expr(node)
        elif isinstance(node, ast.Comprehension):
            info = check_comprehension(self, node)
        else:  # pragma: no cover - the parser builds no other node
            raise TypeError(f"unexpected node {node!r}")
        return self.record(node, info)

    # -- leaves -----------------------------------------------------------------------------

    def literal(self, node: ast.Literal) -> Info:
        t = _literal_type(node.value)
        size = len(node.value) if isinstance(node.value, str | bytes) else 1
        return Info(t, 0, Shape(size))

    def ident(self, node: ast.Ident) -> Info:
        binding = self.scopes.lookup(node.name)
        if binding is not None:
            self.result.bindings[node.id] = binding
            return Info(binding.type, 1, binding.shape)
        if node.name == "device":
            return Info(DEVICE, 1, Shape(len(types.DEVICE_FIELDS)))
        if node.name in types.TYPE_NAMES:
            return Info(TYPE, 1, SCALAR)
        self.error(node, f"undeclared reference to '{node.name}' (in container '')")
        return Info(DYN, 1, UNKNOWN)

    # -- selection and indexing -------------------------------------------------------------

    def select(self, node: ast.Select) -> Info:
        operand = self.visit(node.operand)
        t = operand.type
        total = cost.add(operand.cost, 1)
        if node.test_only:
            if t.name not in ("map", "dyn", DEVICE.name):
                self.error(node, f"type '{t}' does not support field selection")
            return Info(BOOL, total, SCALAR)
        if t.name == "optional_type":
            inner = self.field_type(node, t.params[0], operand.shape)
            return Info(types.optional_of(inner.type), total, inner.shape)
        inner = self.field_type(node, t, operand.shape)
        if node.optional:
            return Info(types.optional_of(inner.type), total, inner.shape)
        return Info(inner.type, total, inner.shape)

    def field_type(self, node: ast.Select, t: CelType, shape: Shape) -> Info:
        if t == DEVICE:
            field_type = types.DEVICE_FIELDS.get(node.field)
            if field_type is None:
                self.error(node, f"undefined field '{node.field}'")
                return Info(DYN, 0, UNKNOWN)
            return Info(field_type, 0, cost.DEVICE_SHAPES[node.field])
        if t.name == "map":
            return Info(t.params[1], 0, shape.element)
        if types.is_dyn(t):
            return Info(DYN, 0, shape.element)
        self.error(node, f"type '{t}' does not support field selection")
        return Info(DYN, 0, UNKNOWN)

    def index(self, node: ast.Index) -> Info:
        operand = self.visit(node.operand)
        key = self.visit(node.index)
        total = cost.add(operand.cost, key.cost, 1)
        t = operand.type
        optional = node.optional
        if t.name == "optional_type":
            t = t.params[0]
            optional = True
        if t.name == "list":
            if key.type not in (INT, UINT, DYN):
                self.no_overload(node, "_[_]", [operand.type, key.type])
            result = t.params[0]
        elif t.name == "map":
            if not types.assignable(t.params[0], key.type, {}):
                self.no_overload(node, "_[_]", [operand.type, key.type])
            result = t.params[1]
        elif types.is_dyn(t):
            result = DYN
        else:
            self.no_overload(node, "_[_]", [operand.type, key.type])
            result = DYN
        if optional:
            result = types.optional_of(result)
        return Info(result, total, operand.shape.element)

    def no_overload(
        self, node: ast.Expr, function: str, arg_types: list[CelType], member: bool = False
    ) -> None:
        if member:
            receiver, *rest = arg_types
            applied = f"{receiver}.({', '.join(str(t) for t in rest)})"
        else:
            applied = f"({', '.join(str(t) for t in arg_types)})"
        self.error(node, f"found no matching overload for '{function}' applied to '{applied}'")

    # -- calls --------------------------------------------------------------------------------

    def call(self, node: ast.Call) -> Info:
        if node.function in ("_&&_", "_||_"):
            return self.logical(node)
        if node.function == "_?_:_":
            return self.conditional(node)
        if node.target is not None:
            self.resolve_namespace(node)
        function = self.registry.get(node.function)
        member = node.target is not None
        operands = ([node.target] if node.target is not None else []) + node.args
        infos = [self.visit(arg) for arg in operands]
        args_cost = cost.add(*(info.cost for info in infos))
        arg_types = [info.type for info in infos]
        if function is None:
            self.error(node, f"undeclared reference to '{node.function}' (in container '')")
            return Info(DYN, args_cost, UNKNOWN)
        self.result.functions[node.id] = function
        results: list[CelType] = []
        arity_fits = False
        for signature in function.signatures:
            if signature.member != member or len(signature.params) != len(arg_types):
                continue
            arity_fits = True
            bindings: dict[str, CelType] = {}
            if all(
                types.assignable(p, a, bindings)
                for p, a in zip(signature.params, arg_types, strict=True)
            ):
                results.append(types.substitute(signature.result, bindings))
        if not results:
            if not arity_fits and not any(s.member == member for s in function.signatures):
                self.error(node, f"undeclared reference to '{node.function}' (in container '')")
            else:
                self.no_overload(node, node.function, arg_types, member)
            return Info(DYN, args_cost, UNKNOWN)
        if node.function in _REGEX_FUNCTIONS:
            self.check_pattern(node, operands[1])
        result = types.join(results)
        if function.estimate is not None:
            call_cost, shape = function.estimate([info.shape for info in infos])
        else:
            call_cost, shape = 1, _default_shape(result)
        return Info(result, cost.add(args_cost, call_cost), shape)

    def resolve_namespace(self, node: ast.Call) -> None:
        """``sets.contains(a, b)`` parses as a member call on ``sets``; make it global."""
        parts: list[str] = []
        target: ast.Expr | None = node.target
        while isinstance(target, ast.Select) and not (target.optional or target.test_only):
            parts.append(target.field)
            target = target.operand
        if not isinstance(target, ast.Ident) or self.scopes.lookup(target.name) is not None:
            return
        if target.name == "device" or target.name in types.TYPE_NAMES:
            return
        # The root is not a variable: the whole dotted name is a function name, known
        # (``optional.of``) or not (reported as an undeclared reference).
        parts.append(target.name)
        node.function = ".".join([*reversed(parts), node.function])
        node.target = None

    def check_pattern(self, node: ast.Call, pattern: ast.Expr) -> None:
        if isinstance(pattern, ast.Literal) and type(pattern.value) is str:
            problem = validate_regex(pattern.value)
            if problem is not None:
                self.error(pattern, problem)

    def logical(self, node: ast.Call) -> Info:
        left, right = (self.visit(arg) for arg in node.args)
        if left.type not in (BOOL, DYN) or right.type not in (BOOL, DYN):
            self.no_overload(node, node.function, [left.type, right.type])
        return Info(BOOL, cost.add(left.cost, right.cost), SCALAR)

    def conditional(self, node: ast.Call) -> Info:
        condition, if_true, if_false = (self.visit(arg) for arg in node.args)
        if condition.type not in (BOOL, DYN):
            self.no_overload(node, "_?_:_", [condition.type, if_true.type, if_false.type])
        return Info(
            types.join([if_true.type, if_false.type]),
            cost.add(condition.cost, max(if_true.cost, if_false.cost)),
            cost.join([if_true.shape, if_false.shape]),
        )

    # -- literals of lists and maps -------------------------------------------------------------

    def list_expr(self, node: ast.ListExpr) -> Info:
        element_types: list[CelType] = []
        shapes: list[Shape] = []
        total = cost.LIST_CREATE
        for position, element in enumerate(node.elements):
            info = self.visit(element)
            total = cost.add(total, info.cost)
            t = info.type
            if position in node.optional_indices:
                t = self.unwrap_optional(element, t)
            element_types.append(t)
            shapes.append(info.shape)
        shape = Shape(len(node.elements), elem=cost.join(shapes))
        return Info(types.list_of(types.join(element_types)), total, shape)

    def unwrap_optional(self, node: ast.Expr, t: CelType) -> CelType:
        if t.name == "optional_type":
            return t.params[0]
        if not types.is_dyn(t):
            self.error(node, f"expected type 'optional_type' but found '{t}'")
        return DYN

    def map_expr(self, node: ast.MapExpr) -> Info:
        key_types: list[CelType] = []
        value_types: list[CelType] = []
        key_shapes: list[Shape] = []
        value_shapes: list[Shape] = []
        total = cost.MAP_CREATE
        for entry in node.entries:
            key = self.visit(entry.key)
            value = self.visit(entry.value)
            total = cost.add(total, key.cost, value.cost)
            if key.type.name not in _MAP_KEY_TYPES:
                self.error(entry.key, f"unsupported map key type: {key.type}")
            value_type = value.type
            if entry.optional:
                value_type = self.unwrap_optional(entry.value, value_type)
            key_types.append(key.type)
            value_types.append(value_type)
            key_shapes.append(key.shape)
            value_shapes.append(value.shape)
        shape = Shape(len(node.entries), key=cost.join(key_shapes), elem=cost.join(value_shapes))
        return Info(types.map_of(types.join(key_types), types.join(value_types)), total, shape)
