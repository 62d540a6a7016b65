"""Tokens of CEL source text (the CEL language definition's lexical grammar).

Numbers: ``123``, ``0x7f``, ``1u``, ``1.5``, ``.5``, ``1e3``. Strings: single,
double or triple quotes, ``r``/``R`` raw prefix, ``b``/``B`` bytes prefix, the
escapes ``\\a \\b \\f \\n \\r \\t \\v \\\\ \\' \\" \\` \\?``, ``\\xHH``, ``\\ooo``,
``\\uHHHH``, ``\\UHHHHHHHH`` (the last two not in bytes). ``//`` starts a comment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from dra_driver.cel.runtime import UInt


class SyntaxProblem(Exception):  # noqa: N818 - internal, becomes a CelCompileError
    """A lexical or syntax error at ``offset`` in the source."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Token:
    """``kind`` is ``int uint double string bytes ident escident eof`` or the punctuation/keyword
    text itself (``==``, ``(``, ``in``, ``true``...)."""

    kind: str
    text: str
    offset: int
    value: object = None


KEYWORDS: Final = frozenset({"true", "false", "null", "in"})
RESERVED: Final = frozenset(
    {
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    }
)
_PUNCTUATION: Final = (
    "==",
    "!=",
    "<=",
    ">=",
    "&&",
    "||",
    "<",
    ">",
    "!",
    "+",
    "-",
    "*",
    "/",
    "%",
    "?",
    ":",
    ".",
    ",",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
)
# Longest operators first, so that "<=" is not read as "<".
_PUNCTUATION_RE: Final = re.compile("|".join(re.escape(p) for p in _PUNCTUATION))
_SKIP: Final = re.compile(r"(?:[ \t\n\r\f]+|//[^\n]*)+")
_NUMBER: Final = re.compile(
    r"(?P<double>\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<hex>0[xX][0-9a-fA-F]+)(?P<hexu>[uU])?"
    r"|(?P<dec>\d+)(?P<decu>[uU])?"
)
_IDENT: Final = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_ESCAPED_IDENT: Final = re.compile(r"`([_a-zA-Z0-9.\-/ ]+)`")
_STRING_PREFIXES: Final = frozenset({"r", "b", "rb", "br"})
_SIMPLE_ESCAPES: Final = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
    "?": "?",
}
UINT64_MAX: Final = 2**64 - 1


def tokenize(text: str) -> list[Token]:
    """All tokens of ``text``, ending with an ``eof`` token; raise SyntaxProblem on bad input."""
    tokens: list[Token] = []
    pos = 0
    end = len(text)
    while True:
        skip = _SKIP.match(text, pos)
        if skip:
            pos = skip.end()
        if pos >= end:
            tokens.append(Token("eof", "<EOF>", end))
            return tokens
        ch = text[pos]
        if ch.isdigit() or (ch == "." and pos + 1 < end and text[pos + 1].isdigit()):
            token, pos = _number(text, pos)
            tokens.append(token)
            continue
        if ch == "_" or (ch.isascii() and ch.isalpha()):
            match = _IDENT.match(text, pos)
            assert match is not None
            word = match.group()
            after = match.end()
            if word.lower() in _STRING_PREFIXES and after < end and text[after] in "'\"":
                token, pos = _string(text, pos, after, word.lower())
                tokens.append(token)
                continue
            kind = word if word in KEYWORDS else "ident"
            tokens.append(Token(kind, word, pos, word))
            pos = after
            continue
        if ch in "'\"":
            token, pos = _string(text, pos, pos, "")
            tokens.append(token)
            continue
        if ch == "`":
            match = _ESCAPED_IDENT.match(text, pos)
            if match is None:
                raise SyntaxProblem("Syntax error: invalid quoted field name", pos)
            tokens.append(Token("escident", match.group(), pos, match.group(1)))
            pos = match.end()
            continue
        punct = _PUNCTUATION_RE.match(text, pos)
        if punct is None:
            raise SyntaxProblem(f"Syntax error: token recognition error at: '{ch}'", pos)
        tokens.append(Token(punct.group(), punct.group(), pos))
        pos = punct.end()


