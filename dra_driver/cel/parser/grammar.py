"""The grammar: one method per precedence level, from ``?:`` down to literals.

Nesting of parentheses, brackets and arguments is bounded (:data:`MAX_NESTING`) so
that deep input is a syntax error rather than a Python stack overflow.
"""

from __future__ import annotations

from typing import Final

from api.limits import INT64_MAX
from dra_driver.cel import ast
from dra_driver.cel.lexer import RESERVED, SyntaxProblem, Token
from dra_driver.cel.parser import macros
from dra_driver.cel.parser.cursor import TokenCursor

MAX_NESTING: Final = 100
"""Parenthesised/bracketed/argument nesting allowed; deeper input is rejected rather than
exhausting the interpreter stack."""

_RELATIONS: Final = {
    "<": "_<_",
    "<=": "_<=_",
    ">": "_>_",
    ">=": "_>=_",
    "==": "_==_",
    "!=": "_!=_",
    "in": "@in",
}
_ADDITIVE: Final = {"+": "_+_", "-": "_-_"}
_MULTIPLICATIVE: Final = {"*": "_*_", "/": "_/_", "%": "_%_"}


def parse(text: str) -> ast.Expr:
    """The syntax tree of ``text``; raise SyntaxProblem on the first syntax error."""
    return _Parser(text).parse()


