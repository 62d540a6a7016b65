"""Static checks of a parsed selector: name resolution, types, worst-case cost.

What it reports (each a compile error, as upstream's checker does):

- ``undeclared reference to 'x' (in container '')`` for an unknown variable or
  function; ``undefined field 'x'`` for an unknown field of ``device``;
- ``found no matching overload for 'f' applied to '(types)'`` when the argument
  types are known and fit no overload (``device.driver == 1``,
  ``device.capacity['d'].memory > 40``);
- invalid regular expressions given as literals;
- a range that is not a list or map in a macro.

It also annotates the tree for the compiler (the type of each node, what each
identifier refers to, the function each call resolves to, the variable slots of
macros), and estimates the worst-case cost with the size hints of
:mod:`dra_driver.cel.cost`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dra_driver.cel import ast, cost, types
from dra_driver.cel.cost import SCALAR, UNKNOWN, Shape
from dra_driver.cel.library import Function, Registry
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

FIRST_SLOT = 2
"""Frame slots 0 and 1 hold the cost and the device; macro variables follow."""

_REGEX_FUNCTIONS = frozenset({"matches", "find", "findAll"})
_MAP_KEY_TYPES = frozenset({"int", "uint", "bool", "string", "dyn"})


@dataclass(frozen=True, slots=True)
class Binding:
    """A variable in scope: its frame slot, static type and shape."""

    slot: int
    type: CelType
    shape: Shape
    holds_errors: bool = False
    """A ``cel.bind`` variable: its slot may hold the error its value raised, which reading
    the variable raises (CEL errors are values: an unused failed binding is harmless)."""


@dataclass(slots=True)
class CheckResult:
    """The checker's annotations, keyed by node id."""

    types: dict[int, CelType] = field(default_factory=dict)
    bindings: dict[int, Binding] = field(default_factory=dict)
    """Identifier node -> the macro variable it reads (absent: ``device`` or a type name)."""
    functions: dict[int, Function] = field(default_factory=dict)
    slots: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    """Comprehension node -> frame slots of its one or two variables."""
    errors: list[tuple[int, str]] = field(default_factory=list)
    cost: int = 0
    slot_count: int = FIRST_SLOT


