"""The real plugin process on hostile state files: it starts, serves, and logs no traceback.

test_driver_hostile_state checks each case at the driver; here the whole
``dra-driver kubelet-plugin`` starts on a node whose checkpoint is a directory
(every start-up failed on it: a crash loop) and whose prepared claim's spec is
a link out of the CDI root, and serves the kubelet.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from driver_fixtures import DRIVER, claim, claim_uid, validate_cdi_file
from fake_apiserver import FakeApiServer
from kubelet_standin import KubeletStandin
from test_plugin_process import api, root, start_plugin, stop_plugin, wait_running

from kubelet_plugin.node_driver import ClaimRef

__all__ = ["api", "root"]  # fixtures, used by name

pytestmark = pytest.mark.component


def test_the_plugin_starts_on_a_directory_checkpoint_and_a_linked_spec(
    root: Path, api: FakeApiServer
) -> None:
    plugin_dir = root / "plugins" / DRIVER
    (plugin_dir / "checkpoint.json").mkdir(parents=True)
    outside = root / "elsewhere.json"
    outside.write_text("keep me")
    spec = root / "cdi" / f"{DRIVER}-{claim_uid(0)}.json"
    spec.parent.mkdir()
    spec.symlink_to(outside)  # no entry for it (the checkpoint is gone): an orphan
    api.put_claim(claim(0, ["gpu-0"]))
    plugin = start_plugin(root, api.write_kubeconfig(root / "kubeconfig"))
    try:
        wait_running(api, plugin)
        with KubeletStandin().register(plugin.registration_socket) as kubelet:
            ref = ClaimRef(namespace="default", name="claim-0", uid=claim_uid(0))
            assert kubelet.prepare([ref])[claim_uid(0)].error == "", plugin.logs()
            validate_cdi_file(spec)
            assert not spec.is_symlink()
            assert kubelet.unprepare([ref]) == {claim_uid(0): ""}
        assert stop_plugin(plugin) == 0, plugin.logs()
    finally:
        plugin.close()

    assert outside.read_text() == "keep me"
    assert not spec.exists()
    corrupt = plugin.record(f"checkpoint {plugin_dir / 'checkpoint.json'} is corrupt")
    assert corrupt is not None and "not a regular file" in corrupt["msg"], plugin.logs()
    assert [p.name for p in plugin_dir.glob("checkpoint.json.corrupt-*")], "moved aside"
    assert not [line for line in plugin.lines if "Traceback" in line], plugin.logs()
