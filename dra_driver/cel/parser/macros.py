"""Which calls are macros, and the node each becomes (as upstream's parser decides).

``has(a.b)`` becomes the test-only selection ``a.b``; ``cel.bind(x, init, body)``
and the member macros (``all``, ``exists``, ``exists_one``/``existsOne``, ``map``,
``filter``, ``transformList``, ``transformMap``, ``optMap``, ``optFlatMap``), with a
matching argument count, become :class:`~dra_driver.cel.ast.Comprehension` nodes.
Any other call stays a call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from dra_driver.cel import ast
from dra_driver.cel.lexer import SyntaxProblem

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


def global_call(
    name: str, args: list[ast.Expr], name_offset: int, new_id: Callable[[], int]
) -> ast.Expr:
    """``name(args)``: the ``has()`` macro, or a call."""
    if name == "has" and len(args) == 1:
        arg = args[0]
        if not isinstance(arg, ast.Select) or arg.optional or arg.test_only:
            raise SyntaxProblem("invalid argument to has() macro", arg.offset)
        arg.test_only = True
        return arg
    return ast.Call(offset=name_offset, id=new_id(), function=name, args=args)


def member_call(
    target: ast.Expr, name: str, args: list[ast.Expr], offset: int, new_id: Callable[[], int]
) -> ast.Expr:
    """``target.name(args)``: ``cel.bind``, a member macro, or a member call."""
    if name == "bind" and len(args) == 3 and isinstance(target, ast.Ident) and target.name == "cel":
        var = _variable(args[0])
        return ast.Comprehension(
            offset=target.offset,
            id=new_id(),
            macro="bind",
            target=args[1],
            var=var,
            var2=None,
            args=[args[2]],
        )
    counts = _MEMBER_MACROS.get(name)
    if counts is None or len(args) not in counts:
        return ast.Call(offset=offset, id=new_id(), function=name, args=args, target=target)
    macro = "exists_one" if name == "existsOne" else name
    two_vars = (macro in ("all", "exists", "exists_one") and len(args) == 3) or macro in (
        "transformList",
        "transformMap",
    )
    var = _variable(args[0])
    var2: str | None = None
    rest = args[1:]
    if two_vars:
        var2 = _variable(args[1])
        if var2 == var:
            raise SyntaxProblem(f"duplicate variable name: {var}", args[1].offset)
        rest = args[2:]
    return ast.Comprehension(
        offset=offset,
        id=new_id(),
        macro=macro,
        target=target,
        var=var,
        var2=var2,
        args=rest,
    )


def _variable(arg: ast.Expr) -> str:
    if not isinstance(arg, ast.Ident):
        raise SyntaxProblem("argument must be a simple name", arg.offset)
    return arg.name
