"""Compiling and evaluating device selectors: the entry points of the package."""

from __future__ import annotations

import functools
from typing import Final

from api.errors import CelCompileError, CelEvaluationError
from dra_driver.cel import ast, cost
from dra_driver.cel.checker import check
from dra_driver.cel.compiler import Fn, compile_tree
from dra_driver.cel.device import CelDevice
from dra_driver.cel.lexer import SyntaxProblem
from dra_driver.cel.library import Registry, build_registry
from dra_driver.cel.parser import parse
from dra_driver.cel.runtime import CostLimitExceeded, EvalError, type_name
from dra_driver.cel.types import BOOL, DYN

MAX_EXPRESSION_BYTES: Final = 10 * 1024
"""``CELSelectorExpressionMaxLength``."""
MAX_DEPTH: Final = 250
"""Deepest syntax tree accepted (upstream's parser recursion limit)."""

_REGISTRY: Final[Registry] = build_registry()


class CompiledSelector:
    """A compiled selector expression; evaluate it against any number of devices.

    Instances are immutable and safe to share between threads: each evaluation
    has its own frame.
    """

    __slots__ = ("_program", "_slots", "estimated_cost", "expression")

    def __init__(self, expression: str, program: Fn, slots: int, estimated_cost: int) -> None:
        self.expression = expression
        self.estimated_cost = estimated_cost
        """Worst-case cost the estimator computed (at most 1,000,000)."""
        self._program = program
        self._slots = slots

    def evaluate(self, device: CelDevice) -> bool:
        """Whether ``device`` matches.

        Raises CelEvaluationError on a CEL runtime error (a missing key, no
        matching overload, an overflow, a result that is not a bool, the runtime
        cost limit): upstream aborts the allocation attempt then, rather than
        skipping the device.
        """
        frame = [0, device]
        if self._slots:
            frame.extend([None] * self._slots)
        try:
            result = self._program(frame)
        except EvalError as exc:
            raise CelEvaluationError(exc.reason, expression=self.expression) from None
        except CostLimitExceeded as exc:
            raise CelEvaluationError(str(exc), expression=self.expression) from None
        except RecursionError:
            raise CelEvaluationError(
                "expression nesting too deep to evaluate", expression=self.expression
            ) from None
        if result is True or result is False:
            return result
        name = type_name(result)
        raise CelEvaluationError(
            f"CEL result of type {name} could not be converted to bool: "
            f"type conversion error from '{name}' to 'bool'",
            expression=self.expression,
        )

    def __repr__(self) -> str:
        return f"CompiledSelector({self.expression!r})"


def compile_selector(expression: str) -> CompiledSelector:
    """Compile a selector expression, as the API server validates it and the scheduler
    compiles it; memoised per expression string.

    Raises CelCompileError (with ``expression`` and ``reason``) when the
    expression is longer than 10240 bytes, does not parse, references an
    undeclared variable or function, applies a function to arguments of the wrong
    type, does not evaluate to bool (or an attribute value of unknown type), or
    has an estimated cost above 1,000,000.
    """
    compiled = _compile(expression)
    if isinstance(compiled, str):
        raise CelCompileError(compiled, expression=expression)
    return compiled


@functools.lru_cache(maxsize=4096)
def _compile(expression: str) -> CompiledSelector | str:
    """The compiled selector, or the reason it does not compile (errors are cached too)."""
    size = len(expression.encode("utf-8"))
    if size > MAX_EXPRESSION_BYTES:
        return (
            f"expression too long: {size} bytes, may not be more than {MAX_EXPRESSION_BYTES} bytes"
        )
    try:
        tree = parse(expression)
    except SyntaxProblem as exc:
        return _issues(expression, [(exc.offset, exc.message)])
    except RecursionError:
        return _issues(expression, [(0, "expression recursion limit exceeded")])
    if ast.depth(tree) > MAX_DEPTH:
        return _issues(expression, [(0, f"expression recursion limit exceeded: {MAX_DEPTH}")])
    try:
        checked = check(tree, _REGISTRY)
    except RecursionError:
        return _issues(expression, [(0, "expression recursion limit exceeded")])
    if checked.errors:
        return _issues(expression, checked.errors)
    result_type = checked.types[tree.id]
    if result_type not in (BOOL, DYN):
        return f"must evaluate to bool or the unknown type, not {result_type}"
    if checked.cost > cost.COST_LIMIT:
        estimate = "unbounded" if checked.cost >= cost.UNBOUNDED else str(checked.cost)
        return (
            f"too complex, exceeds cost limit: estimated cost {estimate}, limit {cost.COST_LIMIT}"
        )
    program = compile_tree(tree, checked)
    return CompiledSelector(
        expression, program, checked.slot_count - 2, min(checked.cost, cost.UNBOUNDED)
    )


def _issues(expression: str, problems: list[tuple[int, str]]) -> str:
    """Problems rendered as upstream's ``compilation failed: ERROR: <input>:L:C: ...``."""
    lines = expression.split("\n")
    rendered: list[str] = []
    for offset, message in sorted(problems, key=lambda p: p[0]):
        before = expression[:offset]
        line = before.count("\n") + 1
        column = offset - (before.rfind("\n") + 1)
        source = lines[line - 1] if line - 1 < len(lines) else ""
        rendered.append(
            f"ERROR: <input>:{line}:{column + 1}: {message}\n | {source}\n | {'.' * column}^"
        )
    return "compilation failed: " + "\n".join(rendered)
