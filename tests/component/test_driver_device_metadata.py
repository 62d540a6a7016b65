"""Device metadata files (KEP-5304) on real files: written with the spec, never half there.

A prepare writes each request's file before the spec that mounts it, an unprepare or
a failed prepare removes them, and a restart (or a reboot) puts back what is missing
from the checkpoint alone, the pod's name for a template's claim included.
"""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from driver_fixtures import (
    BOOT_ID,
    DRIVER,
    checkpoint_path,
    claim,
    claim_uid,
    files_in,
    make_driver,
    make_host,
    spec_path,
    validate_cdi_file,
)

from kubelet_plugin.cdi_writer import scan_host_files
from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component

TEMPLATES = "/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates"


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


def metadata_root(root: Path) -> Path:
    return root / "plugin" / "dra-device-metadata"


def metadata_file(root: Path, n: int, request: str = "gpu") -> Path:
    return metadata_root(root) / claim_uid(n) / request / f"{DRIVER}-metadata.json"


def from_template(n: int, devices: list[str] | None = None) -> dict[str, Any]:
    document = claim(n, devices)
    document["metadata"]["annotations"] = {"resource.kubernetes.io/pod-claim-name": "gpus"}
    return document


def driver(root: Path, claims: FakeClaimSource, *, boot_id: str = BOOT_ID) -> GpuDriver:
    make_host(root, 8)
    host = dataclasses.replace(
        scan_host_files(root / "host", root / "driver", None),
        metadata_root=str(metadata_root(root)),
    )
    made = make_driver(root, claims, host=host, boot_id=boot_id)
    made.start()
    return made


def first_document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.JSONDecoder().raw_decode(path.read_text())[0]
    return document


def test_prepare_writes_the_file_the_spec_mounts_and_unprepare_removes_it(
    tmp_path: Path,
) -> None:
    plugin = driver(tmp_path, FakeClaimSource([from_template(1, ["gpu-1", "gpu-2"])]))

    result = plugin.prepare([ref(1)])[claim_uid(1)]

    assert result.error is None
    metadata_id = f"{DRIVER}/gpu={claim_uid(1)}-metadata-gpu"
    assert [d.cdi_device_ids[1:] for d in result.devices] == [(metadata_id,), ()]
    file = metadata_file(tmp_path, 1)
    assert stat.S_IMODE(file.stat().st_mode) == 0o644
    document = first_document(file)
    assert document["podClaimName"] == "gpus"
    assert [d["name"] for d in document["requests"][0]["devices"]] == ["gpu-1", "gpu-2"]
    spec = validate_cdi_file(spec_path(tmp_path, 1))
    (mount,) = next(d for d in spec["devices"] if d["name"].endswith("-metadata-gpu"))[
        "containerEdits"
    ]["mounts"]
    assert mount["hostPath"] == str(file)
    assert mount["containerPath"] == f"{TEMPLATES}/gpus/gpu/{DRIVER}-metadata.json"
    recorded = json.loads(checkpoint_path(tmp_path).read_text())["claims"][claim_uid(1)]
    assert recorded["deviceMetadata"] == {"podClaimName": "gpus"}

    assert plugin.unprepare([ref(1)]) == {claim_uid(1): None}
    assert files_in(metadata_root(tmp_path)) == []
    assert not spec_path(tmp_path, 1).exists()


def test_a_prepare_that_fails_leaves_no_file_and_the_gpu_free(tmp_path: Path) -> None:
    claims = FakeClaimSource([claim(1, ["gpu-1"]), claim(2, ["gpu-1"])])
    plugin = driver(tmp_path, claims)
    # The claim's spec path is a directory: the spec cannot be written, after the
    # metadata file was.
    spec_path(tmp_path, 1).mkdir(parents=True)

    failed = plugin.prepare([ref(1)])[claim_uid(1)]

    assert failed.error is not None
    assert files_in(metadata_root(tmp_path)) == []
    assert plugin.prepare([ref(2)])[claim_uid(2)].error is None
    assert metadata_file(tmp_path, 2).is_file()


def test_a_file_that_cannot_be_written_fails_the_prepare_without_a_spec(tmp_path: Path) -> None:
    plugin = driver(tmp_path, FakeClaimSource([claim(1, ["gpu-1"])]))
    blocker = metadata_root(tmp_path) / claim_uid(1)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")

    failed = plugin.prepare([ref(1)])[claim_uid(1)]

    assert failed.error is not None
    assert not spec_path(tmp_path, 1).exists()
    assert files_in(metadata_root(tmp_path)) == []  # the rollback removed the blocker too
    assert plugin.prepare([ref(1)])[claim_uid(1)].error is None


def test_a_removed_file_is_written_again_by_the_next_prepare(tmp_path: Path) -> None:
    plugin = driver(tmp_path, FakeClaimSource([claim(1, ["gpu-1"])]))
    assert plugin.prepare([ref(1)])[claim_uid(1)].error is None
    file = metadata_file(tmp_path, 1)
    written = file.read_bytes()
    file.unlink()

    assert plugin.prepare([ref(1)])[claim_uid(1)].error is None
    assert file.read_bytes() == written


