"""Two ``dra-driver kubelet-plugin`` processes on one node: a rolling update with max surge.

The new plugin pod starts while the old one still serves (spec/kubelet-plugin.md
§1). Both run with ``--pod-uid`` against the same directories, checkpoint and
GPUs, as the DaemonSet's two pods would: each registers under its own socket
names, a claim prepared through one is known to the other, and only one of them
publishes the node's slices until the old one stops.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from driver_fixtures import DRIVER, claim, claim_uid
from fake_apiserver import FakeApiServer
from kubelet_standin import KubeletStandin
from test_plugin_process import (
    NODE,
    api,
    node_slices,
    root,
    start_plugin,
    stop_plugin,
    wait_running,
)

from kubelet_plugin.node_driver import ClaimRef

__all__ = ["api", "root"]  # fixtures, used by name

pytestmark = pytest.mark.component

OLD_UID = "0c8a1d5e-1111-4f3a-9d7e-6b2c4a8e0f01"
NEW_UID = "7f3b2e9a-2222-4c1d-8e6f-9a0b1c2d3e4f"
# Sockets carry the UID's first 12 hex digits.
OLD, NEW = "0c8a1d5e1111", "7f3b2e9a2222"
WAITING = "another plugin instance on this node holds"
TOOK_OVER = "took over publishing the node's ResourceSlices"


def test_the_new_instance_serves_beside_the_old_one_and_takes_over_publishing(
    root: Path, api: FakeApiServer
) -> None:
    driver_lib = root / "driver" / "usr/lib/x86_64-linux-gnu"
    driver_lib.mkdir(parents=True)
    (driver_lib / "libcuda.so.550.54.15").write_bytes(b"\x7fELF")
    kubeconfig = api.write_kubeconfig(root / "kubeconfig")
    registry, plugin_dir = root / "registry", root / "plugins" / DRIVER

    old = start_plugin(root, kubeconfig, "--pod-uid", OLD_UID)
    try:
        wait_running(api, old)
        api.wait_for(lambda: len(node_slices(api)) == 2, "the old instance's slices")
        new = start_plugin(root, kubeconfig, "--pod-uid", NEW_UID)
        try:
            wait_running(api, new)
            api.wait_for(
                lambda: new.record(WAITING) is not None,
                "the new instance to wait for the publisher lock",
                on_timeout=new.logs,
            )
            old_reg = registry / f"{DRIVER}-{OLD}-reg.sock"
            new_reg = registry / f"{DRIVER}-{NEW}-reg.sock"
            with (
                KubeletStandin().register(old_reg) as to_old,
                KubeletStandin().register(new_reg) as to_new,
            ):
                assert to_old.endpoint == str(plugin_dir / f"dra-{OLD}.sock")
                assert to_new.endpoint == str(plugin_dir / f"dra-{NEW}.sock")

                # Prepared through the new instance...
                api.put_claim(claim(0, ["gpu-0"]))
                first = ClaimRef(namespace="default", name="claim-0", uid=claim_uid(0))
                prepared = to_new.prepare([first])[claim_uid(0)]
                assert prepared.error == "", new.logs()
                spec_file = root / "cdi" / f"{DRIVER}-{claim_uid(0)}.json"
                assert spec_file.exists()

                # ...known to the old one: the same device for another claim is refused,
                # the same claim gets the same CDI IDs.
                api.put_claim(claim(1, ["gpu-0"]))
                second = ClaimRef(namespace="default", name="claim-1", uid=claim_uid(1))
                refused = to_old.prepare([second])[claim_uid(1)]
                assert "gpu-0 is already prepared for claim default/claim-0" in refused.error
                again = to_old.prepare([first])[claim_uid(0)]
                assert again.error == ""
                assert again.devices[0].cdi_device_ids == prepared.devices[0].cdi_device_ids

                # Unprepared through the old instance: the new one sees the device free.
                assert to_old.unprepare([first]) == {claim_uid(0): ""}
                assert not spec_file.exists()
                assert to_new.prepare([second])[claim_uid(1)].error == "", new.logs()

            # Only the old instance published so far; it stops and the new one takes over.
            assert new.record(TOOK_OVER) is None
            assert stop_plugin(old) == 0, old.logs()
            assert not old_reg.exists()
            assert not (plugin_dir / f"dra-{OLD}.sock").exists()
            assert new_reg.is_socket()
            api.wait_for(
                lambda: new.record(TOOK_OVER) is not None,
                "the new instance to take over publishing",
                on_timeout=new.logs,
            )
            wiped = f"{NODE}-{DRIVER}-00001"
            api.delete_slice(wiped)
            api.wait_for(lambda: wiped in api.slices(), "the new instance to republish")

            checkpoint = json.loads((plugin_dir / "checkpoint.json").read_text())
            assert sorted(checkpoint["claims"]) == [claim_uid(1)]
            assert stop_plugin(new) == 0, new.logs()
            errors = [r for p in (old, new) for r in p.records if r["level"] == "error"]
            assert not errors, errors
        finally:
            new.close()
    finally:
        old.close()
