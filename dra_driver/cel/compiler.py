"""Compile a checked syntax tree into nested Python closures.

Each node becomes a function of the frame (see :mod:`dra_driver.cel.runtime`),
so evaluation is plain function calls with no tree walking and no generated
source code. Calls whose arguments are all constants are evaluated once here
(``semver('8.0.0')``, ``quantity('40Gi')``) unless that fails, in which case the
error is left to surface at run time, where ``&&``/``||`` may absorb it. Common
shapes get dedicated closures: comparisons with a constant, and lookups in
``device.attributes[<domain>]`` / ``device.capacity[<domain>]``.

Run-time cost: macros charge, per iteration, one unit per node of their loop
body (a nested macro charges its own iterations); library functions charge
by the length of the strings and lists they traverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from dra_driver.cel import ast, types
from dra_driver.cel.checker import CheckResult
from dra_driver.cel.cost import COST_LIMIT
from dra_driver.cel.library import Function
from dra_driver.cel.runtime import (
    EMPTY_MAP,
    OPTIONAL_NONE,
    CelOptional,
    CostLimitExceeded,
    DefaultingMap,
    EvalError,
    Frame,
    TypeValue,
    build_map,
    cel_eq,
    cel_ge,
    cel_gt,
    cel_le,
    cel_lt,
    device_field,
    has_field,
    index,
    index_optional,
    no_such_key,
    no_such_overload,
    range_items,
    range_pairs,
    select,
    select_optional,
)

Fn = Callable[[Frame], Any]

_UNSET: Final = object()
_COMPARISONS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "_<_": cel_lt,
    "_<=_": cel_le,
    "_>_": cel_gt,
    "_>=_": cel_ge,
}


class _Failed:
    """A ``cel.bind`` value that is an error, raised where the variable is read."""

    __slots__ = ("error",)

    def __init__(self, error: EvalError) -> None:
        self.error = error


class _Code:
    """A compiled node: its closure and, for constants, the value."""

    __slots__ = ("fn", "value")

    def __init__(self, fn: Fn, value: Any = _UNSET) -> None:
        self.fn = fn
        self.value = value

    @property
    def constant(self) -> bool:
        return self.value is not _UNSET


def _const(value: Any) -> _Code:
    return _Code(lambda s: value, value)


def compile_tree(root: ast.Expr, checked: CheckResult) -> Fn:
    """The closure computing ``root``'s value from a frame."""
    return _Compiler(checked).compile(root).fn


def _cost_exceeded() -> CostLimitExceeded:
    return CostLimitExceeded("operation cancelled: actual cost limit exceeded")


def _body_size(node: ast.Expr) -> int:
    """Nodes evaluated once per iteration of a loop over ``node`` (nested macros' own loops
    are charged by those macros)."""
    count = 0
    stack = [node]
    while stack:
        current = stack.pop()
        count += 1
        if isinstance(current, ast.Comprehension):
            stack.append(current.target)
        else:
            stack.extend(ast.children(current))
    return count


