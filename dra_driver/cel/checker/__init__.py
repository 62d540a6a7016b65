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

The walk over the tree and the checks of names, fields, calls and literals are
:mod:`.tree`; macros (their variables' scopes and frame slots, ranges, predicates)
are :mod:`.macros`; the annotations handed to the compiler are :mod:`.result`.
"""

from dra_driver.cel.checker.result import FIRST_SLOT, Binding, CheckResult
from dra_driver.cel.checker.tree import check

__all__ = ["FIRST_SLOT", "Binding", "CheckResult", "check"]