def test_after_a_reboot_the_files_come_back_from_the_checkpoint(tmp_path: Path) -> None:
    plugin = driver(tmp_path, FakeClaimSource([from_template(1, ["gpu-1"])]))
    assert plugin.prepare([ref(1)])[claim_uid(1)].error is None
    spec_before = spec_path(tmp_path, 1).read_bytes()
    file_before = metadata_file(tmp_path, 1).read_bytes()
    plugin.close()
    # A reboot: the CDI root (a tmpfs) is empty; the metadata file is lost too. The API
    # server's copy of the claim has lost its annotation: the checkpoint must tell.
    spec_path(tmp_path, 1).unlink()
    metadata_file(tmp_path, 1).unlink()

    driver(tmp_path, FakeClaimSource([claim(1, ["gpu-1"])]), boot_id="another-boot")

    assert spec_path(tmp_path, 1).read_bytes() == spec_before
    assert metadata_file(tmp_path, 1).read_bytes() == file_before


def test_an_interrupted_prepare_loses_its_files_at_start_up(tmp_path: Path) -> None:
    plugin = driver(tmp_path, FakeClaimSource([claim(1, ["gpu-1"])]))
    assert plugin.prepare([ref(1)])[claim_uid(1)].error is None
    plugin.close()
    # What a crash between the spec write and the PrepareCompleted save leaves.
    document = json.loads(checkpoint_path(tmp_path).read_text())
    document["claims"][claim_uid(1)]["state"] = "PrepareStarted"
    checkpoint_path(tmp_path).write_text(json.dumps(document))

    driver(tmp_path, FakeClaimSource([claim(1, ["gpu-1"])]))

    assert files_in(metadata_root(tmp_path)) == []
    assert not spec_path(tmp_path, 1).exists()


def test_a_checkpoint_naming_a_path_as_pod_claim_name_mounts_no_file(tmp_path: Path) -> None:
    plugin = driver(tmp_path, FakeClaimSource([from_template(1, ["gpu-1"])]))
    assert plugin.prepare([ref(1)])[claim_uid(1)].error is None
    plugin.close()
    document = json.loads(checkpoint_path(tmp_path).read_text())
    document["claims"][claim_uid(1)]["deviceMetadata"] = {"podClaimName": "../../etc"}
    checkpoint_path(tmp_path).write_text(json.dumps(document))
    spec_path(tmp_path, 1).unlink()

    restarted = driver(
        tmp_path, FakeClaimSource([from_template(1, ["gpu-1"])]), boot_id="another-boot"
    )

    spec = validate_cdi_file(spec_path(tmp_path, 1))
    assert not [d for d in spec["devices"] if "-metadata-" in d["name"]]
    assert "etc" not in json.dumps(spec)
    # The kubelet is told no ID the spec lacks.
    (device,) = restarted.prepare([ref(1)])[claim_uid(1)].devices
    assert device.cdi_device_ids == (f"{DRIVER}/gpu={claim_uid(1)}-gpu-1",)


def test_start_up_writes_again_a_file_a_power_cut_emptied(tmp_path: Path) -> None:
    # The files are not fsynced: after a power cut one may be there but empty. Start-up
    # compares every prepared claim's files with what they must hold, whatever the boot.
    plugin = driver(tmp_path, FakeClaimSource([claim(1, ["gpu-1"])]))
    assert plugin.prepare([ref(1)])[claim_uid(1)].error is None
    file = metadata_file(tmp_path, 1)
    written = file.read_bytes()
    plugin.close()
    file.write_bytes(b"")

    driver(tmp_path, FakeClaimSource([claim(1, ["gpu-1"])]))

    assert file.read_bytes() == written


def test_files_no_entry_and_no_spec_own_are_removed_at_start_up(tmp_path: Path) -> None:
    # What a checkpoint restored from an older copy leaves: claims 1 and 2 have files but
    # no entry; claim 2's spec is still there (a container restarted from it mounts its
    # file), claim 1's is not, so nothing can mount its files any more.
    claims = FakeClaimSource([claim(1, ["gpu-1"]), claim(2, ["gpu-2"])])
    plugin = driver(tmp_path, claims)
    for n in (1, 2):
        assert plugin.prepare([ref(n)])[claim_uid(n)].error is None
    plugin.close()
    document = json.loads(checkpoint_path(tmp_path).read_text())
    document["claims"] = {}
    checkpoint_path(tmp_path).write_text(json.dumps(document))
    spec_path(tmp_path, 1).unlink()

    driver(tmp_path, claims)

    assert not (metadata_root(tmp_path) / claim_uid(1)).exists()
    assert metadata_file(tmp_path, 2).is_file() and spec_path(tmp_path, 2).is_file()
