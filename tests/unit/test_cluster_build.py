"""e2e/cluster/build.sh: its plan, its cache decisions and the pinned Go module.

These tests never build or download anything: they run the script's `--print-plan` mode,
which reads files only, against a temporary cache root.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "e2e" / "cluster" / "build.sh"
GO_MOD = REPO / "e2e" / "cluster" / "go" / "go.mod"
KUBE_COMPONENTS = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"]

needs_go = pytest.mark.skipif(
    shutil.which("go") is None, reason="the build script needs the go command"
)


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run build.sh with `env` layered over the current environment."""
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def plan(cache: Path, **env: str) -> dict[str, list[str]]:
    """The `--print-plan` output as key -> values (keys such as `binary` repeat)."""
    result = run_script("--print-plan", env={"DRA_DRIVER_CACHE": str(cache), **env})
    assert result.returncode == 0, result.stderr
    lines: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        lines.setdefault(key, []).append(value)
    return lines


def pinned_version() -> str:
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", GO_MOD.read_text(), re.MULTILINE)
    assert match, "go.mod requires no k8s.io/kubernetes"
    return match.group(1)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drop overrides a developer may have exported, so that defaults are what is tested."""
    for name in ("KUBE_VERSION", "DEBIAN_MIRROR", "APT_ETC_DIR", "DEBIAN_SUITE"):
        monkeypatch.delenv(name, raising=False)


def test_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_go_module_pins_kubernetes_and_matching_staging_modules() -> None:
    text = GO_MOD.read_text()
    version = pinned_version()
    assert re.fullmatch(r"v1\.\d+\.\d+", version), "pin a released Kubernetes version"
    staging = "v0." + version.removeprefix("v1.")
    replaces = re.findall(r"^\s*(k8s\.io/\S+) => (k8s\.io/\S+) (\S+)$", text, re.MULTILINE)
    assert len(replaces) >= 20, "every k8s.io staging module needs a replace"
    for old, new, replaced_version in replaces:
        assert (new, replaced_version) == (old, staging), f"replace {old}"
    replaced = {old for old, _, _ in replaces}
    assert {"k8s.io/api", "k8s.io/apimachinery", "k8s.io/client-go", "k8s.io/kubelet"} <= replaced
    for component in KUBE_COMPONENTS:
        assert re.search(rf"^\s*k8s\.io/kubernetes/cmd/{component}$", text, re.MULTILINE)


@needs_go
@pytest.mark.usefixtures("clean_env")
def test_plan_defaults_to_the_pinned_version_and_touches_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    lines = plan(cache)
    version = pinned_version()
    assert lines["kube-version"] == [version]
    assert lines["staging-version"] == ["v0." + version.removeprefix("v1.")]
    assert lines["cache-dir"] == [f"{cache}/k8s-{version}"]
    assert lines["go-module"] == [str(GO_MOD.parent)]
    assert lines["kube"] == ["build"]
    assert lines["debs"] == ["build"]
    binaries = {Path(b).name for b in lines["binary"]}
    assert set(KUBE_COMPONENTS) | {"etcd", "containerd", "runc", "ctr", "busybox"} <= binaries
    assert "containerd trixie" in lines["deb-package"]
    assert not cache.exists()


@needs_go
@pytest.mark.usefixtures("clean_env")
def test_plan_builds_with_the_upstream_release_flags(tmp_path: Path) -> None:
    (build,) = plan(tmp_path)["kube-build"]
    version = pinned_version()
    assert build.startswith("CGO_ENABLED=0 nice -n 19 go build -trimpath -tags ")
    assert f"-X k8s.io/component-base/version.gitVersion={version}" in build
    for component in KUBE_COMPONENTS:
        assert f"k8s.io/kubernetes/cmd/{component}" in build


@needs_go
@pytest.mark.usefixtures("clean_env")
def test_other_version_gets_a_generated_module_keyed_by_version(tmp_path: Path) -> None:
    lines = plan(tmp_path, KUBE_VERSION="v1.38.0-beta.0")
    assert lines["kube-version"] == ["v1.38.0-beta.0"]
    assert lines["staging-version"] == ["v0.38.0-beta.0"]
    assert lines["cache-dir"] == [f"{tmp_path}/k8s-v1.38.0-beta.0"]
    assert lines["go-module"] == [f"{tmp_path}/k8s-v1.38.0-beta.0/src"]
    assert lines["kube-stamp"] != plan(tmp_path)["kube-stamp"]


@needs_go
@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("version", ["1.37.2", "v1.37", "v2.0.0", "latest"])
def test_malformed_kube_version_is_a_usage_error(tmp_path: Path, version: str) -> None:
    result = run_script(
        "--print-plan", env={"DRA_DRIVER_CACHE": str(tmp_path), "KUBE_VERSION": version}
    )
    assert result.returncode == 2
    assert f"KUBE_VERSION={version}" in result.stderr
    assert "v1.37.2" in result.stderr  # the message shows the expected form


def test_unknown_argument_is_a_usage_error(tmp_path: Path) -> None:
    result = run_script("--frobnicate", env={"DRA_DRIVER_CACHE": str(tmp_path)})
    assert result.returncode == 2
    assert "unknown argument: --frobnicate" in result.stderr


def fill_cache(lines: dict[str, list[str]], *, skip: str = "") -> None:
    """Make the cache look built: the stamps the plan expects, and executable files."""
    out = Path(lines["cache-dir"][0])
    (out / "stamps").mkdir(parents=True)
    (out / "stamps" / "kube").write_text(lines["kube-stamp"][0] + "\n")
    (out / "stamps" / "debs").write_text(lines["debs-stamp"][0] + "\n")
    for path in lines["binary"] + lines["cni-plugin"]:
        if Path(path).name == skip:
            continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("#!/bin/sh\n")
        Path(path).chmod(0o755)


@needs_go
@pytest.mark.usefixtures("clean_env")
def test_a_complete_cache_with_matching_stamps_is_reused(tmp_path: Path) -> None:
    fill_cache(plan(tmp_path))
    lines = plan(tmp_path)
    assert (lines["kube"], lines["debs"]) == (["reuse"], ["reuse"])


@needs_go
@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(("missing", "rebuilt"), [("kubelet", "kube"), ("runc", "debs")])
def test_a_missing_binary_rebuilds_its_part_only(
    tmp_path: Path, missing: str, rebuilt: str
) -> None:
    fill_cache(plan(tmp_path), skip=missing)
    lines = plan(tmp_path)
    kept = "debs" if rebuilt == "kube" else "kube"
    assert (lines[rebuilt], lines[kept]) == (["build"], ["reuse"])


@needs_go
@pytest.mark.usefixtures("clean_env")
def test_a_stale_stamp_rebuilds(tmp_path: Path) -> None:
    lines = plan(tmp_path)
    fill_cache(lines)
    (Path(lines["cache-dir"][0]) / "stamps" / "kube").write_text("0000000000000000\n")
    assert plan(tmp_path)["kube"] == ["build"]


@needs_go
@pytest.mark.usefixtures("clean_env")
def test_debian_mirror_comes_from_the_hosts_deb822_source(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "host.sources").write_text(
        "Types: deb-src\n"
        "URIs: http://source-only.invalid/debian\n"
        "Suites: bookworm trixie\n"
        "Components: main\n"
        "\n"
        "# the archive\n"
        "Types: deb\n"
        "URIs: http://first.invalid/debian http://second.invalid/debian\n"
        "Suites: bookworm-updates bookworm trixie\n"
        "Components: contrib main\n"
        "Signed-By: /keys/archive.gpg\n"
    )
    lines = plan(tmp_path / "cache", APT_ETC_DIR=str(apt))
    if lines["debian-host-suite"] not in (["bookworm"], ["trixie"]):
        pytest.skip("the fixture describes a bookworm or trixie host")
    assert lines["debian-mirror"] == ["http://first.invalid/debian"]
    assert lines["debian-keyring"] == ["/keys/archive.gpg"]


@needs_go
@pytest.mark.usefixtures("clean_env")
def test_debian_mirror_comes_from_a_one_line_source(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    apt.mkdir()
    (apt / "sources.list").write_text(
        "deb-src http://source-only.invalid/debian bookworm main\n"
        "deb http://security.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/keys/one.gpg] http://one.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/keys/one.gpg] http://one.invalid/debian trixie main\n"
    )
    lines = plan(tmp_path / "cache", APT_ETC_DIR=str(apt))
    if lines["debian-host-suite"] not in (["bookworm"], ["trixie"]):
        pytest.skip("the fixture describes a bookworm or trixie host")
    assert lines["debian-mirror"] == ["http://one.invalid/debian"]
    assert lines["debian-keyring"] == ["/keys/one.gpg"]


@needs_go
@pytest.mark.usefixtures("clean_env")
def test_without_a_debian_source_the_plan_says_how_to_set_one(tmp_path: Path) -> None:
    (tmp_path / "apt").mkdir()
    lines = plan(tmp_path / "cache", APT_ETC_DIR=str(tmp_path / "apt"))
    assert lines["debian-mirror"] == ["(none found; set DEBIAN_MIRROR)"]
    lines = plan(
        tmp_path / "cache", APT_ETC_DIR=str(tmp_path / "apt"), DEBIAN_MIRROR="http://m.invalid/d"
    )
    assert lines["debian-mirror"] == ["http://m.invalid/d"]