class _Compiler:
    def __init__(self, checked: CheckResult) -> None:
        self.checked = checked

    def type_of(self, node: ast.Expr) -> types.CelType:
        return self.checked.types.get(node.id, types.DYN)

    def compile(self, node: ast.Expr) -> _Code:
        if isinstance(node, ast.Literal):
            return _const(node.value)
        if isinstance(node, ast.Ident):
            return self.ident(node)
        if isinstance(node, ast.Select):
            return self.select(node)
        if isinstance(node, ast.Index):
            return self.index(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.ListExpr):
            return self.list_expr(node)
        if isinstance(node, ast.MapExpr):
            return self.map_expr(node)
        if isinstance(node, ast.Comprehension):
            return self.comprehension(node)
        raise TypeError(f"unexpected node {node!r}")  # pragma: no cover

    # -- names, fields, indexes ----------------------------------------------------------------

    def ident(self, node: ast.Ident) -> _Code:
        binding = self.checked.bindings.get(node.id)
        if binding is not None:
            slot = binding.slot
            if binding.holds_errors:

                def bound(s: Frame) -> Any:
                    value = s[slot]
                    if type(value) is _Failed:
                        raise value.error
                    return value

                return _Code(bound)
            return _Code(lambda s: s[slot])
        if node.name == "device":
            return _Code(lambda s: s[1])
        return _const(TypeValue(node.name))

    def is_device(self, node: ast.Expr) -> bool:
        """``node`` is the variable ``device`` itself (read from frame slot 1)."""
        return (
            isinstance(node, ast.Ident)
            and node.id not in self.checked.bindings
            and (self.type_of(node) == types.DEVICE)
        )

    def device_map(self, node: ast.Expr) -> str | None:
        """``attributes``/``capacity`` when ``node`` is ``device.attributes``/``.capacity``."""
        if (
            isinstance(node, ast.Select)
            and not node.optional
            and not node.test_only
            and node.field in ("attributes", "capacity")
            and self.is_device(node.operand)
        ):
            return node.field
        return None

    def select(self, node: ast.Select) -> _Code:
        name = node.field
        operand_node = node.operand
        if self.is_device(operand_node) and not node.test_only and not node.optional:
            return self.device_select(name)
        domain_lookup = self.device_map(operand_node)
        if domain_lookup is not None and not node.test_only and not node.optional:
            return self.domain_lookup(domain_lookup, name)
        operand = self.compile(operand_node).fn
        if node.test_only:

            def has(s: Frame) -> bool:
                m = operand(s)
                if type(m) is dict:
                    return name in m
                return has_field(m, name)

            return _Code(has)
        if node.optional or self.type_of(operand_node).name == "optional_type":
            return _Code(lambda s: select_optional(operand(s), name))

        def field(s: Frame) -> Any:
            m = operand(s)
            if type(m) is dict:
                try:
                    return m[name]
                except KeyError:
                    raise no_such_key(name) from None
            return select(m, name)

        return _Code(field)

    def device_select(self, name: str) -> _Code:
        if name == "driver":
            return _Code(lambda s: s[1].driver)
        if name == "allowMultipleAllocations":
            return _Code(lambda s: s[1].allow_multiple_allocations)
        if name == "attributes":
            return _Code(lambda s: DefaultingMap(s[1].attributes))
        if name == "capacity":
            return _Code(lambda s: DefaultingMap(s[1].capacity))
        return _Code(lambda s: device_field(s[1], name))

    def domain_lookup(self, which: str, domain: Any) -> _Code:
        """``device.attributes[domain]``: the domain's map, empty when absent."""
        if type(domain) is not str:
            return _Code(lambda s: EMPTY_MAP)
        if which == "attributes":

            def attributes(s: Frame) -> Any:
                found = s[1].attributes.get(domain)
                return EMPTY_MAP if found is None else found

            return _Code(attributes)

        def capacity(s: Frame) -> Any:
            found = s[1].capacity.get(domain)
            return EMPTY_MAP if found is None else found

        return _Code(capacity)

    def index(self, node: ast.Index) -> _Code:
        key_code = self.compile(node.index)
        optional = node.optional or self.type_of(node.operand).name == "optional_type"
        domain_lookup = self.device_map(node.operand)
        if domain_lookup is not None and key_code.constant and not optional:
            return self.domain_lookup(domain_lookup, key_code.value)
        operand = self.compile(node.operand).fn
        key = key_code.fn
        if optional:
            return _Code(lambda s: index_optional(operand(s), key(s)))
        if key_code.constant and type(key_code.value) is str:
            name = key_code.value

            def lookup(s: Frame) -> Any:
                m = operand(s)
                if type(m) is dict:
                    try:
                        return m[name]
                    except KeyError:
                        raise no_such_key(name) from None
                return index(m, name)

            return _Code(lookup)
        return _Code(lambda s: index(operand(s), key(s)))

    # -- calls -----------------------------------------------------------------------------------

    def call(self, node: ast.Call) -> _Code:
        function = node.function
        if function == "_&&_":
            return self.logical_and(node)
        if function == "_||_":
            return self.logical_or(node)
        if function == "_?_:_":
            return self.conditional(node)
        operand_nodes = ([node.target] if node.target is not None else []) + node.args
        operands = [self.compile(arg) for arg in operand_nodes]
        resolved = self.checked.functions[node.id]
        code = self.specialised(function, operands)
        if code is None:
            if node.target is not None:
                code = self.member_call(resolved, operands)
            else:
                code = self.global_call(resolved, operands)
        if all(op.constant for op in operands):
            return self.fold(code)
        return code

    def fold(self, code: _Code) -> _Code:
        """Evaluate a call of constants now; leave it to run time when it fails."""
        try:
            value = code.fn([0, None])
        except (EvalError, CostLimitExceeded):
            return code
        return _const(value)

    def specialised(self, function: str, operands: list[_Code]) -> _Code | None:
        if function in ("_==_", "_!=_"):
            code = self.equality(operands[0], operands[1])
            if function == "_!=_":
                equal = code.fn
                return _Code(lambda s: not equal(s))
            return code
        comparison = _COMPARISONS.get(function)
        if comparison is not None:
            return self.comparison(function, comparison, operands[0], operands[1])
        if function == "!_":
            operand = operands[0].fn

            def negation(s: Frame) -> bool:
                value = operand(s)
                if value is True:
                    return False
                if value is False:
                    return True
                raise no_such_overload("!_", value)

            return _Code(negation)
        return None

    def equality(self, left: _Code, right: _Code) -> _Code:
        lfn, rfn = left.fn, right.fn
        if right.constant and type(right.value) in (str, int, bool):
            constant = right.value
            expected = type(constant)

            def equals_constant(s: Frame) -> bool:
                value = lfn(s)
                if type(value) is expected:
                    return bool(value == constant)
                return cel_eq(value, constant)

            return _Code(equals_constant)
        if left.constant and type(left.value) in (str, int, bool):
            constant = left.value
            expected = type(constant)

            def constant_equals(s: Frame) -> bool:
                value = rfn(s)
                if type(value) is expected:
                    return bool(constant == value)
                return cel_eq(constant, value)

            return _Code(constant_equals)
        return _Code(lambda s: cel_eq(lfn(s), rfn(s)))

    def comparison(
        self, function: str, generic: Callable[[Any, Any], bool], left: _Code, right: _Code
    ) -> _Code:
        lfn, rfn = left.fn, right.fn
        if right.constant and type(right.value) is int:
            constant = right.value
            if function == "_>=_":

                def at_least(s: Frame) -> bool:
                    value = lfn(s)
                    if type(value) is int:
                        return bool(value >= constant)
                    return generic(value, constant)

                return _Code(at_least)
            if function == "_<_":

                def below(s: Frame) -> bool:
                    value = lfn(s)
                    if type(value) is int:
                        return bool(value < constant)
                    return generic(value, constant)

                return _Code(below)
        return _Code(lambda s: generic(lfn(s), rfn(s)))

    def global_call(self, function: Function, operands: list[_Code]) -> _Code:
        impl = function.global_impl
        if impl is None:  # pragma: no cover - the checker resolved a global overload
            raise TypeError(f"{function.name} has no global implementation")
        fns = [op.fn for op in operands]
        costed = function.costed
        if len(fns) == 0:
            if costed:
                return _Code(impl)
            return _Code(lambda s: impl())
        if len(fns) == 1:
            (a,) = fns
            if costed:
                return _Code(lambda s: impl(s, a(s)))
            return _Code(lambda s: impl(a(s)))
        if len(fns) == 2:
            a, b = fns
            if costed:
                return _Code(lambda s: impl(s, a(s), b(s)))
            return _Code(lambda s: impl(a(s), b(s)))
        if costed:
            return _Code(lambda s: impl(s, *[f(s) for f in fns]))
        return _Code(lambda s: impl(*[f(s) for f in fns]))

    def member_call(self, function: Function, operands: list[_Code]) -> _Code:
        table = function.member_impls
        name = function.name
        costed = function.costed
        receiver, *rest = (op.fn for op in operands)

        def resolve(value: Any, args: Sequence[Any]) -> Callable[..., Any]:
            impl = table.get(type(value)) or function.member_impl(value)
            if impl is None:
                raise no_such_overload(name, value, *args)
            return impl

        if not rest:
            if costed:

                def call0c(s: Frame) -> Any:
                    value = receiver(s)
                    return resolve(value, ())(s, value)

                return _Code(call0c)

            def call0(s: Frame) -> Any:
                value = receiver(s)
                return resolve(value, ())(value)

            return _Code(call0)
        if len(rest) == 1:
            (a,) = rest
            if costed:

                def call1c(s: Frame) -> Any:
                    value = receiver(s)
                    arg = a(s)
                    return resolve(value, (arg,))(s, value, arg)

                return _Code(call1c)

            def call1(s: Frame) -> Any:
                value = receiver(s)
                arg = a(s)
                impl = table.get(type(value))
                if impl is None:
                    impl = resolve(value, (arg,))
                return impl(value, arg)

            return _Code(call1)

        def call_n(s: Frame) -> Any:
            value = receiver(s)
            args = [f(s) for f in rest]
            impl = resolve(value, args)
            return impl(s, value, *args) if costed else impl(value, *args)

        return _Code(call_n)

    def logical_and(self, node: ast.Call) -> _Code:
        left_code, right_code = (self.compile(arg) for arg in node.args)
        left, right = left_code.fn, right_code.fn

        def logical_and(s: Frame) -> bool:
            # CEL's && is commutative over errors: false wins over an error on either side.
            try:
                a = left(s)
            except EvalError as error:
                return _absorb(right, s, error, False)
            if a is False:
                return False
            if a is True:
                b = right(s)
                if b is True or b is False:
                    return b
                raise no_such_overload("_&&_", a, b)
            return _absorb(right, s, no_such_overload("_&&_", a), False)

        return _Code(logical_and)

    def logical_or(self, node: ast.Call) -> _Code:
        left_code, right_code = (self.compile(arg) for arg in node.args)
        left, right = left_code.fn, right_code.fn

        def logical_or(s: Frame) -> bool:
            try:
                a = left(s)
            except EvalError as error:
                return _absorb(right, s, error, True)
            if a is True:
                return True
            if a is False:
                b = right(s)
                if b is True or b is False:
                    return b
                raise no_such_overload("_||_", a, b)
            return _absorb(right, s, no_such_overload("_||_", a), True)

        return _Code(logical_or)

    def conditional(self, node: ast.Call) -> _Code:
        condition, if_true, if_false = (self.compile(arg).fn for arg in node.args)

        def choose(s: Frame) -> Any:
            c = condition(s)
            if c is True:
                return if_true(s)
            if c is False:
                return if_false(s)
            raise no_such_overload("_?_:_", c)

        return _Code(choose)

    # -- literals ---------------------------------------------------------------------

    def list_expr(self, node: ast.ListExpr) -> _Code:
        elements = [self.compile(e) for e in node.elements]
        optional = node.optional_indices
        fns = [e.fn for e in elements]
        if not optional:
            if all(e.constant for e in elements):
                return _const([e.value for e in elements])
            return _Code(lambda s: [f(s) for f in fns])
        flags = [i in optional for i in range(len(fns))]

        def build(s: Frame) -> list[Any]:
            out: list[Any] = []
            for f, is_optional in zip(fns, flags, strict=True):
                value = f(s)
                if is_optional:
                    value = _optional_value(value)
                    if value is _UNSET:
                        continue
                out.append(value)
            return out

        return _Code(build)

    def map_expr(self, node: ast.MapExpr) -> _Code:
        entries = [
            (self.compile(e.key).fn, self.compile(e.value).fn, e.optional) for e in node.entries
        ]

        def build(s: Frame) -> dict[Any, Any]:
            pairs: list[tuple[Any, Any]] = []
            for key, value_fn, is_optional in entries:
                k = key(s)
                value = value_fn(s)
                if is_optional:
                    value = _optional_value(value)
                    if value is _UNSET:
                        continue
                pairs.append((k, value))
            return build_map(pairs)

        return _Code(build)

    # -- macros -----------------------------------------------------------------------

    def comprehension(self, node: ast.Comprehension) -> _Code:
        target = self.compile(node.target).fn
        slot, slot2 = self.checked.slots[node.id]
        bodies = [self.compile(arg).fn for arg in node.args]
        macro = node.macro
        if macro == "bind":
            (body,) = bodies

            def bind(s: Frame) -> Any:
                try:
                    s[slot] = target(s)
                except EvalError as error:
                    s[slot] = _Failed(error)
                return body(s)

            return _Code(bind)
        if macro in ("optMap", "optFlatMap"):
            return self.optional_macro(node, target, slot, bodies[0])
        step = 1 + sum(_body_size(arg) for arg in node.args)
        if node.var2 is not None:
            assert slot2 is not None
            return _Code(_pair_loop(macro, target, (slot, slot2), bodies, step))
        return _Code(_loop(macro, target, slot, bodies, step))

    def optional_macro(self, node: ast.Comprehension, target: Fn, slot: int, body: Fn) -> _Code:
        flat = node.macro == "optFlatMap"
        macro = node.macro

        def apply(s: Frame) -> Any:
            optional = target(s)
            if type(optional) is not CelOptional:
                raise no_such_overload(macro, optional)
            if not optional.present:
                return OPTIONAL_NONE
            s[slot] = optional.value
            result = body(s)
            if not flat:
                return CelOptional(result)
            if type(result) is not CelOptional:
                raise no_such_overload(macro, result)
            return result

        return _Code(apply)


