"""What a command loads: ``--version`` and ``--help`` answer without the models, the
allocator, YAML, gRPC, the Kubernetes client or the agents; each subcommand loads what it
uses. Checked in a fresh interpreter (this one has loaded everything already)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Modules (and their submodules) that only a subcommand's work needs.
HEAVY = (
    "pydantic",
    "yaml",
    "grpc",
    "kubernetes",
    "prometheus_client",
    "api.resource_v1",
    "api.validation",
    "dra_driver.allocator",
    "dra_driver.cel",
    "dra_driver.manifests",
    "kubelet_plugin",
    "controller",
    "agent_kit",
)

_PROBE = """
import json, sys
from dra_cli.main import {entry} as entry
sys.argv = {argv!r}
try:
    entry() if {kubectl} else entry(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_by(argv: list[str], *, kubectl: bool = False) -> set[str]:
    """The modules loaded once the command line ran with ``argv``."""
    entry = "kubectl_main" if kubectl else "main"
    code = _PROBE.format(entry=entry, argv=["prog", *argv], kubectl=kubectl)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def heavy_among(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize(
    ("argv", "kubectl"),
    [(["--version"], False), (["--help"], False), (["--help"], True), (["--version"], True)],
    ids=[
        "dra-driver --version",
        "dra-driver --help",
        "kubectl dra --help",
        "kubectl dra --version",
    ],
)
def test_version_and_help_load_nothing_heavy(argv: list[str], kubectl: bool) -> None:
    assert heavy_among(loaded_by(argv, kubectl=kubectl)) == []


def test_allocate_help_loads_nothing_heavy() -> None:
    """The policy names its flags offer come from :mod:`dra_driver.policy_names`, not the
    allocator, so building ``allocate``'s flags (and thus starting to read its files in a
    second process) waits for no model."""
    loaded = loaded_by(["allocate", "--help"])
    assert "dra_driver.policy_names" in loaded
    assert heavy_among(loaded) == []


def test_the_probe_sees_what_a_subcommand_loads(tmp_path: Path) -> None:
    """The same probe on ``allocate -f``: the models and the allocator are loaded (a probe
    that saw nothing would make the tests above pass always)."""
    manifest = tmp_path / "class.yaml"
    manifest.write_text(
        "apiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {name: gpu}\nspec: {}\n"
    )
    loaded = loaded_by(["allocate", "-f", str(manifest)])
    assert {"dra_driver.allocator", "api.resource_v1", "dra_driver.manifests"} <= loaded
    assert "kubelet_plugin" not in loaded
    assert "kubernetes" not in loaded


def test_an_agent_subcommand_help_loads_that_agent_only() -> None:
    loaded = loaded_by(["controller", "--help"])
    assert "controller.settings" in loaded
    assert not any(m == "kubelet_plugin" or m.startswith("kubelet_plugin.") for m in loaded)
