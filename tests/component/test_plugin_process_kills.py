"""SIGKILL of the real ``dra-driver kubelet-plugin`` process at seeded random moments.

The kubelet (the test) prepares and unprepares two claims over and over while
the plugin is killed with SIGKILL after a random delay, sometimes again while
the new process is still starting. Where the kill lands varies with the timing;
the invariants must hold wherever it lands: after the restart, claims the
kubelet was told are prepared still are (same CDI IDs, valid specs); once the
kubelet repeated its last call, the checkpoint and the CDI root hold exactly
that call's outcome, no temp file and no spec without an entry.

``DRA_DRIVER_FAULT_SEED`` replays a seed's delays (not the timing of the
machine, so a replay shows the same kind of run, not the very same kill).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from crash_node import SEED_ENV, rounds_and_seed
from driver_fixtures import DRIVER, claim, claim_uid, expected_id, files_in, validate_cdi_file
from fake_apiserver import FakeApiServer
from kubelet_standin import KubeletStandin, RegisteredPlugin
from test_plugin_process import PluginProcess, api, root, start_plugin, wait_running

from kubelet_plugin.node_driver import ClaimRef

__all__ = ["api", "root"]  # fixtures, used by name

pytestmark = pytest.mark.component

KILLS: Final = 4
CLAIMS: Final = (0, 1)
#: The longest random delay before a kill, in seconds, while calls run and at start-up.
MAX_DELAY_S: Final = 0.4
MAX_START_DELAY_S: Final = 1.5


def refs() -> list[ClaimRef]:
    return [ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n)) for n in CLAIMS]


class Hammer:
    """Prepare, unprepare, prepare, ... of both claims until the plugin is gone.

    ``in_flight`` is the call the kill cut short (the kubelet got no answer to it).
    """

    def __init__(self, kubelet: RegisteredPlugin, first: str) -> None:
        self.kubelet = kubelet
        self.in_flight = first
        self.calls = 0
        self.failed: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                if self.in_flight == "prepare":
                    answers = [o.error for o in self.kubelet.prepare(refs(), timeout=10).values()]
                else:
                    answers = list(self.kubelet.unprepare(refs(), timeout=10).values())
            except grpc.RpcError:
                return  # killed: the kubelet never heard
            if answers != ["", ""]:
                self.failed.append(f"{self.in_flight}: {answers}")
                return
            self.calls += 1
            self.in_flight = "unprepare" if self.in_flight == "prepare" else "prepare"

    def join(self) -> None:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "a call outlived the plugin"
        assert not self.failed, self.failed


def plugin_files(root: Path) -> tuple[dict[str, str], list[str]]:
    """Checkpoint states by claim UID, and the CDI root's entries."""
    checkpoint = root / "plugins" / DRIVER / "checkpoint.json"
    states: dict[str, str] = {}
    if checkpoint.exists():
        document: dict[str, Any] = json.loads(checkpoint.read_bytes())
        states = {uid: entry["state"] for uid, entry in document["claims"].items()}
    return states, files_in(root / "cdi")


def spec_names() -> list[str]:
    return sorted(f"{DRIVER}-{claim_uid(n)}.json" for n in CLAIMS)


def check_whole(root: Path, why: str) -> dict[str, str]:
    """Each claim prepared in full (entry completed, valid spec) or not at all."""
    states, specs = plugin_files(root)
    assert set(states.values()) <= {"PrepareCompleted"}, f"{why}: {states}"
    assert specs == sorted(f"{DRIVER}-{uid}.json" for uid in states), f"{why}: {specs}"
    for name in specs:
        validate_cdi_file(root / "cdi" / name)
    # The device metadata files (KEP-5304) go with the spec: each prepared claim has
    # its request's file, complete, and no other claim has any.
    metadata = root / "plugins" / DRIVER / "dra-device-metadata"
    assert files_in(metadata) == sorted(states), f"{why}: {files_in(metadata)}"
    for uid in states:
        assert files_in(metadata / uid / "gpu") == [f"{DRIVER}-metadata.json"], why
        file = metadata / uid / "gpu" / f"{DRIVER}-metadata.json"
        document = json.JSONDecoder().raw_decode(file.read_text())[0]
        assert document["metadata"]["uid"] == uid, why
    return states


def start(root: Path, api: FakeApiServer) -> PluginProcess:
    return start_plugin(root, api.write_kubeconfig(root / "kubeconfig"))


def test_sigkill_at_random_moments_keeps_what_the_kubelet_was_told(
    root: Path, api: FakeApiServer
) -> None:
    _, seed = rounds_and_seed(KILLS)
    rng = random.Random(seed)
    driver_lib = root / "driver" / "usr/lib/x86_64-linux-gnu"
    driver_lib.mkdir(parents=True)
    (driver_lib / "libcuda.so.550.54.15").write_bytes(b"\x7fELF")
    for n in CLAIMS:
        api.put_claim(claim(n, [f"gpu-{n}"]))
    plugin = start(root, api)
    next_call = "prepare"
    calls = 0
    try:
        for kill in range(KILLS):
            why = f"seed {seed} ({SEED_ENV}={seed} replays it), kill {kill}"
            wait_running(api, plugin)
            with KubeletStandin().register(plugin.registration_socket) as kubelet:
                hammer = Hammer(kubelet, next_call)
                time.sleep(rng.uniform(0.05, MAX_DELAY_S))
                os.kill(plugin.process.pid, signal.SIGKILL)
                hammer.join()
            plugin.close()
            calls += hammer.calls
            last = hammer.in_flight
            plugin = start(root, api)
            if rng.random() < 0.4:  # killed again while starting: recovering, or before it
                time.sleep(rng.uniform(0.0, MAX_START_DELAY_S))
                os.kill(plugin.process.pid, signal.SIGKILL)
                plugin.close()
                plugin = start(root, api)
            wait_running(api, plugin)
            check_whole(root, why)  # wherever the kill landed
            with KubeletStandin().register(plugin.registration_socket) as kubelet:
                # The kubelet repeats the call it got no answer to.
                if last == "prepare":
                    outcomes = kubelet.prepare(refs())
                    for n in CLAIMS:
                        assert outcomes[claim_uid(n)].error == "", why
                        ids = outcomes[claim_uid(n)].devices[0].cdi_device_ids
                        metadata_id = f"{DRIVER}/gpu={claim_uid(n)}-metadata-gpu"
                        assert ids == (expected_id(n, f"gpu-{n}"), metadata_id), why
                    assert set(check_whole(root, why)) == {claim_uid(n) for n in CLAIMS}, why
                else:
                    assert set(kubelet.unprepare(refs()).values()) == {""}, why
                    assert plugin_files(root) == ({}, []), why
            assert not [f for f in files_in(root / "cdi") if f.startswith(".")], why
            assert not [f for f in files_in(root / "plugins" / DRIVER) if f.startswith(".")], why
            next_call = "unprepare" if last == "prepare" else "prepare"
    finally:
        plugin.close()
    assert calls > 0, f"seed {seed}: no call completed between kills"
