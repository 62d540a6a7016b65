"""What the chart tests share: where the chart and its renderings are, the default rendering
(deploy/manifests/dra-driver.yaml, always present) parsed once, readers of the rendered
objects, and the ``helm`` fixture.

``helm`` is $HELM, else the binary e2e/tools/helm.sh builds from its Go module (minutes,
once; the answer is cached for every module that uses the fixture). Without a helm binary
and no way to build one the tests that need it are skipped, and the skip says why.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelet_plugin import settings as plugin_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "dra-driver"
MANIFESTS = ROOT / "deploy" / "manifests" / "dra-driver.yaml"
MOCK_VALUES = CHART / "ci" / "mock-values.yaml"
CONTROLLER_RBAC = ROOT / "deploy" / "controller" / "rbac.yaml"
HELM_SCRIPT = ROOT / "e2e" / "tools" / "helm.sh"
RELEASE = NAMESPACE = "dra-driver"
DRIVER = "gpu.dra-driver.io"
PLUGIN = "dra-driver-kubelet-plugin"
CONTROLLER = "dra-driver-controller"

Objects = list[dict[str, Any]]


def documents(text: str) -> Objects:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find_one(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def container_of(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


#: The pod IP the tests' kubelet hands the rendered pods (status.podIP).
POD_IP = "10.244.1.7"
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def env_of(container: dict[str, Any], *, pod_ip: str = POD_IP) -> dict[str, str]:
    """The environment as the kubelet makes it: ``status.podIP`` is ``pod_ip``, other
    downward-API variables get a stand-in value, and ``$(NAME)`` in a value is replaced by
    the earlier variable NAME (a reference to no such variable stays as written)."""
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = _REFERENCE.sub(
                lambda ref: env.get(ref.group(1), ref.group(0)), var["value"]
            )
        elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[var["name"]] = pod_ip
        else:
            env[var["name"]] = "from-" + var["name"].lower().replace("_", "-")
    return env


def twins_of(flags: tuple[plugin_settings.Flag, ...]) -> set[str]:
    return {name for flag in flags for name in flag.env}


def rules_of(objects: Objects, kind: str, name: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every combination a role's rules grant."""
    return {
        (group, resource, verb)
        for rule in find_one(objects, kind, name)["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def plugin_settings_of(objects: Objects) -> plugin_settings.Settings:
    env = env_of(container_of(find_one(objects, "DaemonSet", PLUGIN)))
    env["NODE_NAME"] = "gpu-node-0"
    return plugin_settings.parse_settings([], environ=env)


DEFAULT = documents(MANIFESTS.read_text())


@functools.cache
def _find_helm() -> tuple[str | None, str]:
    """(helm binary, why not): $HELM, else e2e/tools/helm.sh (builds it once, minutes)."""
    if os.environ.get("HELM"):
        return os.environ["HELM"], ""
    cached = subprocess.run(
        ["bash", str(HELM_SCRIPT), "--print-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(cached).is_file() and shutil.which("go") is None:
        return None, f"no helm at {cached} and no go command to build it with {HELM_SCRIPT}"
    built = subprocess.run(
        ["bash", str(HELM_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False
    )
    if built.returncode != 0:
        return None, f"{HELM_SCRIPT} could not build helm: {built.stderr.strip()[-600:]}"
    return built.stdout.strip(), ""


@pytest.fixture(scope="module", name="helm")
def helm_fixture() -> Iterator[str]:
    """The helm binary, as ``helm``: import ``helm_fixture`` to use it in a module."""
    binary, why = _find_helm()
    if binary is None:
        pytest.skip(f"HELM CHECKS SKIPPED (helm lint, helm template, manifest drift): {why}")
    yield binary


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def helm_template(helm: str, *args: str) -> str:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout
