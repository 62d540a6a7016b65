"""The house plan holds: the import contracts have no exceptions, and they catch a wrong import.

docs/architecture.md draws the layers: ``dra_cli`` > ``controller | kubelet_plugin`` >
``agent_kit`` > ``dra_driver`` > ``api``. The contracts in pyproject.toml state them for
import-linter (``make lint`` runs it); these tests check the contracts themselves.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "dra_driver", "agent_kit", "controller", "kubelet_plugin", "dra_cli")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def test_no_contract_has_an_exception() -> None:
    contracts = _contracts()
    assert contracts
    assert [c["name"] for c in contracts if "ignore_imports" in c] == []


def test_the_layers_are_the_house_plan() -> None:
    layers = [c for c in _contracts() if c["type"] == "layers"]
    assert [c["layers"] for c in layers] == [
        ["dra_cli", "controller | kubelet_plugin", "agent_kit", "dra_driver", "api"]
    ]
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert sorted(config["tool"]["importlinter"]["root_packages"]) == sorted(PACKAGES)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and the contracts, free to be edited."""
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
    )


def test_the_copy_passes_as_the_repository_does(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "message"),
    [
        (
            "dra_driver/slices.py",
            "from controller.settings import add_arguments",
            "Layers: command line, agents, agent toolkit, pure core, API types",
            "dra_driver is not allowed to import controller",
        ),
        (
            "agent_kit/flags.py",
            "import kubelet_plugin.settings",
            "Layers: command line, agents, agent toolkit, pure core, API types",
            "agent_kit is not allowed to import kubelet_plugin",
        ),
        (
            "controller/scheduling.py",
            "from kubelet_plugin.socket_paths import socket_dir",
            "Layers: command line, agents, agent toolkit, pure core, API types",
            "controller is not allowed to import kubelet_plugin",
        ),
        (
            "api/limits.py",
            "import grpc",
            "The core and the types do no cluster, RPC or hardware I/O",
            "api is not allowed to import grpc",
        ),
        (
            "controller/pools.py",
            "from kubernetes import client",
            "One API client: only agent_kit.kube imports the official Kubernetes client",
            "controller is not allowed to import kubernetes",
        ),
    ],
)
def test_a_wrong_import_breaks_its_contract(
    tree: Path, module: str, line: str, contract: str, message: str
) -> None:
    with (tree / module).open("a") as source:
        source.write(f"\n{line}  # a wrong import, on purpose\n")

    result = _lint(tree)

    assert result.returncode == 1, result.stdout + result.stderr
    broken = " ".join(result.stdout.split("Broken contracts", 1)[1].split())
    assert contract in broken
    assert message in broken