def _absorb(right: Fn, s: Frame, error: EvalError, absorbing: bool) -> bool:
    """The left side of ``&&`` (``||``) failed: the right side decides if it is false (true)."""
    try:
        b = right(s)
    except EvalError:
        raise error from None
    if b is absorbing:
        return b is True
    raise error


def _optional_value(value: Any) -> Any:
    if type(value) is not CelOptional:
        raise EvalError(f"expected an optional value, got {value!r}")
    return value.value if value.present else _UNSET


def _charge(s: Frame, step: int) -> None:
    total = s[0] + step
    s[0] = total
    if total > COST_LIMIT:
        raise _cost_exceeded()


def _loop(macro: str, target: Fn, slot: int, bodies: list[Fn], step: int) -> Fn:
    """One-variable macros over a list's elements or a map's keys."""
    if macro in {"all", "exists"}:
        (predicate,) = bodies
        decisive = macro == "exists"  # the value that ends the loop

        def quantifier(s: Frame) -> bool:
            error: EvalError | None = None
            for item in range_items(target(s)):
                s[slot] = item
                _charge(s, step)
                try:
                    value = predicate(s)
                except EvalError as exc:
                    error = error or exc
                    continue
                if value is decisive:
                    return value is True
                if value is not (not decisive):
                    error = error or no_such_overload(macro, value)
            if error is not None:
                raise error
            return not decisive

        return quantifier
    if macro == "exists_one":
        (predicate,) = bodies

        def exactly_one(s: Frame) -> bool:
            count = 0
            for item in range_items(target(s)):
                s[slot] = item
                _charge(s, step)
                value = predicate(s)
                if value is True:
                    count += 1
                elif value is not False:
                    raise no_such_overload(macro, value)
            return count == 1

        return exactly_one
    if macro == "filter":
        (predicate,) = bodies

        def keep(s: Frame) -> list[Any]:
            out: list[Any] = []
            for item in range_items(target(s)):
                s[slot] = item
                _charge(s, step)
                if _predicate(predicate, s, macro):
                    out.append(item)
            return out

        return keep
    # map, with an optional filter before the transform.
    if len(bodies) == 1:
        (transform,) = bodies

        def mapped(s: Frame) -> list[Any]:
            out: list[Any] = []
            for item in range_items(target(s)):
                s[slot] = item
                _charge(s, step)
                out.append(transform(s))
            return out

        return mapped
    predicate, transform = bodies

    def filtered_map(s: Frame) -> list[Any]:
        out: list[Any] = []
        for item in range_items(target(s)):
            s[slot] = item
            _charge(s, step)
            if _predicate(predicate, s, macro):
                out.append(transform(s))
        return out

    return filtered_map