class _Parser(TokenCursor):
    """The grammar, one method per precedence level; ids and tokens from the cursor."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.nesting = 0
        # Set right before parsing a number literal preceded by unary minus signs.
        self.minus_before = False

    # -- grammar ------------------------------------------------------------------------

    def parse(self) -> ast.Expr:
        if self.tok.kind == "eof":
            raise SyntaxProblem("Syntax error: mismatched input '<EOF>' expecting an expression", 0)
        expr = self.expr()
        if self.tok.kind != "eof":
            raise self.error("expecting <EOF>")
        return expr

    def expr(self) -> ast.Expr:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise SyntaxProblem(
                f"expression recursion limit exceeded: {MAX_NESTING}", self.tok.offset
            )
        condition = self.logical("||", "_||_")
        if self.tok.kind == "?":
            offset = self.advance().offset
            if_true = self.logical("||", "_||_")
            self.expect(":", "':'")
            if_false = self.expr()
            condition = ast.Call(
                offset=offset,
                id=self.new_id(),
                function="_?_:_",
                args=[condition, if_true, if_false],
            )
        self.nesting -= 1
        return condition

    def logical(self, op: str, function: str) -> ast.Expr:
        """A run of ``||`` (or of ``&&``), as a balanced tree."""
        operand = self.conditional_and if op == "||" else self.relation
        terms = [operand()]
        offsets: list[int] = []
        while self.tok.kind == op:
            offsets.append(self.advance().offset)
            terms.append(operand())
        return self.balance(function, terms, offsets, 0, len(terms) - 1)

    def conditional_and(self) -> ast.Expr:
        return self.logical("&&", "_&&_")

    def balance(
        self, function: str, terms: list[ast.Expr], offsets: list[int], lo: int, hi: int
    ) -> ast.Expr:
        if lo == hi:
            return terms[lo]
        mid = (lo + hi + 1) // 2
        left = self.balance(function, terms, offsets, lo, mid - 1)
        right = self.balance(function, terms, offsets, mid, hi)
        return ast.Call(
            offset=offsets[mid - 1], id=self.new_id(), function=function, args=[left, right]
        )

    def relation(self) -> ast.Expr:
        left = self.additive()
        while self.tok.kind in _RELATIONS:
            token = self.advance()
            right = self.additive()
            left = ast.Call(
                offset=token.offset,
                id=self.new_id(),
                function=_RELATIONS[token.kind],
                args=[left, right],
            )
        return left

    def additive(self) -> ast.Expr:
        left = self.multiplicative()
        while self.tok.kind in _ADDITIVE:
            token = self.advance()
            right = self.multiplicative()
            left = ast.Call(
                offset=token.offset,
                id=self.new_id(),
                function=_ADDITIVE[token.kind],
                args=[left, right],
            )
        return left

    def multiplicative(self) -> ast.Expr:
        left = self.unary()
        while self.tok.kind in _MULTIPLICATIVE:
            token = self.advance()
            right = self.unary()
            left = ast.Call(
                offset=token.offset,
                id=self.new_id(),
                function=_MULTIPLICATIVE[token.kind],
                args=[left, right],
            )
        return left

    def unary(self) -> ast.Expr:
        kind = self.tok.kind
        if kind not in ("!", "-"):
            return self.member()
        offset = self.tok.offset
        count = 0
        while self.tok.kind == kind:
            self.advance()
            count += 1
        if kind == "-" and self.tok.kind in ("int", "double"):
            # A negative number literal; an even run of further minus signs cancels.
            literal = self.tok
            self.minus_before = True
            number = self.member()
            if isinstance(number, ast.Literal) and number.offset == literal.offset:
                if count % 2:
                    number.value = -number.value  # type: ignore[operator]
                    number.offset = offset
                self.check_int_range(number, literal)
                return number
            return self.negate(count, offset, number)
        operand = self.member()
        if kind == "!":
            if count % 2 == 0:
                return operand
            return ast.Call(offset=offset, id=self.new_id(), function="!_", args=[operand])
        return self.negate(count, offset, operand)

    def negate(self, count: int, offset: int, operand: ast.Expr) -> ast.Expr:
        if count % 2 == 0:
            return operand
        return ast.Call(offset=offset, id=self.new_id(), function="-_", args=[operand])

    def check_int_range(self, node: ast.Expr, token: Token) -> None:
        if (
            isinstance(node, ast.Literal)
            and type(node.value) is int
            and not -INT64_MAX - 1 <= node.value <= INT64_MAX
        ):
            raise SyntaxProblem(f"invalid int literal: {token.text}", token.offset)

    def member(self) -> ast.Expr:
        expr = self.primary()
        while True:
            kind = self.tok.kind
            if kind == ".":
                offset = self.advance().offset
                optional = self.accept("?")
                name_token = self.tok
                if name_token.kind not in ("ident", "escident"):
                    raise self.error("expecting IDENTIFIER")
                self.advance()
                name = str(name_token.value)
                if self.tok.kind == "(" and not optional and name_token.kind == "ident":
                    call_offset = self.advance().offset
                    args = self.arguments(")")
                    expr = macros.member_call(expr, name, args, call_offset, self.new_id)
                else:
                    expr = ast.Select(
                        offset=offset,
                        id=self.new_id(),
                        operand=expr,
                        field=name,
                        optional=optional,
                    )
            elif kind == "[":
                offset = self.advance().offset
                optional = self.accept("?")
                self.nesting += 1
                index = self.expr()
                self.nesting -= 1
                self.expect("]", "']'")
                expr = ast.Index(
                    offset=offset, id=self.new_id(), operand=expr, index=index, optional=optional
                )
            else:
                return expr

    def arguments(self, closing: str) -> list[ast.Expr]:
        args: list[ast.Expr] = []
        if self.accept(closing):
            return args
        while True:
            args.append(self.expr())
            if self.accept(closing):
                return args
            self.expect(",", f"',' or '{closing}'")

    def primary(self) -> ast.Expr:
        token = self.tok
        kind = token.kind
        minus_before = self.minus_before
        self.minus_before = False
        if kind in ("int", "uint", "double", "string", "bytes"):
            self.advance()
            # Only -9223372036854775808 may exceed int64 before its sign is applied.
            if (
                kind == "int"
                and isinstance(token.value, int)
                and token.value > INT64_MAX
                and not (minus_before and token.value == INT64_MAX + 1)
            ):
                raise SyntaxProblem(f"invalid int literal: {token.text}", token.offset)
            return ast.Literal(offset=token.offset, id=self.new_id(), value=token.value)
        if kind in ("true", "false", "null"):
            self.advance()
            value = {"true": True, "false": False, "null": None}[kind]
            return ast.Literal(offset=token.offset, id=self.new_id(), value=value)
        if kind in {".", "ident"}:
            if kind == ".":
                self.advance()
                if self.tok.kind != "ident":
                    raise self.error("expecting IDENTIFIER")
            name_token = self.advance()
            name = str(name_token.value)
            if name in RESERVED:
                raise SyntaxProblem(f"reserved identifier: {name}", name_token.offset)
            if self.accept("("):
                args = self.arguments(")")
                return macros.global_call(name, args, name_token.offset, self.new_id)
            return ast.Ident(offset=name_token.offset, id=self.new_id(), name=name)
        if kind == "(":
            self.advance()
            inner = self.expr()
            self.expect(")", "')'")
            return inner
        if kind == "[":
            return self.list_literal()
        if kind == "{":
            return self.map_literal()
        raise self.error("expecting an expression")

    def list_literal(self) -> ast.ListExpr:
        offset = self.advance().offset
        elements: list[ast.Expr] = []
        optional: set[int] = set()
        while not self.accept("]"):
            if self.accept("?"):
                optional.add(len(elements))
            elements.append(self.expr())
            if self.accept("]"):
                break
            self.expect(",", "',' or ']'")
        return ast.ListExpr(
            offset=offset,
            id=self.new_id(),
            elements=elements,
            optional_indices=frozenset(optional),
        )

    def map_literal(self) -> ast.MapExpr:
        offset = self.advance().offset
        entries: list[ast.MapEntry] = []
        while not self.accept("}"):
            optional = self.accept("?")
            key = self.expr()
            self.expect(":", "':'")
            value = self.expr()
            entries.append(ast.MapEntry(key=key, value=value, optional=optional))
            if self.accept("}"):
                break
            self.expect(",", "',' or '}'")
        return ast.MapExpr(offset=offset, id=self.new_id(), entries=entries)
