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

The walk over the tree is :mod:`.tree`; it hands each kind of node to the module
that builds its closures: :mod:`.access` (names, fields, indexes), :mod:`.operators`
(comparisons and the logical operators), :mod:`.calls` (library functions and
constant folding), :mod:`.literals` (list and map literals) and :mod:`.macros`
(``cel.bind``, optionals and the comprehension loops), all on the :class:`.code.Code`
of :mod:`.code`.
"""

from dra_driver.cel.compiler.code import Fn
from dra_driver.cel.compiler.tree import compile_tree

__all__ = ["Fn", "compile_tree"]
