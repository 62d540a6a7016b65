"""The walk over a checked syntax tree: each node compiled by the module for its kind.

What needs the checker's annotations is decided here (a variable's slot, whether
an identifier is ``device``, a call's resolved function, a macro's slots); the
closures themselves come from :mod:`.access`, :mod:`.operators`, :mod:`.calls`,
:mod:`.literals` and :mod:`.macros`.
"""

from __future__ import annotations

from dra_driver.cel import ast, types
from dra_driver.cel.checker import CheckResult
from dra_driver.cel.compiler import access, calls, literals, macros, operators
from dra_driver.cel.compiler.code import Code, Fn, constant
from dra_driver.cel.runtime import TypeValue


def compile_tree(root: ast.Expr, checked: CheckResult) -> Fn:
    """The closure computing ``root``'s value from a frame."""
    return _Compiler(checked).compile(root).fn


class _Compiler:
    def __init__(self, checked: CheckResult) -> None:
        self.checked = checked

    def type_of(self, node: ast.Expr) -> types.CelType:
        return self.checked.types.get(node.id, types.DYN)

    def compile(self, node: ast.Expr) -> Code:
        if isinstance(node, ast.Literal):
            return constant(node.value)
        if isinstance(node, ast.Ident):
            return self.ident(node)
        if isinstance(node, ast.Select):
            return self.select(node)
        if isinstance(node, ast.Index):
            return self.index(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.ListExpr):
            return literals.list_literal(
                [self.compile(e) for e in node.elements], node.optional_indices
            )
        if isinstance(node, ast.MapExpr):
            return literals.map_literal(
                [
                    (self.compile(e.key).fn, self.compile(e.value).fn, e.optional)
                    for e in node.entries
                ]
            )
        if isinstance(node, ast.Comprehension):
            return self.comprehension(node)
        raise TypeError(f"unexpected node {node!r}")  # pragma: no cover

    # -- names, fields, indexes ----------------------------------------------------------------

    def ident(self, node: ast.Ident) -> Code:
        binding = self.checked.bindings.get(node.id)
        if binding is not None:
            return access.variable(binding.slot, holds_errors=binding.holds_errors)
        if node.name == "device":
            return access.device()
        return constant(TypeValue(node.name))

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

    def select(self, node: ast.Select) -> Code:
        name = node.field
        operand_node = node.operand
        plain = not node.test_only and not node.optional
        if plain and self.is_device(operand_node):
            return access.device_select(name)
        which = self.device_map(operand_node)
        if which is not None and plain:
            return access.domain_lookup(which, name)
        operand = self.compile(operand_node).fn
        if node.test_only:
            return access.has(operand, name)
        if node.optional or self.type_of(operand_node).name == "optional_type":
            return access.optional_field(operand, name)
        return access.field(operand, name)

    def index(self, node: ast.Index) -> Code:
        key = self.compile(node.index)
        optional = node.optional or self.type_of(node.operand).name == "optional_type"
        which = self.device_map(node.operand)
        if which is not None and key.constant and not optional:
            return access.domain_lookup(which, key.value)
        return access.index(self.compile(node.operand).fn, key, optional=optional)

    # -- calls -----------------------------------------------------------------------------------

    def call(self, node: ast.Call) -> Code:
        function = node.function
        if function in ("_&&_", "_||_", "_?_:_"):
            branches = [self.compile(arg).fn for arg in node.args]
            if function == "_&&_":
                return operators.logical_and(*branches)
            if function == "_||_":
                return operators.logical_or(*branches)
            return operators.conditional(*branches)
        operand_nodes = ([node.target] if node.target is not None else []) + node.args
        operands = [self.compile(arg) for arg in operand_nodes]
        resolved = self.checked.functions[node.id]
        code = operators.specialised(function, operands)
        if code is None:
            if node.target is not None:
                code = calls.member_call(resolved, operands)
            else:
                code = calls.global_call(resolved, operands)
        if all(op.constant for op in operands):
            return calls.fold(code)
        return code

    # -- macros -----------------------------------------------------------------------

    def comprehension(self, node: ast.Comprehension) -> Code:
        target = self.compile(node.target).fn
        slot, slot2 = self.checked.slots[node.id]
        bodies = [self.compile(arg).fn for arg in node.args]
        macro = node.macro
        if macro == "bind":
            (body,) = bodies
            return macros.bind(target, slot, body)
        if macro in ("optMap", "optFlatMap"):
            return macros.optional_macro(macro, target, slot, bodies[0])
        step = 1 + sum(macros.body_size(arg) for arg in node.args)
        if node.var2 is not None:
            assert slot2 is not None
            return Code(macros.pair_loop(macro, target, (slot, slot2), bodies, step))
        return Code(macros.loop(macro, target, slot, bodies, step))
