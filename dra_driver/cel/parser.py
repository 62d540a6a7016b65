"""A recursive-descent parser for the CEL expression grammar, with macros.

Precedence, lowest first: ``?:`` (right-associative), ``||``, ``&&``, the
relations ``< <= >= > == != in``, ``+ -``, ``* / %``, the prefix operators
``!`` and ``-``, then member access, indexing and calls. As upstream does, runs of
``&&`` or ``||`` become balanced trees, an even run of ``!`` or ``-`` cancels
out, and ``-`` directly before a number literal makes a negative literal (so
``-9223372036854775808`` is a valid int).

Macros are recognised here, by name and argument count, as upstream's parser
does: ``has(a.b)``, ``r.all(x, p)``, ``r.exists(x, p)``, ``r.exists_one(x, p)``,
``r.map(x, t)``, ``r.map(x, p, t)``, ``r.filter(x, p)``, the two-variable
``all/exists/existsOne(k, v, p)``, ``transformList(i, v, [p,] t)``,
``transformMap(k, v, [p,] t)``, ``cel.bind(x, init, body)`` and
``o.optMap(x, t)``/``o.optFlatMap(x, t)``.
"""

from __future__ import annotations

from typing import Final

from dra_driver.cel import ast
from dra_driver.cel.lexer import RESERVED, SyntaxProblem, Token, tokenize
from dra_driver.cel.runtime import INT64_MAX

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

# Member macros: name -> accepted argument counts (one- and two-variable forms).
_MEMBER_MACROS: Final = {
    "all": (2, 3),
    "exists": (2, 3),
    "exists_one": (2, 3),
    "existsOne": (2, 3),
    "map": (2, 3),
    "filter": (2,),
    "transformList": (3, 4),
    "transformMap": (3, 4),
    "optMap": (2,),
    "optFlatMap": (2,),
}


def parse(text: str) -> ast.Expr:
    """The syntax tree of ``text``; raise SyntaxProblem on the first syntax error."""
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.nesting = 0
        self.next_id = 0
        # Set right before parsing a number literal preceded by unary minus signs.
        self.minus_before = False

    # -- token helpers ----------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind != "eof":
            self.pos += 1
        return token

    def accept(self, kind: str) -> bool:
        if self.tok.kind == kind:
            self.advance()
            return True
        return False

    def expect(self, kind: str, what: str | None = None) -> Token:
        if self.tok.kind != kind:
            raise self.error(f"expecting {what or repr(kind)}")
        return self.advance()

    def error(self, expecting: str) -> SyntaxProblem:
        token = self.tok
        return SyntaxProblem(
            f"Syntax error: mismatched input '{token.text}' {expecting}", token.offset
        )

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

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
                    expr = self.member_call(expr, name, args, call_offset)
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
            if self.tok.kind == "(":
                call_offset = self.advance().offset
                args = self.arguments(")")
                return self.global_call(name, args, call_offset, name_token.offset)
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

    # -- calls and macros -----------------------------------------------------------------

    def global_call(
        self, name: str, args: list[ast.Expr], offset: int, name_offset: int
    ) -> ast.Expr:
        if name == "has" and len(args) == 1:
            arg = args[0]
            if not isinstance(arg, ast.Select) or arg.optional or arg.test_only:
                raise SyntaxProblem("invalid argument to has() macro", arg.offset)
            arg.test_only = True
            return arg
        return ast.Call(offset=name_offset, id=self.new_id(), function=name, args=args)

    def member_call(
        self, target: ast.Expr, name: str, args: list[ast.Expr], offset: int
    ) -> ast.Expr:
        if (
            name == "bind"
            and len(args) == 3
            and isinstance(target, ast.Ident)
            and target.name == "cel"
        ):
            var = self.variable(args[0])
            return ast.Comprehension(
                offset=target.offset,
                id=self.new_id(),
                macro="bind",
                target=args[1],
                var=var,
                var2=None,
                args=[args[2]],
            )
        counts = _MEMBER_MACROS.get(name)
        if counts is None or len(args) not in counts:
            return ast.Call(
                offset=offset, id=self.new_id(), function=name, args=args, target=target
            )
        macro = "exists_one" if name == "existsOne" else name
        two_vars = (macro in ("all", "exists", "exists_one") and len(args) == 3) or macro in (
            "transformList",
            "transformMap",
        )
        var = self.variable(args[0])
        var2: str | None = None
        rest = args[1:]
        if two_vars:
            var2 = self.variable(args[1])
            if var2 == var:
                raise SyntaxProblem(f"duplicate variable name: {var}", args[1].offset)
            rest = args[2:]
        return ast.Comprehension(
            offset=offset,
            id=self.new_id(),
            macro=macro,
            target=target,
            var=var,
            var2=var2,
            args=rest,
        )

    def variable(self, arg: ast.Expr) -> str:
        if not isinstance(arg, ast.Ident):
            raise SyntaxProblem("argument must be a simple name", arg.offset)
        return arg.name
