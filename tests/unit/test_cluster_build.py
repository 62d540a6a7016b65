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
KUBE_COMPONENTS = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubectl",
]

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


#: A stand-in for every cached binary: it prints a line matching each version check of the
#: script (each check takes the first line matching its own pattern).
FAKE_BINARY = """#!/bin/sh
cat <<'EOF'
Kubernetes {version}
Client Version: {version}
etcd Version: 3.5.16
etcdctl version: 3.5.16
etcdutl version: 3.5.16
containerd github.com/containerd/containerd 1.7.24
  Version:  1.7.24
ctr github.com/containerd/containerd 1.7.24
runc version 1.1.15
BusyBox v1.37.0 (Debian 1:1.37.0-4) multi-call binary.
umoci version 0.4.7
{{"cniVersion":"1.0.0"}}
enable_cdi = false
EOF
"""


def fill_cache(lines: dict[str, list[str]], *, skip: str = "") -> None:
    """Make the cache look built: the stamps the plan expects, and executable files that pass
    the script's version checks."""
    out = Path(lines["cache-dir"][0])
    (out / "stamps").mkdir(parents=True)
    (out / "stamps" / "kube").write_text(lines["kube-stamp"][0] + "\n")
    (out / "stamps" / "debs").write_text(lines["debs-stamp"][0] + "\n")
    for path in lines["binary"] + lines["cni-plugin"]:
        if Path(path).name == skip:
            continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(FAKE_BINARY.format(version=lines["kube-version"][0]))
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


@needs_go
@pytest.mark.usefixtures("clean_env")
def test_a_second_run_says_the_cache_is_warm_and_builds_nothing(tmp_path: Path) -> None:
    lines = plan(tmp_path)
    fill_cache(lines)
    result = run_script(env={"DRA_DRIVER_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [lines["bin-dir"][0]]
    assert "cache warm:" in result.stderr
    assert "compiling" not in result.stderr and "apt:" not in result.stderr
    versions = (Path(lines["cache-dir"][0]) / "versions.txt").read_text()
    assert f"Client Version: {lines['kube-version'][0]}" in versions


def report_go_build(go_output: str, staging: str, *, tty: bool, every_s: int = 0) -> str:
    """Feed ``go build -x`` output to the script's progress reader (the script sourced);
    return what it wrote on stderr, carriage returns kept, every number of seconds written
    as ``N`` (a loaded machine may cross a second boundary while the reader runs)."""
    result = subprocess.run(
        [
            "bash",
            "-c",
            f'source "{SCRIPT}"; STDERR_TTY={int(tty)}; PROGRESS_EVERY_S={every_s}; '
            f'report_go_build "{staging}" 2752',
        ],
        input=go_output.encode(),
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return re.sub(r"\b\d+s\b", "Ns", result.stderr.decode())


#: What ``go build -x`` prints: its commands (a compile per package not in Go's build cache,
#: a link and a move per binary), here for two packages and kubectl.
GO_BUILD_X = """WORK=/tmp/go-build1
mkdir -p $WORK/b101/
cat >/tmp/go-build1/b101/importcfg << 'EOF' # internal
packagefile k8s.io/apimachinery/pkg/util/sets=/cache/aa-d
EOF
/go/pkg/tool/linux_amd64/compile -o $WORK/b101/_pkg_.a -trimpath "$WORK/b101=>" \
-p k8s.io/apimachinery/pkg/util/sets -lang=go1.24
/go/pkg/tool/linux_amd64/compile -o $WORK/b102/_pkg_.a -trimpath "$WORK/b102=>" \
-p k8s.io/kubectl/pkg/cmd -lang=go1.24
GOROOT='' /go/pkg/tool/linux_amd64/link -o $WORK/b001/exe/a.out -importcfg $WORK/b001/x
mv $WORK/b001/exe/a.out {staging}/kubectl
cp $WORK/b102/_pkg_.a /cache/bb-d # internal
"""


def test_compiling_reports_each_binary_and_the_packages_so_far(tmp_path: Path) -> None:
    staging = str(tmp_path / "stage-kube")
    stderr = report_go_build(GO_BUILD_X.format(staging=staging), staging, tty=False)
    lines = [line.split("] ", 1)[1] for line in stderr.split("\n") if line]
    assert lines == [
        "compiling: 1 of at most 2752 packages after Ns, now k8s.io/apimachinery/pkg/util/sets",
        "compiling: 2 of at most 2752 packages after Ns, now k8s.io/kubectl/pkg/cmd",
        "built kubectl in Ns (2 packages compiled so far)",
    ]
    assert "\r" not in stderr


def test_the_progress_interval_spaces_the_lines(tmp_path: Path) -> None:
    staging = str(tmp_path / "stage-kube")
    stderr = report_go_build(GO_BUILD_X.format(staging=staging), staging, tty=False, every_s=3600)
    assert "compiling:" not in stderr
    assert "built kubectl in" in stderr


def test_on_a_terminal_the_progress_is_one_live_line(tmp_path: Path) -> None:
    staging = str(tmp_path / "stage-kube")
    stderr = report_go_build(GO_BUILD_X.format(staging=staging), staging, tty=True)
    # A carriage return and an erase rewrite the live line; the binary's line stays.
    assert (
        "\r\x1b[K[cluster-build     Ns] compiling: 1 of at most 2752 packages, "
        "k8s.io/apimachinery/pkg/util/sets (Ns)"
    ) in stderr
    assert stderr.count("built kubectl in Ns") == 1
    assert stderr.endswith("\r\x1b[K")
