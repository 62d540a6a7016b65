"""CEL's string extension library, version 2 (as the Kubernetes base environment has it),
plus ``reverse``.

Indices count Unicode code points. Out-of-range indices are errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from dra_driver.cel import cost, runtime
from dra_driver.cel.cost import UNKNOWN, Shape
from dra_driver.cel.library import LIST_RECEIVERS
from dra_driver.cel.runtime import EvalError, Frame, TypeValue, UInt, charge, no_such_overload
from dra_driver.cel.types import DYN, INT, STRING, list_of

if TYPE_CHECKING:
    from dra_driver.cel.library import Registry

# Go's unicode.IsSpace, which strings.TrimSpace (CEL's trim) uses.
_SPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER: Final = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_FORMAT_CLAUSE: Final = re.compile(r"%(?:\.(\d+))?([sdfeExXobS%])?")


def _traverse(frame: Frame, text: str) -> None:
    charge(frame, len(text) // 10)


def _out_of_range(index: int) -> EvalError:
    return EvalError(f"index out of range: {index}")


def char_at(frame: Frame, text: Any, index: Any) -> str:
    if type(text) is not str or type(index) is not int:
        raise no_such_overload("charAt", text, index)
    if index < 0 or index > len(text):
        raise _out_of_range(index)
    return text[index : index + 1]


def index_of(frame: Frame, text: Any, part: Any, offset: Any = 0) -> int:
    if type(text) is not str or type(part) is not str or type(offset) is not int:
        raise no_such_overload("indexOf", text, part, offset)
    _traverse(frame, text)
    if offset < 0 or offset > len(text):
        raise _out_of_range(offset)
    return text.find(part, offset)


def last_index_of(frame: Frame, text: Any, part: Any, offset: Any = None) -> int:
    if offset is None:
        offset = len(text) if type(text) is str else 0
    if type(text) is not str or type(part) is not str or type(offset) is not int:
        raise no_such_overload("lastIndexOf", text, part, offset)
    _traverse(frame, text)
    if offset < 0 or offset > len(text):
        raise _out_of_range(offset)
    # The match may start at ``offset`` at the latest.
    return text.rfind(part, 0, offset + len(part))


def lower_ascii(frame: Frame, text: Any) -> str:
    if type(text) is not str:
        raise no_such_overload("lowerAscii", text)
    _traverse(frame, text)
    return text.translate(_ASCII_LOWER)


def upper_ascii(frame: Frame, text: Any) -> str:
    if type(text) is not str:
        raise no_such_overload("upperAscii", text)
    _traverse(frame, text)
    return text.translate(_ASCII_UPPER)


def replace(frame: Frame, text: Any, old: Any, new: Any, count: Any = -1) -> str:
    """``replace(old, new[, n])``: at most ``n`` replacements, all when ``n < 0``."""
    if (
        type(text) is not str
        or type(old) is not str
        or type(new) is not str
        or type(count) is not int
    ):
        raise no_such_overload("replace", text, old, new, count)
    _traverse(frame, text)
    result = text.replace(old, new, count if count >= 0 else -1)
    charge(frame, len(result) // 10)
    return result


def split(frame: Frame, text: Any, separator: Any, limit: Any = -1) -> list[str]:
    """``split(sep[, n])`` as Go's SplitN: ``n == 0`` none, ``n < 0`` all, else at most n."""
    if type(text) is not str or type(separator) is not str or type(limit) is not int:
        raise no_such_overload("split", text, separator, limit)
    _traverse(frame, text)
    if limit == 0:
        return []
    if separator == "":
        chars = list(text)
        if 0 < limit < len(chars):
            return [*chars[: limit - 1], "".join(chars[limit - 1 :])]
        return chars
    return text.split(separator, limit - 1 if limit > 0 else -1)


def substring(frame: Frame, text: Any, start: Any, end: Any = None) -> str:
    if end is None:
        end = len(text) if type(text) is str else 0
    if type(text) is not str or type(start) is not int or type(end) is not int:
        raise no_such_overload("substring", text, start, end)
    if start < 0 or start > len(text):
        raise _out_of_range(start)
    if end < 0 or end > len(text):
        raise _out_of_range(end)
    if start > end:
        raise EvalError(f"invalid substring range. start: {start}, end: {end}")
    return text[start:end]


