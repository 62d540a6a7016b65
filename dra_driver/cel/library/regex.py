"""Regular expressions with RE2 syntax on Python's ``re``; the Kubernetes regex library.

CEL's ``matches`` and Kubernetes' ``find``/``findAll`` use RE2. Patterns are
translated to Python's dialect; constructs RE2 rejects (backreferences,
lookaround, atomic groups, possessive quantifiers, ``\\Z``) are rejected here
too, and so are the RE2 constructs Python cannot express (``\\p{...}`` classes,
``\\C``, the ungreedy flag ``U``). ``\\d \\w \\s \\b`` are ASCII, as in RE2; case
folding under ``(?i)`` is ASCII-only (RE2 folds Unicode).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any, Final

from dra_driver.cel import cost
from dra_driver.cel.cost import UNKNOWN, Shape
from dra_driver.cel.runtime import EvalError, Frame, charge, no_such_overload
from dra_driver.cel.types import INT, STRING, list_of

if TYPE_CHECKING:
    from dra_driver.cel.library import Registry

MAX_REPEAT: Final = 1000
_POSIX_CLASSES: Final = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_PLAIN_ESCAPES: Final = frozenset("afnrtvdDwWsSbBA.\\*+?()[]{}|^$-/:#&~!\"',;<=>@_`%")


class RegexError(ValueError):
    """The pattern is not valid RE2, or uses RE2 syntax this implementation lacks."""


@functools.lru_cache(maxsize=512)
def compile_re2(pattern: str) -> re.Pattern[str]:
    """Translate and compile an RE2 pattern; raise RegexError saying what is wrong."""
    translated = _Translator(pattern).translate()
    try:
        return re.compile(translated, re.ASCII)
    except re.error as exc:
        raise RegexError(f"invalid regular expression {pattern!r}: {exc}") from None
    except (OverflowError, RecursionError):
        raise RegexError(f"regular expression {pattern!r} is too complex") from None


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.i = 0
        self.out: list[str] = []
        # Per open group: how many implicit "(?flags:" groups were opened inside it.
        self.groups: list[int] = [0]
        self.multiline: list[bool] = [False]

    def fail(self, what: str) -> RegexError:
        return RegexError(f"invalid regular expression {self.src!r}: {what}")

    def translate(self) -> str:
        src = self.src
        while self.i < len(src):
            ch = src[self.i]
            if ch == "\\":
                self.out.append(self.escape(in_class=False))
            elif ch == "[":
                self.char_class()
            elif ch == "(":
                self.open_group()
            elif ch == ")":
                if len(self.groups) == 1:
                    raise self.fail("unexpected )")
                self.out.append(")" * self.groups.pop())
                self.multiline.pop()
                self.out.append(")")
                self.i += 1
            elif ch == "$":
                self.out.append("$" if self.multiline[-1] else r"(?!\n)\Z")
                self.i += 1
            elif ch in "*+?":
                self.out.append(ch)
                self.i += 1
                self.after_quantifier()
            elif ch == "{":
                self.repetition()
            else:
                self.out.append(ch)
                self.i += 1
        if len(self.groups) > 1:
            raise self.fail("missing )")
        self.out.append(")" * self.groups[0])
        return "".join(self.out)

    def after_quantifier(self) -> None:
        # RE2 allows one lazy "?" after a quantifier; possessive "+" and stacked
        # quantifiers are errors there (Python would accept some of them).
        if self.i < len(self.src) and self.src[self.i] == "?":
            self.out.append("?")
            self.i += 1
        if self.i < len(self.src) and self.src[self.i] in "*+?":
            raise self.fail("bad repetition operator")

    def repetition(self) -> None:
        match = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.src, self.i)
        if match is None:
            # Not a repetition: a literal brace in RE2.
            self.out.append(r"\{")
            self.i += 1
            return
        low = int(match.group(1))
        high = match.group(3)
        if low > MAX_REPEAT or (high and int(high) > MAX_REPEAT):
            raise self.fail("bad repetition operator (at most 1000)")
        self.out.append(match.group())
        self.i = match.end()
        self.after_quantifier()

    def open_group(self) -> None:
        src = self.src
        rest = src[self.i :]
        if not rest.startswith("(?"):
            self.push_group("(")
            self.i += 1
            return
        for prefix in ("(?=", "(?!", "(?<=", "(?<!"):
            if rest.startswith(prefix):
                raise self.fail("lookaround is not supported by RE2")
        for prefix in ("(?>", "(?(", "(?#", "(?P=", "(?|"):
            if rest.startswith(prefix):
                raise self.fail(f"{prefix} is not supported by RE2")
        named = re.compile(r"\(\?P?<([A-Za-z_][A-Za-z0-9_]*)>").match(rest)
        if named:
            self.push_group(f"(?P<{named.group(1)}>")
            self.i += named.end()
            return
        flags = re.compile(r"\(\?([imsU]*)(?:-([imsU]*))?([:)])").match(rest)
        if flags is None:
            raise self.fail("invalid or unsupported group syntax")
        on, off, end = flags.group(1), flags.group(2) or "", flags.group(3)
        if "U" in on + off:
            raise self.fail("the ungreedy flag U is not supported")
        if not on and not off:
            raise self.fail("missing flags")
        spec = on + (f"-{off}" if off else "")
        multiline = ("m" in on) or (self.multiline[-1] and "m" not in off)
        self.i += flags.end()
        if end == ":":
            self.push_group(f"(?{spec}:", multiline)
            return
        # "(?i)" in RE2 applies up to the end of the enclosing group; Python only
        # accepts global flags at the start, so open a scoped group instead.
        self.out.append(f"(?{spec}:")
        self.groups[-1] += 1
        self.multiline[-1] = multiline

    def push_group(self, text: str, multiline: bool | None = None) -> None:
        self.out.append(text)
        self.groups.append(0)
        self.multiline.append(self.multiline[-1] if multiline is None else multiline)

    def escape(self, in_class: bool) -> str:
        src = self.src
        if self.i + 1 >= len(src):
            raise self.fail("trailing backslash")
        ch = src[self.i + 1]
        self.i += 2
        if ch in "1234567":
            if self.i < len(src) and src[self.i] in "01234567":
                return self._octal(ch)
            raise self.fail("backreferences are not supported by RE2")
        if ch in "89":
            raise self.fail("backreferences are not supported by RE2")
        if ch == "0":
            return self._octal(ch)
        if ch == "z" and not in_class:
            return r"\Z"
        if ch == "x":
            return self._hex()
        if ch == "Q":
            end = src.find("\\E", self.i)
            literal = src[self.i :] if end < 0 else src[self.i : end]
            self.i = len(src) if end < 0 else end + 2
            return re.escape(literal)
        if ch in "pP":
            raise self.fail(f"\\{ch} Unicode classes are not supported")
        if ch in "ZCGXRhHkKgeE" or (ch.isalpha() and ch not in _PLAIN_ESCAPES):
            raise self.fail(f"invalid escape sequence \\{ch}")
        if in_class and ch in "bBA":
            raise self.fail(f"invalid escape sequence \\{ch} in a character class")
        return "\\" + ch

    def _octal(self, first: str) -> str:
        digits = first
        while len(digits) < 3 and self.i < len(self.src) and self.src[self.i] in "01234567":
            digits += self.src[self.i]
            self.i += 1
        return f"\\U{int(digits, 8):08x}"

    def _hex(self) -> str:
        src = self.src
        if self.i < len(src) and src[self.i] == "{":
            end = src.find("}", self.i)
            digits = src[self.i + 1 : end] if end > 0 else ""
            if (
                not digits
                or len(digits) > 8
                or not all(c in "0123456789abcdefABCDEF" for c in digits)
            ):
                raise self.fail("invalid \\x{...} escape")
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise self.fail("invalid \\x{...} escape")
            self.i = end + 1
            return f"\\U{code:08x}"
        digits = src[self.i : self.i + 2]
        if len(digits) != 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise self.fail("invalid \\x escape")
        self.i += 2
        return f"\\x{digits}"

    def char_class(self) -> None:
        src = self.src
        out = ["["]
        self.i += 1
        if self.i < len(src) and src[self.i] == "^":
            out.append("^")
            self.i += 1
        first = True
        previous = ""
        while True:
            if self.i >= len(src):
                raise self.fail("missing closing ]")
            ch = src[self.i]
            if ch == "]" and not first:
                self.i += 1
                break
            first = False
            if ch == "[" and src.startswith("[:", self.i):
                end = src.find(":]", self.i + 2)
                name = src[self.i + 2 : end] if end > 0 else ""
                if name.startswith("^"):
                    raise self.fail("negated POSIX classes are not supported")
                if name not in _POSIX_CLASSES:
                    raise self.fail(f"invalid character class range [:{name}:]")
                out.append(_POSIX_CLASSES[name])
                self.i = end + 2
                previous = ""
                continue
            if ch == "\\":
                piece = self.escape(in_class=True)
            elif ch in "[&~|" or (ch == "-" and previous == "-"):
                # Python warns on what could be set operations; escape them.
                piece = "\\" + ch
                self.i += 1
            elif ch == "]":
                piece = r"\]"
                self.i += 1
            else:
                piece = ch
                self.i += 1
            out.append(piece)
            previous = ch
        out.append("]")
        self.out.append("".join(out))


def validate(pattern: str) -> str | None:
    """Why ``pattern`` is not usable, or None when it is."""
    try:
        compile_re2(pattern)
    except RegexError as exc:
        return str(exc)
    return None


def _pattern(pattern: str) -> re.Pattern[str]:
    try:
        return compile_re2(pattern)
    except RegexError as exc:
        raise EvalError(str(exc)) from None


def _charge_regex(frame: Frame, text: str, pattern: str) -> None:
    charge(frame, 1 + (len(text) * len(pattern)) // 40)


def matches(frame: Frame, text: Any, pattern: Any) -> bool:
    """CEL ``matches``: whether the RE2 pattern matches any substring."""
    if type(text) is not str or type(pattern) is not str:
        raise no_such_overload("matches", text, pattern)
    _charge_regex(frame, text, pattern)
    return _pattern(pattern).search(text) is not None


def find(frame: Frame, text: Any, pattern: Any) -> str:
    """``s.find(re)``: the first match, or the empty string."""
    if type(text) is not str or type(pattern) is not str:
        raise no_such_overload("find", text, pattern)
    _charge_regex(frame, text, pattern)
    match = _pattern(pattern).search(text)
    return match.group(0) if match else ""


def find_all(frame: Frame, text: Any, pattern: Any, limit: Any = -1) -> list[str]:
    """``s.findAll(re[, n])``: successive non-overlapping matches, at most ``n`` when
    ``n >= 0``; an empty match right after a match is skipped (Go's rule)."""
    if type(text) is not str or type(pattern) is not str or type(limit) is not int:
        raise no_such_overload("findAll", text, pattern, limit)
    _charge_regex(frame, text, pattern)
    found: list[str] = []
    if limit == 0:
        return found
    previous_end = -1
    for match in _pattern(pattern).finditer(text):
        if match.start() == match.end() and match.start() == previous_end:
            continue
        found.append(match.group(0))
        previous_end = match.end()
        if 0 < limit <= len(found):
            break
    return found


def estimate_regex(shapes: list[Shape]) -> tuple[int, Shape]:
    """Upstream: string traversal (0.1 per character) times pattern length (0.25 each)."""
    text, pattern = shapes[0], shapes[1]
    work = cost.multiply(
        cost.factor(text.max_size, cost.STRING_TRAVERSAL),
        cost.factor(pattern.max_size, cost.REGEX_LENGTH),
    )
    return cost.add(1, work), Shape(text.size)


def _estimate_find_all(shapes: list[Shape]) -> tuple[int, Shape]:
    call_cost, _ = estimate_regex(shapes)
    text = shapes[0]
    return call_cost, Shape(text.size, elem=Shape(text.size)) if text.size is not None else UNKNOWN


def register(registry: Registry) -> None:
    registry.define(
        "find",
        [((STRING, STRING), STRING)],
        member=True,
        impl=find,
        receivers=(str,),
        costed=True,
        estimate=estimate_regex,
    )
    registry.define(
        "findAll",
        [((STRING, STRING), list_of(STRING)), ((STRING, STRING, INT), list_of(STRING))],
        member=True,
        impl=find_all,
        receivers=(str,),
        costed=True,
        estimate=_estimate_find_all,
    )