def _predicate(predicate: Fn, s: Frame, macro: str) -> bool:
    value = predicate(s)
    if value is True or value is False:
        return value
    raise no_such_overload(macro, value)


def _pair_loop(macro: str, target: Fn, slots: tuple[int, int], bodies: list[Fn], step: int) -> Fn:
    """Two-variable macros over (index, element) of a list or (key, value) of a map."""
    slot, slot2 = slots
    if macro in ("all", "exists"):
        (predicate,) = bodies
        decisive = macro == "exists"

        def quantifier(s: Frame) -> bool:
            error: EvalError | None = None
            for first, second in range_pairs(target(s)):
                s[slot] = first
                s[slot2] = second
                _charge(s, step)
                try:
                    value = predicate(s)
                except EvalError as exc:
                    error = error or exc
                    continue
                if value is decisive:
                    return value is True
                if value is not (not decisive):
                    error = error or no_such_overload(macro, value)
            if error is not None:
                raise error
            return not decisive

        return quantifier
    if macro == "exists_one":
        (predicate,) = bodies

        def exactly_one(s: Frame) -> bool:
            count = 0
            for first, second in range_pairs(target(s)):
                s[slot] = first
                s[slot2] = second
                _charge(s, step)
                if _predicate(predicate, s, macro):
                    count += 1
            return count == 1

        return exactly_one
    keep_if = bodies[0] if len(bodies) == 2 else None
    transform = bodies[-1]
    as_map = macro == "transformMap"

    def transformed(s: Frame) -> Any:
        out_list: list[Any] = []
        out_map: dict[Any, Any] = {}
        for first, second in range_pairs(target(s)):
            s[slot] = first
            s[slot2] = second
            _charge(s, step)
            if keep_if is not None and not _predicate(keep_if, s, macro):
                continue
            if as_map:
                out_map[first] = transform(s)
            else:
                out_list.append(transform(s))
        return out_map if as_map else out_list

    return transformed