@dataclass(frozen=True, slots=True)
class _Info:
    type: CelType
    cost: int
    shape: Shape


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
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.result = CheckResult()
        self.scopes: list[dict[str, Binding]] = []

    def error(self, node: ast.Expr, message: str) -> None:
        self.result.errors.append((node.offset, message))

    def record(self, node: ast.Expr, info: _Info) -> _Info:
        self.result.types[node.id] = info.type
        return info

    def visit(self, node: ast.Expr) -> _Info:
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
            info = self.comprehension(node)
        else:  # pragma: no cover - the parser builds no other node
            raise TypeError(f"unexpected node {node!r}")
        return self.record(node, info)

    # -- leaves -----------------------------------------------------------------------------

    def literal(self, node: ast.Literal) -> _Info:
        t = _literal_type(node.value)
        size = len(node.value) if isinstance(node.value, str | bytes) else 1
        return _Info(t, 0, Shape(size))

    def lookup(self, name: str) -> Binding | None:
        for scope in reversed(self.scopes):
            binding = scope.get(name)
            if binding is not None:
                return binding
        return None

    def ident(self, node: ast.Ident) -> _Info:
        binding = self.lookup(node.name)
        if binding is not None:
            self.result.bindings[node.id] = binding
            return _Info(binding.type, 1, binding.shape)
        if node.name == "device":
            return _Info(DEVICE, 1, Shape(len(types.DEVICE_FIELDS)))
        if node.name in types.TYPE_NAMES:
            return _Info(TYPE, 1, SCALAR)
        self.error(node, f"undeclared reference to '{node.name}' (in container '')")
        return _Info(DYN, 1, UNKNOWN)

    # -- selection and indexing -------------------------------------------------------------

    def select(self, node: ast.Select) -> _Info:
        operand = self.visit(node.operand)
        t = operand.type
        total = cost.add(operand.cost, 1)
        if node.test_only:
            if t.name not in ("map", "dyn", DEVICE.name):
                self.error(node, f"type '{t}' does not support field selection")
            return _Info(BOOL, total, SCALAR)
        if t.name == "optional_type":
            inner = self.field_type(node, t.params[0], operand.shape)
            return _Info(types.optional_of(inner.type), total, inner.shape)
        inner = self.field_type(node, t, operand.shape)
        if node.optional:
            return _Info(types.optional_of(inner.type), total, inner.shape)
        return _Info(inner.type, total, inner.shape)

    def field_type(self, node: ast.Select, t: CelType, shape: Shape) -> _Info:
        if t == DEVICE:
            field_type = types.DEVICE_FIELDS.get(node.field)
            if field_type is None:
                self.error(node, f"undefined field '{node.field}'")
                return _Info(DYN, 0, UNKNOWN)
            return _Info(field_type, 0, cost.DEVICE_SHAPES[node.field])
        if t.name == "map":
            return _Info(t.params[1], 0, shape.element)
        if types.is_dyn(t):
            return _Info(DYN, 0, shape.element)
        self.error(node, f"type '{t}' does not support field selection")
        return _Info(DYN, 0, UNKNOWN)

    def index(self, node: ast.Index) -> _Info:
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
        return _Info(result, total, operand.shape.element)

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

    def call(self, node: ast.Call) -> _Info:
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
            return _Info(DYN, args_cost, UNKNOWN)
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
            return _Info(DYN, args_cost, UNKNOWN)
        if node.function in _REGEX_FUNCTIONS:
            self.check_pattern(node, operands[1])
        result = types.join(results)
        if function.estimate is not None:
            call_cost, shape = function.estimate([info.shape for info in infos])
        else:
            call_cost, shape = 1, _default_shape(result)
        return _Info(result, cost.add(args_cost, call_cost), shape)

    def resolve_namespace(self, node: ast.Call) -> None:
        """``sets.contains(a, b)`` parses as a member call on ``sets``; make it global."""
        parts: list[str] = []
        target: ast.Expr | None = node.target
        while isinstance(target, ast.Select) and not (target.optional or target.test_only):
            parts.append(target.field)
            target = target.operand
        if not isinstance(target, ast.Ident) or self.lookup(target.name) is not None:
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

    def logical(self, node: ast.Call) -> _Info:
        left, right = (self.visit(arg) for arg in node.args)
        if left.type not in (BOOL, DYN) or right.type not in (BOOL, DYN):
            self.no_overload(node, node.function, [left.type, right.type])
        return _Info(BOOL, cost.add(left.cost, right.cost), SCALAR)

    def conditional(self, node: ast.Call) -> _Info:
        condition, if_true, if_false = (self.visit(arg) for arg in node.args)
        if condition.type not in (BOOL, DYN):
            self.no_overload(node, "_?_:_", [condition.type, if_true.type, if_false.type])
        return _Info(
            types.join([if_true.type, if_false.type]),
            cost.add(condition.cost, max(if_true.cost, if_false.cost)),
            cost.join([if_true.shape, if_false.shape]),
        )

    # -- literals of lists and maps -------------------------------------------------------------

    def list_expr(self, node: ast.ListExpr) -> _Info:
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
        return _Info(types.list_of(types.join(element_types)), total, shape)

    def unwrap_optional(self, node: ast.Expr, t: CelType) -> CelType:
        if t.name == "optional_type":
            return t.params[0]
        if not types.is_dyn(t):
            self.error(node, f"expected type 'optional_type' but found '{t}'")
        return DYN

    def map_expr(self, node: ast.MapExpr) -> _Info:
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
        return _Info(types.map_of(types.join(key_types), types.join(value_types)), total, shape)

    # -- macros ---------------------------------------------------------------------------------

    def bind(self, name: str, t: CelType, shape: Shape, holds_errors: bool = False) -> Binding:
        binding = Binding(self.result.slot_count, t, shape, holds_errors)
        self.result.slot_count += 1
        self.scopes[-1][name] = binding
        return binding

    def comprehension(self, node: ast.Comprehension) -> _Info:
        target = self.visit(node.target)
        self.scopes.append({})
        try:
            if node.macro == "bind":
                return self.bind_macro(node, target)
            if node.macro in ("optMap", "optFlatMap"):
                return self.optional_macro(node, target)
            return self.range_macro(node, target)
        finally:
            self.scopes.pop()

    def bind_macro(self, node: ast.Comprehension, init: _Info) -> _Info:
        binding = self.bind(node.var, init.type, init.shape, holds_errors=True)
        self.result.slots[node.id] = (binding.slot, None)
        body = self.visit(node.args[0])
        return _Info(body.type, cost.add(init.cost, body.cost), body.shape)

    def optional_macro(self, node: ast.Comprehension, target: _Info) -> _Info:
        t = target.type
        if t.name == "optional_type":
            inner = t.params[0]
        else:
            if not types.is_dyn(t):
                self.error(node, f"{node.macro}() needs an optional value, not '{t}'")
            inner = DYN
        binding = self.bind(node.var, inner, target.shape)
        self.result.slots[node.id] = (binding.slot, None)
        body = self.visit(node.args[0])
        result = body.type
        if node.macro == "optMap":
            result = types.optional_of(result)
        elif result.name != "optional_type" and not types.is_dyn(result):
            self.error(node, f"optFlatMap() needs an optional result, not '{result}'")
        return _Info(result, cost.add(target.cost, body.cost, 1), body.shape)

    def range_macro(self, node: ast.Comprehension, target: _Info) -> _Info:
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
            self.error(
                node.target,
                f"expression of type '{t}' cannot be range of a comprehension "
                "(must be list, map, or dynamic)",
            )
            first = second = key_type = DYN
            first_shape, second_shape = UNKNOWN, UNKNOWN
        var = self.bind(node.var, first, first_shape)
        var2 = self.bind(node.var2, second, second_shape) if node.var2 else None
        self.result.slots[node.id] = (var.slot, var2.slot if var2 else None)
        bodies = [self.visit(arg) for arg in node.args]
        macro = node.macro
        predicate_count = {"all": 1, "exists": 1, "exists_one": 1, "filter": 1}.get(macro, 0)
        if macro in ("map", "transformList", "transformMap") and len(node.args) == 2:
            predicate_count = 1  # the filter form
        for arg, body in zip(node.args[:predicate_count], bodies, strict=False):
            if body.type not in (BOOL, DYN):
                self.error(arg, f"{macro}() predicate must be bool, not '{body.type}'")
        iterations = shape.max_size
        per_iteration = cost.add(2, *(body.cost for body in bodies))
        total = cost.add(target.cost, cost.multiply(iterations, per_iteration))
        if macro in ("all", "exists", "exists_one"):
            return _Info(BOOL, total, SCALAR)
        if macro == "filter":
            element = first if not node.var2 else second
            return _Info(types.list_of(element), total, Shape(shape.size, elem=first_shape))
        transform = bodies[-1]
        if macro == "transformMap":
            result_shape = Shape(shape.size, key=first_shape, elem=transform.shape)
            return _Info(types.map_of(key_type, transform.type), total, result_shape)
        return _Info(types.list_of(transform.type), total, Shape(shape.size, elem=transform.shape))
