"""Reading manifest files into raw documents: multi-document YAML, JSON, ``kind: List``.

The first half of :mod:`dra_driver.manifests`, kept apart because it needs no models: it
imports no pydantic, allocator or CEL, so the offline tools can read their input while
those load (:mod:`dra_cli.prefetch`). Every error is an
:class:`~api.errors.InvalidInputError` naming the file (and, for a document past a bound,
the object).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from api import limits
from api.errors import FieldError, InvalidInputError
from dra_driver.manifest_fast import fast_load_all
from dra_driver.manifest_files import manifest_files
from dra_driver.manifest_yaml import ManifestBoundError, ManifestLoader

__all__ = ["Document", "read_documents", "split_documents"]


@dataclass(frozen=True)
class Document:
    """One object's raw data and where it came from (``file.yaml#2``: third document)."""

    source: str
    data: Mapping[str, Any]


def split_documents(text: str, source: str) -> list[Document]:
    """Parse YAML (one or more documents) or JSON; flatten ``kind: List``.

    Empty documents are skipped. Raises InvalidInputError naming ``source`` when
    the text does not parse, a document is not an object, or a document is past a bound
    the API server's decoder sets (size with aliases expanded, nesting depth; see
    :func:`check_bounds`), before that document is built.
    """
    if len(text) > limits.MAX_MANIFEST_BYTES:
        raise InvalidInputError(
            f"too large: {len(text)} characters, at most {limits.MAX_MANIFEST_BYTES} read",
            source=source,
        )
    loaded = fast_load_all(text)
    if loaded is None:
        loaded = _load_all(text, source)
    documents: list[Document] = []
    for index, data in enumerate(loaded):
        if data is None:
            continue
        label = f"{source}#{index}" if len(loaded) > 1 else source
        documents.extend(_flatten(data, label))
    return documents


def _load_all(text: str, source: str) -> list[Any]:
    """Every document of ``text`` read by ManifestLoader; its errors as InvalidInputError."""
    loaded: list[Any] = []
    try:
        # The stubs name only PyYAML's own loader classes.
        for data in yaml.load_all(text, Loader=ManifestLoader):  # type: ignore[arg-type]
            loaded.append(data)
    except ManifestBoundError as exc:
        label = f"{source}#{len(loaded)}" if loaded else source
        raise InvalidInputError(str(exc), source=label, obj=exc.obj) from None
    except RecursionError:
        # Only the pure-Python composer recurses; libyaml stops at its own depth bound.
        raise InvalidInputError(
            f"nested deeper than {limits.MAX_NESTING_DEPTH} levels", source=source
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInputError(f"not valid YAML or JSON{where}: {problem}", source=source) from exc
    return loaded


def _flatten(data: Any, label: str) -> Iterator[Document]:
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"a document must be an object with apiVersion and kind, not {type(data).__name__}",
            source=label,
        )
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in data:
        items = data.get("items")
        if not isinstance(items, list):
            raise InvalidInputError(
                "", source=label, errors=[FieldError("items", "must be a list of objects")]
            )
        for position, item in enumerate(items):
            yield from _flatten(item, f"{label} items[{position}]")
        return
    yield Document(label, data)


def _read_text(file: Path) -> str:
    """The file's text, at most one character past ``limits.MAX_MANIFEST_BYTES`` (so that
    :func:`split_documents` refuses it without reading a file of any size whole)."""
    with file.open(encoding="utf-8") as stream:
        return stream.read(limits.MAX_MANIFEST_BYTES + 1)


def read_documents(paths: Sequence[str], stdin: TextIO) -> list[Document]:
    """Every document of every path (``-``: ``stdin``); directories contribute their
    manifest files (:func:`~dra_driver.manifest_files.manifest_files`)."""
    documents: list[Document] = []
    for path in paths:
        if path == "-":
            documents.extend(split_documents(stdin.read(limits.MAX_MANIFEST_BYTES + 1), "<stdin>"))
            continue
        for file in manifest_files(path):
            try:
                text = _read_text(file)
            except OSError as exc:
                raise InvalidInputError(f"cannot read: {exc.strerror}", source=str(file)) from exc
            except UnicodeDecodeError as exc:
                raise InvalidInputError("not UTF-8 text", source=str(file)) from exc
            documents.extend(split_documents(text, str(file)))
    return documents
