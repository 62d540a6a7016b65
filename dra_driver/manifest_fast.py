"""The fast way to read a manifest file: yaml_rs (a YAML parser in Rust), used only where
its result is provably the one :class:`~dra_driver.manifest_yaml.ManifestLoader` gives.

:func:`fast_load_all` returns the file's documents, or ``None``, and then the caller reads
the file with ManifestLoader as before. So every error (with its line and column), every
bound of :func:`~dra_driver.manifest_yaml.check_bounds` and every YAML 1.1 reading stays
ManifestLoader's, and yaml_rs only ever speeds up a file both read alike. It gives up when:

- yaml_rs raises anything (a syntax error, a duplicate key, an alias:
  aliases are refused outright, so no expansion needs measuring), or a document is not a
  mapping;
- the text has what yaml_rs reads differently or cannot be checked: a tag (``!``, which
  yaml_rs ignores where it does not know it), a directive (``%``), a document end (``...``),
  a line break other than ``\\n`` (YAML 1.1 also breaks lines at U+0085, U+2028, U+2029), a
  byte-order mark, or a character libyaml refuses;
- a document could be past a bound: more than a quarter of ``limits.MAX_OBJECT_BYTES``
  (its JSON measure is at most four times its text), or nested near
  ``limits.MAX_NESTING_DEPTH``; a document that yaml_rs might nest too deep for its own
  stack (about 20,000 levels crash it) is never handed to it: every level needs one of
  ``:-?[{`` or, in block style, more indentation, and both are counted first;
- a key is not a string, or a string (key or value) is one that ManifestLoader would read
  as something else if it were plain while yaml_rs reads it as a string (YAML 1.1's
  ``yes``/``no``/``on``/``off``/``y``/``n``, a timestamp, ``<<``): yaml_rs cannot say
  whether it was quoted;
- a number: yaml_rs follows YAML 1.2 (``1e3``, ``0777``, ``0o17``, ``+.5``...), so every
  distinct plain token that could be a number (a run of ``[\\w.+-]`` starting with a sign,
  dot or digit, where a scalar can start and end) is read by both and must give the same
  type and value.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import yaml_rs

from api import limits
from dra_driver.manifest_yaml import plain_scalar, plain_tag

__all__ = ["fast_load_all"]

_STR: Final = "tag:yaml.org,2002:str"
#: A document separator line (YAML forbids it inside any scalar, so it always splits).
_SEPARATOR: Final = re.compile(r"^---(?=[ \t\n]|$)", re.MULTILINE)
#: A tag where a node can start: a line's start, after ``: ``, ``- ``, ``? ``, ``[``, ``{``, ``,``.
_TAG: Final = re.compile(r"(?:^[ \t]*|[:?-][ \t]+|[\[{,][ \t]*)!", re.MULTILINE)
#: libyaml's printable characters (its reader refuses others), less the extra line breaks.
_REFUSED: Final = re.compile(
    "[^\t\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
#: Any plain token that may be a number, where a plain scalar can start and end.
_NUMBER_TOKEN: Final = re.compile(r"[-+.\d](?<![^\s\[{,:][-+.\d])[\w.+-]*(?=[\s,\]}]|:\s|:$|$)")
#: Nesting levels under which yaml_rs is safe (it parses thousands; this is far below).
_SAFE_DEPTH: Final = 2_000
_MAX_PIECE: Final = (limits.MAX_OBJECT_BYTES - 16) // 4
_CACHE_BOUND: Final = 1 << 16
#: Text to whether it differs (:func:`_differs`) / a token to whether both read it alike.
_differs_cache: dict[str, bool] = {}
_token_cache: dict[str, bool] = {}


class _FallbackError(Exception):
    """The file goes to ManifestLoader."""


def fast_load_all(text: str) -> list[Any] | None:
    """The documents of ``text`` as ManifestLoader builds them (``None`` for an empty one),
    or ``None`` where yaml_rs cannot be shown to agree (see the module's docstring)."""
    if not _plain_text(text):
        return None
    reader = _Reader()
    pieces = _SEPARATOR.split(text)
    try:
        documents = [reader.load(piece) for piece in pieces]
    except _FallbackError:
        return None
    if len(pieces) > 1 and documents[0] is None:
        # Before the first separator: a document only if it holds something (even a null).
        if any(
            line.strip() and not line.lstrip().startswith("#") for line in pieces[0].split("\n")
        ):
            return None
        del documents[0]
    if reader.numbers and not _numbers_agree(text):
        return None
    return documents


def _plain_text(text: str) -> bool:
    if "!" in text and _TAG.search(text):
        return False
    if text.startswith("%") or "\n%" in text or "\n..." in text or "\r" in text:
        return False
    return _REFUSED.search(text) is None


def _nesting_bound(piece: str) -> int:
    """An upper bound of the nesting depth: each collection level needs an indicator."""
    bound = sum(piece.count(c) for c in ":-?[{") + 1
    if bound < _SAFE_DEPTH:
        return bound
    # Block levels nest by indentation (at most two per column: a sequence may sit at its
    # key's column); flow levels by brackets.
    widest = max(map(len, piece.split("\n")), default=0)
    return 2 * (widest + 1) + piece.count("[") + piece.count("{") + 1


class _Reader:
    """One file's documents through yaml_rs, each checked (:meth:`check`)."""

    def __init__(self) -> None:
        self.numbers = False
        """Whether a document holds an int or a float (then its tokens are compared)."""

    def load(self, piece: str) -> Any:
        if len(piece) > _MAX_PIECE or _nesting_bound(piece) >= _SAFE_DEPTH:
            raise _FallbackError
        try:
            data = yaml_rs.loads(
                piece,
                parse_datetime=False,
                alias_limits=yaml_rs.AliasLimits(max_total_replayed_events=0),
                duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.Error,
            )
        except Exception:  # any refusal: ManifestLoader says why
            raise _FallbackError from None
        if data is None:
            return None
        if data.__class__ is not dict:
            raise _FallbackError
        self.check(data, 1)
        return data

    def check(self, node: Any, depth: int) -> None:
        """Raise _FallbackError where ManifestLoader's reading could differ (see the module)."""
        if depth >= limits.MAX_NESTING_DEPTH:
            raise _FallbackError
        known = _differs_cache.get
        if node.__class__ is dict:
            for key in node:
                if key.__class__ is not str or (known(key) is not False and _differs(key)):
                    raise _FallbackError
            values: Any = node.values()
        else:
            values = node
        for value in values:
            kind = value.__class__
            if kind is str:
                # A cached False is the common answer: one lookup, no call.
                if known(value) is not False and _differs(value):
                    raise _FallbackError
            elif kind is dict or kind is list:
                self.check(value, depth + 1)
            elif kind is int or kind is float:
                self.numbers = True


def _differs(text: str) -> bool:
    """A string yaml_rs keeps a string when plain, which ManifestLoader reads otherwise."""
    known = _differs_cache.get(text)
    if known is None:
        known = False
        if plain_tag(text) != _STR:
            try:
                theirs = yaml_rs.loads(f"k: {text}", parse_datetime=False)
            except Exception:
                theirs = None
            known = not isinstance(theirs, dict) or isinstance(theirs.get("k"), str)
        if len(_differs_cache) < _CACHE_BOUND:
            _differs_cache[text] = known
    return known


def _numbers_agree(text: str) -> bool:
    return all(_token_agrees(token) for token in set(_NUMBER_TOKEN.findall(text)))


def _token_agrees(token: str) -> bool:
    known = _token_cache.get(token)
    if known is None:
        known = _same(_read(lambda: plain_scalar(token)), _read(lambda: _theirs(token)))
        if len(_token_cache) < _CACHE_BOUND:
            _token_cache[token] = known
    return known


def _theirs(token: str) -> Any:
    data = yaml_rs.loads(f"k: {token}", parse_datetime=False)
    if not isinstance(data, dict):
        raise TypeError(token)
    return data["k"]


def _read(read: Any) -> tuple[bool, Any]:
    try:
        return True, read()
    except Exception:  # both refusing is agreement
        return False, None


def _same(ours: tuple[bool, Any], theirs: tuple[bool, Any]) -> bool:
    (ok, mine), (their_ok, their) = ours, theirs
    if ok != their_ok or mine.__class__ is not their.__class__:
        return False
    if isinstance(mine, float):
        return (math.isnan(mine) and math.isnan(their)) or repr(mine) == repr(their)
    return bool(mine == their)
