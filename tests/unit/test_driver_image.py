"""The pure parts of the driver image build (e2e/cluster/dockerfile.py and image_base.py,
driven by driver_image.py): what it reads from the Dockerfile, how it checks the built
image against it, its cache key, and the apt and pip inputs of the base.

The build itself (podman, apt, pip) runs in the cluster tests.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from e2e.cluster import ClusterError
from e2e.cluster.dockerfile import (
    REPOSITORY,
    check_image_config,
    copied_sources,
    dockerfile_config,
    dockerfile_instructions,
    image_reference,
    input_digest,
    requirements,
)
from e2e.cluster.image_base import manylinux_platforms, parse_simulated_install

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _built_config(**changes: object) -> dict[str, object]:
    """What `podman inspect` reports for an image built right from the Dockerfile."""
    config: dict[str, object] = {
        "User": "65532:65532",
        "Env": [
            "PATH=/opt/dra-driver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
            f"DRA_DRIVER_GIT_REVISION={REVISION}",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
            "LANG=C.UTF-8",
        ],
        "Entrypoint": ["dra-driver"],
        "Cmd": ["--help"],
        "Labels": {
            "org.opencontainers.image.title": "dra-driver",
            "org.opencontainers.image.description": "Kubernetes DRA driver for GPUs",
            "org.opencontainers.image.version": "0.1.0",
            "org.opencontainers.image.revision": REVISION,
            "org.opencontainers.image.licenses": "Apache-2.0",
            "io.buildah.version": "1.28.2",
        },
    }
    config.update(changes)
    return config


def test_the_copied_sources_are_the_distributions_and_nothing_from_another_stage() -> None:
    assert copied_sources(DOCKERFILE) == (
        "pyproject.toml",
        "README.md",
        "api/",
        "dra_driver/",
        "agent_kit/",
        "dra_cli/",
        "controller/",
        "kubelet_plugin/",
    )


def test_copy_sources_skip_other_stages_and_options_and_join_continued_lines() -> None:
    text = (
        "FROM a AS build\n"
        "COPY --chown=1:1 x.txt \\\n"
        "     y/ /dst/\n"
        "# COPY commented.txt /\n"
        "FROM b\n"
        "COPY --from=build /opt/v /opt/v\n"
        "COPY x.txt z.txt /again/\n"
    )
    assert copied_sources(text) == ("x.txt", "y/", "z.txt")


def test_a_dockerfile_ending_in_a_continuation_is_refused() -> None:
    with pytest.raises(ClusterError, match="continued line"):
        dockerfile_instructions("FROM a\nRUN x \\\n")


def test_the_config_is_the_final_stages() -> None:
    config = dockerfile_config(DOCKERFILE)
    assert config.user == "65532:65532"
    assert config.entrypoint == ("dra-driver",)
    assert config.cmd == ("--help",)
    # The virtual environment the build stage makes comes first on PATH.
    assert config.env["PATH"] == "/opt/dra-driver/bin:${PATH}"
    assert config.env["DRA_DRIVER_GIT_REVISION"] == "${GIT_REVISION}"
    # The build stage's pip settings stay there.
    assert not [name for name in config.env if name.startswith("PIP_")]
    assert config.labels["org.opencontainers.image.revision"] == "${GIT_REVISION}"


def test_the_venv_the_build_stage_makes_is_the_one_the_runtime_stage_copies() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    assert ("RUN", "python -m venv /opt/dra-driver") in instructions
    assert ("COPY", "--from=build /opt/dra-driver /opt/dra-driver") in instructions


def test_an_image_built_from_the_dockerfile_matches_it() -> None:
    declared = dockerfile_config(DOCKERFILE)
    assert check_image_config(declared, _built_config(), version="0.1.0", revision=REVISION) == []


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"User": ""}, "USER: declared '65532:65532', image has ''"),
        ({"Entrypoint": ["python3"]}, "Entrypoint: declared ['dra-driver']"),
        ({"Cmd": None}, "Cmd: declared ['--help'], image has []"),
        ({"Env": ["PATH=/usr/bin"]}, "ENV PATH: declared '/opt/dra-driver/bin:${PATH}'"),
        (
            {"Env": ["PATH=/opt/dra-driver/bin", "DRA_DRIVER_GIT_REVISION=unknown"]},
            f"ENV DRA_DRIVER_GIT_REVISION: declared '{REVISION}', image has 'unknown'",
        ),
        ({"Labels": {}}, "LABEL org.opencontainers.image.version: declared '0.1.0'"),
    ],
)
def test_an_image_that_differs_from_the_dockerfile_is_named_so(
    changes: dict[str, object], problem: str
) -> None:
    declared = dockerfile_config(DOCKERFILE)
    found = check_image_config(
        declared, _built_config(**changes), version="0.1.0", revision=REVISION
    )
    assert any(p.startswith(problem) for p in found), found


def test_shell_form_entrypoints_are_refused_by_name() -> None:
    with pytest.raises(ClusterError, match="ENTRYPOINT dra-driver: only the exec form"):
        dockerfile_config("FROM a\nENTRYPOINT dra-driver\n")


def test_the_simulated_install_lists_packages_and_versions_in_order() -> None:
    output = (
        "Reading package lists...\n"
        "Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\n"
        "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []\n"
        "Inst python3.11 [3.11.1-1] (3.11.2-6+deb12u8 Debian:12.15/oldstable [amd64])\n"
        "Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])\n"
    )
    assert parse_simulated_install(output) == [
        ("gcc-12-base", "12.2.0-14+deb12u1"),
        ("libc6", "2.36-9+deb12u14"),
        ("python3.11", "3.11.2-6+deb12u8"),
    ]


def test_the_wheel_platforms_run_down_from_debian_12s_glibc_to_manylinux2014() -> None:
    platforms = manylinux_platforms((2, 36))
    assert platforms[0] == "manylinux_2_36_x86_64"
    assert platforms[-1] == "manylinux_2_17_x86_64"  # manylinux2014
    assert len(platforms) == 20


def test_the_requirements_are_the_build_backend_and_the_dependencies() -> None:
    reqs = requirements(PYPROJECT)
    data = tomllib.loads(PYPROJECT)
    assert reqs == data["build-system"]["requires"] + data["project"]["dependencies"]
    assert any(r.startswith("setuptools") for r in reqs)


def _tree(root: Path) -> None:
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("A = 1\n")
    (root / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (root / "top.toml").write_text("x = 1\n")


def test_the_key_is_stable_and_follows_sources_and_facts_but_not_bytecode(
    tmp_path: Path,
) -> None:
    _tree(tmp_path)
    sources = ("top.toml", "pkg/")
    facts = {"revision": REVISION}
    key = input_digest(tmp_path, sources, facts)
    assert key == input_digest(tmp_path, sources, dict(facts))
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\1")
    (tmp_path / "pkg" / "b.pyc").write_bytes(b"\1")
    assert input_digest(tmp_path, sources, facts) == key
    assert input_digest(tmp_path, sources, {"revision": "other"}) != key
    (tmp_path / "pkg" / "a.py").write_text("A = 2\n")
    changed = input_digest(tmp_path, sources, facts)
    assert changed != key
    (tmp_path / "pkg" / "a.py").rename(tmp_path / "pkg" / "c.py")
    assert input_digest(tmp_path, sources, facts) != changed


def test_a_copied_path_that_does_not_exist_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="COPY missing/"):
        input_digest(tmp_path, ("missing/",), {})


def test_the_reference_is_local_versioned_and_keyed_never_latest() -> None:
    reference = image_reference("0.1.0", "1e8959bbb010e55e" + "0" * 48)
    assert reference == f"{REPOSITORY}:0.1.0-1e8959bbb010"
    assert reference.startswith("docker.io/local/")
