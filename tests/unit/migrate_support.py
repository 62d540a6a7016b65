"""Helpers of the migrate tests: the command run as a user runs it, and its output read back."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from dra_cli.main import main
from dra_driver.manifest_read import split_documents
from dra_driver.manifests import Inventory, load_inventory

FIXTURES = Path(__file__).resolve().parent / "migrate_fixtures"


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def migrate(
    capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    """Run ``dra-driver migrate ARGV``; return the exit code, stdout and stderr."""
    out = io.StringIO()
    code = main(["migrate", *argv], stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue(), capsys.readouterr().err


def documents(text: str) -> list[dict[str, Any]]:
    return [dict(d.data) for d in split_documents(text, "<output>")]


def by_kind(text: str, kind: str) -> dict[str, dict[str, Any]]:
    """The output's objects of ``kind``, by name."""
    return {d["metadata"]["name"]: d for d in documents(text) if d.get("kind") == kind}


def inventory_of(text: str) -> Inventory:
    """The output of ``--part manifests`` as the project's own reading judges it."""
    return load_inventory(split_documents(text, "<output>"))


def limits_of(pod: dict[str, Any]) -> dict[str, Any]:
    limits: dict[str, Any] = pod["spec"]["containers"][0]["resources"]["limits"]
    return limits


def request_of(template: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = template["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    return request
