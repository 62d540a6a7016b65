"""Which files a ``-f`` argument names (a file, or a directory's manifests): apart from the
reader (:mod:`dra_driver.manifest_read`) so that listing them imports no YAML parser."""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["MANIFEST_SUFFIXES", "manifest_files"]

MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")


def manifest_files(path: str) -> list[Path]:
    """The files ``path`` names: itself, or a directory's manifest files (``.yaml``,
    ``.yml``, ``.json``, at any depth), sorted."""
    target = Path(path)
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
    return [target]
