"""deploy/Dockerfile, checked from its text (the cluster tests build it with podman, offline:
e2e/cluster/driver_image.py; this tier needs no container engine).

What a build would trip over or get wrong is checked from the text: every path a COPY takes
from the build context exists and together they hold the whole distribution, the base image
is pinned by digest, the entry point is the ``dra-driver`` console script (resolving to
``dra_cli.main:console_main``), the runtime user is not root, and the git revision reaches
``dra-driver --version``.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from pathlib import Path

import pytest

from dra_cli.main import REVISION_ENV, version_text
from dra_driver import __version__
from e2e.cluster import ClusterError
from e2e.cluster.driver_image import copied_sources, dockerfile_instructions

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PINNED_BASE = re.compile(r"^python:3\.11-slim@sha256:[0-9a-f]{64}$")


INSTRUCTIONS = dockerfile_instructions(DOCKERFILE.read_text())


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in INSTRUCTIONS:
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _global_args() -> dict[str, str]:
    args: dict[str, str] = {}
    for keyword, rest in INSTRUCTIONS:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def test_the_base_image_is_pinned_by_digest() -> None:
    args = _global_args()
    stage_names: set[str] = set()
    for keyword, rest in INSTRUCTIONS:
        if keyword != "FROM":
            continue
        words = rest.split()
        image = words[0]
        if image in stage_names:
            continue
        match = re.fullmatch(r"\$\{(\w+)\}", image)
        resolved = args.get(match.group(1), "") if match else image
        assert PINNED_BASE.match(resolved), f"FROM {image} is {resolved!r}, not pinned by digest"
        if len(words) == 3 and words[1].upper() == "AS":
            stage_names.add(words[2])
    assert len(_stages()) >= 2, "a build stage and a runtime stage"


def test_every_path_copied_from_the_context_exists() -> None:
    assert not [k for k, _ in INSTRUCTIONS if k == "ADD"], "ADD: use COPY"
    copied = copied_sources(DOCKERFILE.read_text())
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the build context"


def test_the_copied_paths_hold_the_whole_distribution() -> None:
    copied = {source.rstrip("/") for source in copied_sources(DOCKERFILE.read_text())}
    packages = {
        pattern.rstrip("*")
        for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    needed = packages | {"pyproject.toml", PYPROJECT["project"]["readme"]}
    assert needed <= copied, f"the build stage lacks {sorted(needed - copied)}"


def test_the_entry_point_is_the_dra_driver_command() -> None:
    (entrypoint,) = [rest for keyword, rest in _stages()[-1] if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["dra-driver"]
    target = PYPROJECT["project"]["scripts"]["dra-driver"]
    assert target == "dra_cli.main:console_main"
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_the_runtime_user_is_not_root() -> None:
    users = [rest for keyword, rest in _stages()[-1] if keyword == "USER"]
    assert users, "the runtime stage sets no USER: the controller would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("0", "root") and group not in ("0", "root")
    # The chart's controller runs as the same user (runAsUser), the kubelet plugin as root.
    assert user == "65532"


def test_the_revision_reaches_dra_driver_version() -> None:
    runtime = _stages()[-1]
    assert ("ARG", "GIT_REVISION=unknown") in runtime
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert f"{REVISION_ENV}=${{GIT_REVISION}}" in env.split()
    assert version_text({REVISION_ENV: "0123abc"}) == f"{__version__} (revision 0123abc)"
    assert version_text({}) == f"{__version__} (revision unknown)"


def test_the_version_label_is_the_distribution_version() -> None:
    runtime = _stages()[-1]
    assert ("ARG", f"VERSION={PYPROJECT['project']['version']}") in runtime


@pytest.mark.parametrize(
    "text",
    ["FROM a\nRUN x \\\n", "FROM a\nCOPY b \\\n"],
)
def test_a_dockerfile_ending_in_a_continuation_is_refused(text: str) -> None:
    with pytest.raises(ClusterError, match="continued line"):
        dockerfile_instructions(text)
