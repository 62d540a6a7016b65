"""One user ID per MPS GPU, enforced at prepare: GpuDriver preparing shares of one GPU
with the fake ``nvidia-cuda-mps-control`` (tests/fakes/mps_control.py) and the pods the
claims are reserved for in memory (tests/fakes/pods.py).

A refused claim leaves nothing: no CDI spec, no checkpoint entry, no daemon started,
no holder added (the ceiling commands are those of the claims already there). The UID a
GPU serves is kept next to the daemon's record, read again by a restarted plugin, and
gone with the daemon when the last claim is unprepared.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubelet_plugin.cdi_writer import scan_host_files
from kubelet_plugin.driver import GpuDriver
from kubelet_plugin.mps import MpsDaemons
from kubelet_plugin.mps.daemon import process_start_time
from kubelet_plugin.node_driver import ClaimRef
from kubelet_plugin.node_lock import NodeFileLock
from kubelet_plugin.sharing_tools import sharing_enforcers
from tests.component.driver_fixtures import claim, claim_uid, inventory, make_driver, spec_path
from tests.fakes.claim_source import FakeClaimSource
from tests.fakes.mps_control import install_fake_mps_control, logged_commands, logged_starts
from tests.fakes.pods import FakePods, pod_using

GPU = inventory(2).gpus[0].uuid


def share(n: int, *pods: str) -> dict[str, Any]:
    """Claim ``claim-<n>``: a share of gpu-0, reserved for ``pods``."""
    document = claim(n, ["gpu-0"])
    (result,) = document["status"]["allocation"]["devices"]["results"]
    result["shareID"] = f"share-{n}"
    result["consumedCapacity"] = {"memory": f"{10 * n}Gi", "compute": str(10 * n)}
    document["status"]["reservedFor"] = [
        {"resource": "pods", "name": p, "uid": f"pod-{p}"} for p in pods
    ]
    return document


def ref(n: int) -> ClaimRef:
    return ClaimRef("default", f"claim-{n}", claim_uid(n))


def daemon_pids(root: Path) -> list[int]:
    return [
        int(line.split()[0].removeprefix("pid=")) for line in logged_starts(root / "driver", GPU)
    ]


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    install_fake_mps_control(tmp_path / "driver")
    yield tmp_path
    for pid in daemon_pids(tmp_path):
        if process_start_time(pid) is not None:
            os.kill(pid, signal.SIGKILL)


def mps_driver(
    root: Path, claims: FakeClaimSource, pods: FakePods, node_lock: NodeFileLock | None = None
) -> tuple[GpuDriver, MpsDaemons]:
    host, enforcers = sharing_enforcers(
        scan_host_files(root / "host", root / "driver", None),
        driver_root=root / "driver",
        mps_root=root / "state" / "mps",
        real_gpus=True,
        check_interval_s=60.0,
        pods=pods,
    )
    daemons = enforcers[0]
    assert isinstance(daemons, MpsDaemons)
    driver = make_driver(root, claims, gpus=2, enforcers=enforcers, host=host, node_lock=node_lock)
    driver.start()
    return driver, daemons


def user_record(root: Path) -> Any:
    return json.loads((root / "state" / "mps" / GPU / "user.json").read_text())


def test_a_claim_of_another_uid_is_refused_and_leaves_nothing(root: Path) -> None:
    claims = FakeClaimSource([share(1, "a"), share(2, "b"), share(3, "c")])
    pods = FakePods(
        pod_using("a", "claim-1", pod_run_as=1000),
        pod_using("b", "claim-2", run_as=1000),
        pod_using("c", "claim-3", run_as=2000, pod_run_as=1000),
    )
    driver, daemons = mps_driver(root, claims, pods)
    try:
        assert [a.error for a in driver.prepare([ref(1), ref(2)]).values()] == [None, None]
        assert daemons.serving() == {GPU: 1000}
        assert user_record(root) == {"version": 1, "runAsUser": 1000}
        (pid,) = daemon_pids(root)
        commands = logged_commands(root / "driver", GPU)

        error = driver.prepare([ref(3)])[claim_uid(3)].error
        assert error == (
            f"claim default/claim-3: container 'main-0' of pod default/c runs as UID 2000 "
            f"(spec.containers[0].securityContext.runAsUser), but MPS GPU {GPU} serves UID "
            "1000 for 2 other claim(s): MPS runs one server per user ID at a time, and a "
            "second UID's clients wait until every client of the first is gone; set "
            "spec.containers[0].securityContext.runAsUser to 1000, or ask for another GPU"
        )
        assert not spec_path(root, 3).exists()
        assert claim_uid(3) not in driver.prepared()
        assert daemon_pids(root) == [pid]
        assert logged_commands(root / "driver", GPU) == commands  # no holder, no new ceiling

        # Once the pod runs as the GPU's UID, the kubelet's retry prepares it.
        pods.put(pod_using("c", "claim-3", pod_run_as=1000))
        assert driver.prepare([ref(3)])[claim_uid(3)].error is None
        assert daemon_pids(root) == [pid]
    finally:
        driver.close()


def test_a_claim_whose_containers_disagree_starts_no_daemon(root: Path) -> None:
    pod = pod_using("a", "claim-1", containers=2, pod_run_as=0)
    pod["spec"]["containers"][1]["securityContext"] = {"runAsUser": 1}
    claims = FakeClaimSource([share(1, "a"), share(2, "b")])
    pods = FakePods(pod, pod_using("b", "claim-2", containers=2))
    driver, daemons = mps_driver(root, claims, pods)
    try:
        error = driver.prepare([ref(1)])[claim_uid(1)].error
        assert error is not None
        assert "container 'main-1' of pod default/a runs as UID 1" in error
        assert "container 'main-0' of pod default/a runs as UID 0" in error
        # Two containers, neither stating its UID: their images may name two users.
        error = driver.prepare([ref(2)])[claim_uid(2)].error
        assert error is not None and "2 containers use" in error
        assert "set spec.containers[0].securityContext.runAsUser" in error
        assert daemon_pids(root) == []
        assert not (root / "state" / "mps" / GPU).exists()
        assert driver.prepared() == {} and daemons.serving() == {}
    finally:
        driver.close()


def test_an_unknown_user_holds_the_gpu_alone(root: Path) -> None:
    claims = FakeClaimSource([share(1, "a"), share(2, "b")])
    pods = FakePods(pod_using("a", "claim-1"), pod_using("b", "claim-2", run_as=0))
    driver, daemons = mps_driver(root, claims, pods)
    try:
        assert driver.prepare([ref(1)])[claim_uid(1)].error is None
        assert daemons.serving() == {GPU: None}
        assert user_record(root) == {"version": 1, "runAsUser": None}
        error = driver.prepare([ref(2)])[claim_uid(2)].error
        assert error is not None and "whose user ID is unknown" in error
        assert "container 'main-0' of pod default/b runs as UID 0" in error
    finally:
        driver.close()


def test_the_uid_survives_a_plugin_restart_and_goes_with_the_last_claim(root: Path) -> None:
    claims = FakeClaimSource([share(1, "a"), share(2, "b")])
    pods = FakePods(pod_using("a", "claim-1", run_as=1000), pod_using("b", "claim-2", run_as=0))
    driver, _ = mps_driver(root, claims, pods)
    assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    driver.close()

    restarted, daemons = mps_driver(root, claims, pods)
    try:
        assert daemons.serving() == {GPU: 1000}
        error = restarted.prepare([ref(2)])[claim_uid(2)].error
        assert error is not None and "serves UID 1000 for 1 other claim(s)" in error
        # The last claim goes: the daemon, its directory and the UID with them.
        assert restarted.unprepare([ref(1)]) == {claim_uid(1): None}
        assert not (root / "state" / "mps" / GPU).exists()
        assert daemons.serving() == {}
        assert restarted.prepare([ref(2)])[claim_uid(2)].error is None
        assert daemons.serving() == {GPU: 0}
    finally:
        restarted.close()


def test_pods_that_cannot_be_read_fail_the_prepare_for_a_retry(root: Path) -> None:
    pods = FakePods(pod_using("a", "claim-1", run_as=1000))
    pods.fail = True
    driver, _ = mps_driver(root, FakeClaimSource([share(1, "a")]), pods)
    try:
        error = driver.prepare([ref(1)])[claim_uid(1)].error
        assert error is not None and "reading pod default/a (status.reservedFor)" in error
        assert daemon_pids(root) == [] and driver.prepared() == {}
        pods.fail = False
        assert driver.prepare([ref(1)])[claim_uid(1)].error is None
    finally:
        driver.close()


def test_a_plugin_instance_beside_another_sees_the_uid_it_recorded(root: Path) -> None:
    # A rolling update: calls serialised by the node lock, each instance seeing the
    # checkpoint, and the UID recorded with the daemon, that the other one changed.
    claims = FakeClaimSource([share(1, "a"), share(2, "b"), share(3, "c")])
    pods = FakePods(
        pod_using("a", "claim-1", run_as=1000),
        pod_using("b", "claim-2", run_as=0),
        pod_using("c", "claim-3", run_as=1000),
    )
    lock = root / "state" / "serialize.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    old, _ = mps_driver(root, claims, pods, NodeFileLock(lock))
    new, daemons = mps_driver(root, claims, pods, NodeFileLock(lock))
    try:
        assert old.prepare([ref(1)])[claim_uid(1)].error is None
        error = new.prepare([ref(2)])[claim_uid(2)].error
        assert error is not None and "serves UID 1000 for 1 other claim(s)" in error
        assert new.prepare([ref(3)])[claim_uid(3)].error is None
        assert daemons.serving() == {GPU: 1000}
    finally:
        old.close()
        new.close()
