"""Machine-readable output of the commands: one document as ``-o json`` or ``-o yaml``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = ["write_document"]


def write_document(document: Mapping[str, Any], output: str, out: TextIO) -> None:
    """``document`` on ``out``: YAML (keys in their order) for ``yaml``, else indented JSON
    with a final newline. PyYAML is imported only when asked for, so a JSON answer does
    not pay for it."""
    if output == "yaml":
        import yaml

        yaml.safe_dump(dict(document), out, sort_keys=False)
    else:
        json.dump(document, out, indent=2)
        out.write("\n")
