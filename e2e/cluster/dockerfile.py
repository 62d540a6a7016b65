"""What deploy/Dockerfile says, read from its text, and the driver image's cache key.

The driver image build (:mod:`e2e.cluster.driver_image`) takes from here the
paths the Dockerfile copies (its build context, and what the key hashes), the
config its final stage declares (checked against the built image) and the
distribution's requirements (the wheels it needs). Pure functions: no podman.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from e2e.cluster.errors import ClusterError

__all__ = [
    "DOCKERFILE",
    "REPOSITORY",
    "ImageConfig",
    "check_image_config",
    "copied_sources",
    "dockerfile_config",
    "dockerfile_instructions",
    "files_under",
    "image_reference",
    "input_digest",
    "requirements",
]

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
DOCKERFILE: Final = REPO_ROOT / "deploy" / "Dockerfile"
REPOSITORY: Final = "docker.io/local/dra-driver"
"""Where the image goes in containerd; the tag is ``<version>-<key>``, never ``latest``."""


def dockerfile_instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: continuation lines joined, comments dropped.

    Raises ClusterError when the text ends inside a continued line (a build
    would fail on it).
    """
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full, pending = (pending + line).strip(), ""
        word, _, rest = full.partition(" ")
        result.append((word.upper(), rest.strip()))
    if pending:
        raise ClusterError(f"Dockerfile ends inside a continued line: {pending.strip()!r}")
    return result


def copied_sources(dockerfile: str) -> tuple[str, ...]:
    """The build-context paths the Dockerfile's COPY instructions read, in order.

    ``COPY --from=<stage>`` reads another stage, not the context, and is left
    out; the last word of a COPY is its destination. A directory source ends
    with ``/`` as the Dockerfile writes it.
    """
    sources: list[str] = []
    for word, rest in dockerfile_instructions(dockerfile):
        if word != "COPY":
            continue
        args = shlex.split(rest)
        if any(a.startswith("--from") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        sources += [p for p in paths[:-1] if p not in sources]
    return tuple(sources)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What the Dockerfile's final stage declares about the image it makes."""

    env: Mapping[str, str]
    """ENV of the final stage, ``${...}`` left as written."""
    user: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    labels: Mapping[str, str]


def _pairs(rest: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(rest) if "=" in word)


def dockerfile_config(dockerfile: str) -> ImageConfig:
    """The ENV, USER, ENTRYPOINT, CMD and LABELs of the Dockerfile's last stage.

    Only the forms the project's Dockerfile uses are read: ``KEY=value``
    pairs, and ENTRYPOINT/CMD in JSON (exec) form; a shell form is an error.
    """
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    user = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    for word, rest in dockerfile_instructions(dockerfile):
        if word == "FROM":
            env, labels, user, entrypoint, cmd = {}, {}, "", (), ()
        elif word == "ENV":
            env.update(_pairs(rest))
        elif word == "LABEL":
            labels.update(_pairs(rest))
        elif word == "USER":
            user = rest
        elif word in ("ENTRYPOINT", "CMD"):
            try:
                value = tuple(str(v) for v in json.loads(rest))
            except ValueError:
                raise ClusterError(
                    f"{DOCKERFILE}: {word} {rest}: only the exec form ([...]) is understood"
                ) from None
            if word == "ENTRYPOINT":
                entrypoint = value
            else:
                cmd = value
    return ImageConfig(env, user, entrypoint, cmd, labels)


def check_image_config(
    declared: ImageConfig, built: Mapping[str, object], *, version: str, revision: str
) -> list[str]:
    """How the built image's config (``podman inspect``'s ``.Config``) differs from the
    Dockerfile's declaration, with ARGs substituted; empty when it matches.

    An ENV whose declared value refers to another variable (``PATH=/opt/x/bin:${PATH}``)
    must start with the part before the reference.
    """
    problems: list[str] = []
    args = {"VERSION": version, "GIT_REVISION": revision}

    def expand(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), value)

    raw_env = built.get("Env") or []
    env = dict(str(e).split("=", 1) for e in raw_env) if isinstance(raw_env, list) else {}
    for name, value in declared.env.items():
        want = expand(value)
        have = env.get(name)
        prefix = want.split("${", 1)[0]
        if have is None or ("${" in want and not have.startswith(prefix)):
            problems.append(f"ENV {name}: declared {value!r}, image has {have!r}")
        elif "${" not in want and have != want:
            problems.append(f"ENV {name}: declared {want!r}, image has {have!r}")
    if built.get("User") != declared.user:
        problems.append(f"USER: declared {declared.user!r}, image has {built.get('User')!r}")
    for field, want_list in (("Entrypoint", declared.entrypoint), ("Cmd", declared.cmd)):
        have_list = built.get(field) or []
        if list(want_list) != have_list:
            problems.append(f"{field}: declared {list(want_list)}, image has {have_list}")
    labels = built.get("Labels") or {}
    for name, value in declared.labels.items():
        have = labels.get(name) if isinstance(labels, dict) else None
        if have != expand(value):
            problems.append(f"LABEL {name}: declared {expand(value)!r}, image has {have!r}")
    return problems


def requirements(pyproject: str) -> list[str]:
    """The distribution's dependencies and its build-system requirements, as written."""
    data = tomllib.loads(pyproject)
    deps = [str(d) for d in data["project"].get("dependencies", [])]
    build = [str(r) for r in data.get("build-system", {}).get("requires", [])]
    return build + deps


def files_under(root: Path, source: str) -> list[Path]:
    path = root / source.rstrip("/")
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ClusterError(f"{DOCKERFILE}: COPY {source}: {path} does not exist")
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def input_digest(root: Path, sources: Iterable[str], extra: Mapping[str, str]) -> str:
    """sha256 over the files below ``sources`` (paths relative to ``root``, and contents)
    and the ``extra`` facts (name, value): the image's cache key.

    Compiled bytecode and ``__pycache__`` are left out: they are not the source.
    """
    digest = hashlib.sha256()
    for name, value in sorted(extra.items()):
        digest.update(f"fact {name}={value}\0".encode())
    for source in sources:
        for path in files_under(root, source):
            digest.update(f"file {path.relative_to(root)}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode())
    return digest.hexdigest()


def image_reference(version: str, key: str) -> str:
    """``docker.io/local/dra-driver:<version>-<first 12 of key>``."""
    return f"{REPOSITORY}:{version}-{key[:12]}"