def _number(text: str, pos: int) -> tuple[Token, int]:
    match = _NUMBER.match(text, pos)
    assert match is not None
    raw = match.group()
    if match.group("double") is not None:
        return Token("double", raw, pos, float(raw)), match.end()
    digits = match.group("hex") or match.group("dec")
    unsigned = bool(match.group("hexu") or match.group("decu"))
    value = int(digits, 16) if match.group("hex") else int(digits)
    if unsigned:
        if value > UINT64_MAX:
            raise SyntaxProblem(f"invalid uint literal: {raw}", pos)
        return Token("uint", raw, pos, UInt(value)), match.end()
    # The range check of int literals is the parser's: -9223372036854775808 is valid.
    return Token("int", raw, pos, value), match.end()


def _string(text: str, start: int, quote_at: int, prefix: str) -> tuple[Token, int]:
    raw = "r" in prefix
    is_bytes = "b" in prefix
    quote = text[quote_at]
    delimiter = quote * 3 if text.startswith(quote * 3, quote_at) else quote
    pos = quote_at + len(delimiter)
    end = len(text)
    parts: list[str | bytes] = []
    while True:
        if pos >= end:
            raise SyntaxProblem("Syntax error: unterminated string literal", start)
        if text.startswith(delimiter, pos):
            pos += len(delimiter)
            break
        ch = text[pos]
        if ch in "\r\n" and len(delimiter) == 1:
            raise SyntaxProblem("Syntax error: newline in string literal", start)
        if ch != "\\":
            parts.append(ch)
            pos += 1
            continue
        if raw:
            # A raw string keeps the backslash; it still escapes the quote character.
            nxt = text[pos + 1] if pos + 1 < end else ""
            parts.append("\\" + nxt)
            pos += 2
            continue
        pos = _escape(text, pos, parts, is_bytes)
    source = text[start:pos]
    if is_bytes:
        # Byte escapes (\x, octal) are bytes already; characters are UTF-8 encoded.
        value = b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)
        return Token("bytes", source, start, value), pos
    return Token("string", source, start, "".join(str(p) for p in parts)), pos


def _escape(text: str, pos: int, parts: list[str | bytes], is_bytes: bool) -> int:
    """Decode the escape sequence at ``text[pos]`` (a backslash); return the position after it."""
    nxt = text[pos + 1] if pos + 1 < len(text) else ""
    if nxt in _SIMPLE_ESCAPES:
        parts.append(_SIMPLE_ESCAPES[nxt])
        return pos + 2
    if nxt in "xX":
        digits = text[pos + 2 : pos + 4]
        if len(digits) != 2 or not _is_hex(digits):
            raise SyntaxProblem("Syntax error: invalid \\x escape sequence", pos)
        code = int(digits, 16)
        parts.append(bytes([code]) if is_bytes else chr(code))
        return pos + 4
    if nxt in "01234567":
        digits = text[pos + 1 : pos + 4]
        if len(digits) != 3 or any(c not in "01234567" for c in digits):
            raise SyntaxProblem("Syntax error: invalid octal escape sequence", pos)
        code = int(digits, 8)
        if code > 0xFF:
            raise SyntaxProblem("Syntax error: octal escape out of range", pos)
        parts.append(bytes([code]) if is_bytes else chr(code))
        return pos + 4
    if nxt in "uU":
        if is_bytes:
            raise SyntaxProblem("Syntax error: unicode escape in a bytes literal", pos)
        width = 4 if nxt == "u" else 8
        digits = text[pos + 2 : pos + 2 + width]
        if len(digits) != width or not _is_hex(digits):
            raise SyntaxProblem(f"Syntax error: invalid \\{nxt} escape sequence", pos)
        code = int(digits, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise SyntaxProblem("Syntax error: invalid unicode code point", pos)
        parts.append(chr(code))
        return pos + 2 + width
    raise SyntaxProblem(f"Syntax error: invalid escape sequence '\\{nxt}'", pos)


def _is_hex(digits: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in digits)
