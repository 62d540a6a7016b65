"""``dra-driver kubelet-plugin`` as a process with ``--shared-gpus``: shared full GPUs in
the published slices, and a dynamic MIG device created, injected and destroyed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from driver_fixtures import DRIVER, claim, claim_uid, validate_cdi_file
from fake_apiserver import FakeApiServer
from kubelet_standin import KubeletStandin
from test_plugin_process import (
    PluginProcess,
    api,
    devices_of,
    node_slices,
    root,
    start_plugin,
    stop_plugin,
    wait_running,
)

from kubelet_plugin.node_driver import ClaimRef

pytestmark = pytest.mark.component

__all__ = ["api", "root"]  # fixtures, used by name

MIG = "gpu-0-mig-1g10gb-19-0"


@pytest.fixture
def shared_plugin(root: Path, api: FakeApiServer) -> Iterator[PluginProcess]:
    started = start_plugin(root, api.write_kubeconfig(root / "kubeconfig"), "--shared-gpus")
    try:
        yield started
    finally:
        started.close()


def test_shared_gpus_are_published_and_a_mig_claim_is_prepared(
    root: Path, api: FakeApiServer, shared_plugin: PluginProcess
) -> None:
    wait_running(api, shared_plugin)
    with KubeletStandin().register(shared_plugin.registration_socket) as kubelet:
        api.wait_for(lambda: len(node_slices(api)) == 2, "the node's two ResourceSlices")
        devices = devices_of(node_slices(api))
        assert devices["gpu-0"]["allowMultipleAllocations"] is True
        assert set(devices["gpu-0"]["capacity"]) == {"memory", "compute"}
        assert MIG in devices

        api.put_claim(claim(0, [MIG]))
        ref = ClaimRef(namespace="default", name="claim-0", uid=claim_uid(0))
        outcome = kubelet.prepare([ref])[claim_uid(0)]
        assert outcome.error == ""
        assert outcome.devices[0].cdi_device_ids == (
            f"{DRIVER}/gpu={claim_uid(0)}-{MIG}",
            f"{DRIVER}/gpu={claim_uid(0)}-metadata-gpu",
        )
        spec_file = root / "cdi" / f"{DRIVER}-{claim_uid(0)}.json"
        document = validate_cdi_file(spec_file)
        # The device metadata file names the MIG device made for the claim, by its UUID.
        env = document["devices"][0]["containerEdits"]["env"]
        variables = dict(e.split("=", 1) for e in env)
        (mig_uuid,) = [v for k, v in variables.items() if k.endswith("_UUID")]
        (mount,) = document["devices"][1]["containerEdits"]["mounts"]
        metadata = json.JSONDecoder().raw_decode(Path(mount["hostPath"]).read_text())[0]
        (listed,) = metadata["requests"][0]["devices"]
        assert (listed["name"], listed["attributes"]["uuid"]) == (MIG, {"string": mig_uuid})
        assert mig_uuid.startswith("MIG-")
        nodes = [n["hostPath"] for n in document["devices"][0]["containerEdits"]["deviceNodes"]]
        assert nodes[0] == str(root / "host/dev/nvidia0")
        assert [Path(n).parent.name for n in nodes[1:]] == ["nvidia-caps", "nvidia-caps"]
        assert all(Path(n).exists() for n in nodes)  # fake capability nodes made by the plugin
        uuids = [e for e in document["devices"][0]["containerEdits"]["env"] if "_UUID=" in e]
        assert len(uuids) == 1 and uuids[0].split("=", 1)[1].startswith("MIG-"), uuids

        assert kubelet.unprepare([ref]) == {claim_uid(0): ""}
        assert not spec_file.exists()

    assert stop_plugin(shared_plugin) == 0, shared_plugin.logs()
    destroyed = [
        r
        for r in shared_plugin.records
        if r["msg"].startswith("claim default/claim-0: destroyed MIG")
    ]
    assert destroyed, shared_plugin.logs()
    assert not [r for r in shared_plugin.records if r["level"] == "error"], shared_plugin.logs()
