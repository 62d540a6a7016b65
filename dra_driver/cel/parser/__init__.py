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

The grammar is :mod:`.grammar`, reading tokens through :mod:`.cursor`; which calls
are macros, and the node each becomes, is :mod:`.macros`.
"""

from dra_driver.cel.parser.grammar import MAX_NESTING, parse

__all__ = ["MAX_NESTING", "parse"]