def trim(frame: Frame, text: Any) -> str:
    if type(text) is not str:
        raise no_such_overload("trim", text)
    _traverse(frame, text)
    return text.strip(_SPACE)


def join(frame: Frame, items: Any, separator: Any = "") -> str:
    if type(items) not in runtime.LIST_TYPES or type(separator) is not str:
        raise no_such_overload("join", items, separator)
    for item in items:
        if type(item) is not str:
            raise no_such_overload("join", items, separator)
    result = separator.join(items)
    charge(frame, len(result) // 10)
    return result


def reverse(frame: Frame, text: Any) -> str:
    if type(text) is not str:
        raise no_such_overload("reverse", text)
    _traverse(frame, text)
    return text[::-1]


_QUOTE_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def quote(frame: Frame, text: Any) -> str:
    """``strings.quote(s)``: a double-quoted CEL string literal of ``s``."""
    if type(text) is not str:
        raise no_such_overload("strings.quote", text)
    _traverse(frame, text)
    out = ['"']
    for ch in text:
        escaped = _QUOTE_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif not ch.isprintable() and ch != " ":
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# -- format -------------------------------------------------------------------------------


def format_string(frame: Frame, template: Any, args: Any) -> str:
    """``"...".format([args])`` with ``%s %d %f %e %x %X %o %b %%`` and ``%.Nf``-style
    precision."""
    if type(template) is not str or type(args) not in runtime.LIST_TYPES:
        raise no_such_overload("format", template, args)
    out: list[str] = []
    position = 0
    used = 0
    for match in _FORMAT_CLAUSE.finditer(template):
        out.append(template[position : match.start()])
        position = match.end()
        precision, verb = match.group(1), match.group(2)
        if verb is None:
            raise EvalError(
                "could not parse formatting clause: unrecognized formatting clause "
                f"at {match.start()}"
            )
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            raise EvalError(f"index {used} out of range")
        out.append(_format_clause(verb, None if precision is None else int(precision), args[used]))
        used += 1
    out.append(template[position:])
    result = "".join(out)
    charge(frame, len(result) // 10)
    return result


def _clause_error(clause: str, accepted: str, value: Any) -> EvalError:
    return EvalError(
        f"error during formatting: {clause} clause can only be used on {accepted}, "
        f"was given {runtime.type_name(value)}"
    )


def _format_clause(verb: str, precision: int | None, value: Any) -> str:
    t = type(value)
    if verb in "sS":
        return _format_value(value)
    if verb == "d":
        if t is int or t is UInt:
            return str(int(value))
        if t is float and not math.isfinite(value):
            return _format_value(value)
        raise _clause_error("decimal", "integers", value)
    if verb in "fe" or verb == "E":
        if t is int or t is UInt:
            value = float(value)
        elif t is not float:
            raise _clause_error("fixed-point", "doubles", value)
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        digits = 6 if precision is None else precision
        if verb == "f":
            return f"{value:.{digits}f}"
        text = f"{value:.{digits}e}"
        return text.upper() if verb == "E" else text
    if verb in "xX":
        if t is int or t is UInt:
            text = format(int(value), "x")
        elif t is str:
            text = value.encode("utf-8").hex()
        elif t is bytes:
            text = value.hex()
        else:
            raise _clause_error("hex", "integers, byte buffers, and strings", value)
        return text.upper() if verb == "X" else text
    if verb == "o":
        if t is int or t is UInt:
            return format(int(value), "o")
        raise _clause_error("octal", "integers", value)
    # verb == "b"
    if t is int or t is UInt:
        return format(int(value), "b")
    if t is bool:
        return "1" if value else "0"
    raise _clause_error("binary", "integers and bools", value)


def _format_value(value: Any) -> str:
    """``%s``: a value as text; lists and maps in CEL-like notation."""
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return "null"
    if t in runtime.LIST_TYPES:
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        entries = sorted((_format_value(k), _format_value(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in entries) + "}"
    if t is TypeValue:
        return str(value.name)
    if t is float:
        return runtime.format_double(value)
    try:
        return runtime.to_text(value)
    except EvalError:
        return str(value)


# -- estimates ------------------------------------------------------------------------------


def _estimate_same_size(shapes: list[Shape]) -> tuple[int, Shape]:
    return cost.add(1, cost.factor(shapes[0].max_size, cost.STRING_TRAVERSAL)), Shape(
        shapes[0].size
    )


def _estimate_index(shapes: list[Shape]) -> tuple[int, Shape]:
    return cost.add(1, cost.factor(shapes[0].max_size, cost.STRING_TRAVERSAL)), cost.SCALAR


def _estimate_split(shapes: list[Shape]) -> tuple[int, Shape]:
    text = shapes[0]
    work = cost.add(1, cost.factor(text.max_size, cost.STRING_TRAVERSAL))
    if text.size is None:
        return work, UNKNOWN
    return work, Shape(text.size + 1, elem=Shape(text.size))


def _estimate_replace(shapes: list[Shape]) -> tuple[int, Shape]:
    text, _, new = shapes[0], shapes[1], shapes[2]
    grown = cost.multiply(cost.add(text.max_size, 1), max(new.max_size, 1))
    size = None if grown >= cost.UNBOUNDED else grown
    return cost.add(1, cost.factor(grown, cost.STRING_TRAVERSAL)), Shape(size)


def _estimate_join(shapes: list[Shape]) -> tuple[int, Shape]:
    items = shapes[0]
    separator = shapes[1].max_size if len(shapes) > 1 else 0
    total = cost.multiply(items.max_size, cost.add(items.element.max_size, separator))
    size = None if total >= cost.UNBOUNDED else total
    return cost.add(1, cost.factor(total, cost.STRING_TRAVERSAL)), Shape(size)


def _estimate_quote(shapes: list[Shape]) -> tuple[int, Shape]:
    text = shapes[0]
    size = None if text.size is None else 2 + 10 * text.size
    return cost.add(1, cost.factor(text.max_size, cost.STRING_TRAVERSAL)), Shape(size)


def _estimate_format(shapes: list[Shape]) -> tuple[int, Shape]:
    template, args = shapes
    per_arg = args.element.max_size
    total = cost.add(template.max_size, cost.multiply(args.max_size, max(per_arg, 24)))
    size = None if total >= cost.UNBOUNDED else total
    return cost.add(1, cost.factor(total, cost.STRING_TRAVERSAL)), Shape(size)


def register(registry: Registry) -> None:
    def member(
        name: str,
        signatures: list[tuple[tuple[Any, ...], Any]],
        impl: Any,
        estimate: Any,
        receivers: tuple[type, ...] = (str,),
    ) -> None:
        registry.define(
            name,
            signatures,
            member=True,
            impl=impl,
            receivers=receivers,
            costed=True,
            estimate=estimate,
        )

    member("charAt", [((STRING, INT), STRING)], char_at, _estimate_index)
    member(
        "indexOf",
        [((STRING, STRING), INT), ((STRING, STRING, INT), INT)],
        index_of,
        _estimate_index,
    )
    member(
        "lastIndexOf",
        [((STRING, STRING), INT), ((STRING, STRING, INT), INT)],
        last_index_of,
        _estimate_index,
    )
    member("lowerAscii", [((STRING,), STRING)], lower_ascii, _estimate_same_size)
    member("upperAscii", [((STRING,), STRING)], upper_ascii, _estimate_same_size)
    member(
        "replace",
        [((STRING, STRING, STRING), STRING), ((STRING, STRING, STRING, INT), STRING)],
        replace,
        _estimate_replace,
    )
    member(
        "split",
        [((STRING, STRING), list_of(STRING)), ((STRING, STRING, INT), list_of(STRING))],
        split,
        _estimate_split,
    )
    member(
        "substring",
        [((STRING, INT), STRING), ((STRING, INT, INT), STRING)],
        substring,
        _estimate_same_size,
    )
    member("trim", [((STRING,), STRING)], trim, _estimate_same_size)
    member("reverse", [((STRING,), STRING)], reverse, _estimate_same_size)
    member(
        "join",
        [((list_of(STRING),), STRING), ((list_of(STRING), STRING), STRING)],
        join,
        _estimate_join,
        receivers=LIST_RECEIVERS,
    )
    member("format", [((STRING, list_of(DYN)), STRING)], format_string, _estimate_format)
    registry.define(
        "strings.quote",
        [((STRING,), STRING)],
        impl=quote,
        costed=True,
        estimate=_estimate_quote,
    )
