"""Claim references and paths the kubelet plugin accepts (issue 18, defect 3)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from kubelet_plugin.cdi_writer import CdiWriter
from kubelet_plugin.node_driver import ClaimRef, claim_ref_problem
from kubelet_plugin.plugin_dirs import PathOutsideRootError, contained_path, path_in_root

DRIVER = "gpu.dra-driver.io"


@pytest.mark.parametrize(
    "uid",
    [
        str(uuid.uuid4()),  # what the API server issues
        str(uuid.uuid5(uuid.NAMESPACE_URL, "claim-1")),
        "00000000-0000-4000-8000-00000000000a",
        "uid-0001",  # the gRPC tests' fake driver
        "u-1",
    ],
)
def test_uids_the_api_server_and_the_tests_use_are_accepted(uid: str) -> None:
    assert claim_ref_problem(ClaimRef(namespace="default", name="claim-1.a", uid=uid)) is None


@pytest.mark.parametrize(
    "uid",
    [
        "",
        "../x",
        "evil/../../victim",
        ".",
        "..",
        "a/b",
        "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
        "uid\n",
        "-leading",
        "x" * 64,
        "a\0b",
    ],
)
def test_uids_unsafe_in_a_file_name_are_refused(uid: str) -> None:
    problem = claim_ref_problem(ClaimRef(namespace="default", name="claim-1", uid=uid)) or ""
    assert problem.startswith("invalid uid "), problem
    assert "RFC 4122" in problem


@pytest.mark.parametrize(
    ("namespace", "name", "field"),
    [
        ("Default", "claim-1", "namespace"),
        ("", "claim-1", "namespace"),
        ("a.b", "claim-1", "namespace"),  # a label, not a subdomain
        ("default", "", "name"),
        ("default", "Claim", "name"),
        ("default", "a/../b", "name"),
        ("default", "x" * 254, "name"),
    ],
)
def test_namespaces_and_names_follow_the_api_servers_rules(
    namespace: str, name: str, field: str
) -> None:
    problem = claim_ref_problem(ClaimRef(namespace=namespace, name=name, uid="u-1")) or ""
    assert problem.startswith(f"invalid {field} "), problem
    assert "RFC 1123" in problem


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a\0b"])
def test_a_file_name_that_leaves_the_root_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(PathOutsideRootError, match="refused, nothing written or removed"):
        path_in_root(tmp_path, name)
    with pytest.raises(PathOutsideRootError):
        CdiWriter(tmp_path, DRIVER).path(name)


def test_a_recorded_path_must_resolve_into_the_root(tmp_path: Path) -> None:
    root = tmp_path / "cdi"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    assert contained_path(root, str(root / "x.json")) == root / "x.json"
    for recorded in (
        str(tmp_path / "x.json"),
        str(root / ".." / "x.json"),
        str(root / "sub" / "x.json"),
        str(root / "link" / "x.json"),  # a symlinked directory leading out
        "cdi/x.json",  # relative
        str(root) + "/",
    ):
        with pytest.raises(PathOutsideRootError):
            contained_path(root, recorded)


def test_only_this_drivers_specs_are_taken_from_a_checkpoint(tmp_path: Path) -> None:
    cdi = CdiWriter(tmp_path, DRIVER)
    own = tmp_path / f"{DRIVER}-u-1.json"
    assert cdi.recorded_spec(str(own)) == own
    for recorded in (tmp_path / "nvidia.yaml", tmp_path / "other.example.com-u-1.json"):
        with pytest.raises(PathOutsideRootError, match=r"only this driver's specs"):
            cdi.recorded_spec(str(recorded))
    # Unprepare falls back to the spec's own name in the root.
    assert cdi.spec_to_remove(own.name, str(tmp_path / "nvidia.yaml")) == own
