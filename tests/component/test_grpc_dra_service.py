"""NodePrepareResources / NodeUnprepareResources over v1 and v1beta1, as the kubelet calls them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from fake_node_driver import DRIVER, POOL, FakeNodeDriver, claim
from kubelet_standin import (
    KUBELET_1_33_SERVICES,
    KUBELET_1_36_SERVICES,
    KubeletStandin,
    RegisteredPlugin,
    WireDevice,
)
from plugin_factory import PluginFactory

from kubelet_plugin.node_driver import ClaimRef

pytestmark = pytest.mark.component

KUBELETS = {"v1": KUBELET_1_36_SERVICES, "v1beta1": KUBELET_1_33_SERVICES}


@pytest.fixture(params=sorted(KUBELETS))
def api_version(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    return version


@pytest.fixture
def driver() -> FakeNodeDriver:
    return FakeNodeDriver()


@pytest.fixture
def kubelet(
    make_plugin: PluginFactory, driver: FakeNodeDriver, api_version: str
) -> Iterator[RegisteredPlugin]:
    """The plugin, registered with a kubelet that speaks ``api_version``."""
    plugin = make_plugin(driver)
    with KubeletStandin(KUBELETS[api_version]).register(plugin.registration_socket) as registered:
        assert registered.service == f"{api_version}.DRAPlugin"
        yield registered


def test_prepare_returns_the_devices_of_each_claim(
    kubelet: RegisteredPlugin, driver: FakeNodeDriver, api_version: str
) -> None:
    outcomes = kubelet.prepare([claim(1), claim(2)])

    assert driver.prepare_calls == [("uid-0001", "uid-0002")]
    assert set(outcomes) == {"uid-0001", "uid-0002"}
    first = outcomes["uid-0001"]
    assert first.error == ""
    assert first.devices == (
        # The subrequest gpu/large is reported as its request, gpu.
        WireDevice(("gpu",), POOL, "gpu-0", (f"{DRIVER}/gpu=uid-0001-gpu-0",), None),
        WireDevice(
            ("extra",),
            POOL,
            "gpu-1",
            (f"{DRIVER}/gpu=uid-0001-gpu-1", f"{DRIVER}/gpu=common"),
            # v1beta1 has no share_id field.
            "share-1" if api_version == "v1" else None,
        ),
    )
    assert outcomes["uid-0002"].devices[0].cdi_device_ids == (f"{DRIVER}/gpu=uid-0002-gpu-0",)


def test_unprepare_succeeds_for_prepared_and_unknown_claims(
    kubelet: RegisteredPlugin, driver: FakeNodeDriver
) -> None:
    kubelet.prepare([claim(1)])
    assert kubelet.unprepare([claim(1), claim(9)]) == {"uid-0001": "", "uid-0009": ""}
    assert driver.unprepare_calls == [("uid-0001", "uid-0009")]
    assert driver.prepared == set()


def test_a_failing_claim_gets_its_own_error(
    kubelet: RegisteredPlugin, driver: FakeNodeDriver
) -> None:
    driver.errors["uid-0002"] = "opaque config: unknown field sharing.mode"

    outcomes = kubelet.prepare([claim(1), claim(2), claim(3)])

    assert outcomes["uid-0002"].error == "opaque config: unknown field sharing.mode"
    assert outcomes["uid-0002"].devices == ()
    assert [outcomes[u].error for u in ("uid-0001", "uid-0003")] == ["", ""]
    assert all(len(outcomes[u].devices) == 2 for u in ("uid-0001", "uid-0003"))

    assert kubelet.unprepare([claim(1), claim(2)]) == {
        "uid-0001": "",
        "uid-0002": "opaque config: unknown field sharing.mode",
    }


def test_many_claims_in_one_call(kubelet: RegisteredPlugin, driver: FakeNodeDriver) -> None:
    claims = [claim(n, namespace=f"team-{n % 7}") for n in range(500)]

    outcomes = kubelet.prepare(claims)

    assert len(outcomes) == 500
    assert all(o.error == "" and len(o.devices) == 2 for o in outcomes.values())
    assert outcomes["uid-0499"].devices[0].cdi_device_ids == (f"{DRIVER}/gpu=uid-0499-gpu-0",)
    assert len(driver.prepare_calls) == 1
    assert set(kubelet.unprepare(claims).values()) == {""}


def test_concurrent_calls_reach_the_driver_concurrently(
    make_plugin: PluginFactory, api_version: str
) -> None:
    # Every prepare waits until four are in the driver at once: serialized
    # calls would break the barrier and fail.
    driver = FakeNodeDriver(barrier=threading.Barrier(4, timeout=30))
    plugin = make_plugin(driver, max_driver_calls=4)
    with (
        KubeletStandin(KUBELETS[api_version]).register(plugin.registration_socket) as kubelet,
        ThreadPoolExecutor(4) as pool,
    ):
        results = list(pool.map(lambda n: kubelet.prepare([claim(n)]), range(4)))

    for n, outcomes in enumerate(results):
        assert outcomes[claim(n).uid].error == ""
    assert sorted(driver.prepare_calls) == [(claim(n).uid,) for n in range(4)]


def test_a_driver_exception_fails_only_that_calls_claims(
    kubelet: RegisteredPlugin, driver: FakeNodeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="kubelet_plugin")
    driver.raise_for.add("uid-0002")

    outcomes = kubelet.prepare([claim(1), claim(2)])

    for uid in ("uid-0001", "uid-0002"):
        assert "RuntimeError: NVML_ERROR_GPU_IS_LOST" in outcomes[uid].error
        assert "the kubelet retries" in outcomes[uid].error
        assert outcomes[uid].devices == ()
    (record,) = [r for r in caplog.records if "raised" in r.getMessage()]
    assert record.exc_info is not None
    assert "claim default/claim-2" in record.getMessage()

    # The next call, without the failing claim, works.
    assert kubelet.prepare([claim(1)])["uid-0001"].error == ""

    errors = kubelet.unprepare([claim(2)])
    assert "RuntimeError: checkpoint is read-only" in errors["uid-0002"]


def test_a_claim_the_driver_leaves_out_gets_an_error(
    kubelet: RegisteredPlugin, driver: FakeNodeDriver
) -> None:
    driver.omit.add("uid-0002")

    outcomes = kubelet.prepare([claim(1), claim(2)])
    assert outcomes["uid-0001"].error == ""
    assert "returned no result for this claim" in outcomes["uid-0002"].error

    errors = kubelet.unprepare([claim(1), claim(2)])
    assert errors["uid-0001"] == ""
    assert "returned no result for this claim" in errors["uid-0002"]


def test_an_incomplete_claim_reference_is_answered_without_the_driver(
    kubelet: RegisteredPlugin, driver: FakeNodeDriver
) -> None:
    nameless = ClaimRef(namespace="default", name="", uid="uid-nameless")

    outcomes = kubelet.prepare([nameless, claim(1)])

    assert "namespace, name or uid" in outcomes["uid-nameless"].error
    assert outcomes["uid-0001"].error == ""
    assert driver.prepare_calls == [("uid-0001",)]


def test_a_repeated_claim_reaches_the_driver_once(
    kubelet: RegisteredPlugin, driver: FakeNodeDriver
) -> None:
    outcomes = kubelet.prepare([claim(1), claim(1)])
    assert list(outcomes) == ["uid-0001"]
    assert driver.prepare_calls == [("uid-0001",)]


def test_an_empty_request_does_not_call_the_driver(
    kubelet: RegisteredPlugin, driver: FakeNodeDriver
) -> None:
    assert kubelet.prepare([]) == {}
    assert kubelet.unprepare([]) == {}
    assert driver.prepare_calls == []
    assert driver.unprepare_calls == []


def test_a_slow_driver_does_not_hold_the_rpc_workers_past_the_deadline(
    make_plugin: PluginFactory,
) -> None:
    gate = threading.Event()
    driver = FakeNodeDriver(gate=gate)
    # Two RPC workers: if handlers waited for the blocked driver beyond the
    # callers' deadlines, the third and fourth call would find none free.
    plugin = make_plugin(driver, max_rpc_workers=2, max_driver_calls=4)
    try:
        with KubeletStandin().register(plugin.registration_socket) as kubelet:
            for n in range(3):
                # The plugin answers just before the deadline; on a loaded
                # machine the kubelet's deadline may fire first.
                try:
                    error = kubelet.prepare([claim(n)], timeout=0.5)[claim(n).uid].error
                except grpc.RpcError as rpc_error:
                    assert rpc_error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                else:
                    assert "did not finish before the kubelet's deadline" in error
            assert kubelet.prepare([], timeout=10) == {}
            assert kubelet.unprepare([claim(7)], timeout=10) == {"uid-0007": ""}
    finally:
        gate.set()
    assert sorted(driver.prepare_calls) == [(claim(n).uid,) for n in range(3)]


def test_a_call_still_queued_at_the_deadline_is_dropped_not_run_later(
    make_plugin: PluginFactory,
) -> None:
    gate = threading.Event()
    driver = FakeNodeDriver(gate=gate)
    # One driver worker, held by the first call: the second waits in the queue.
    plugin = make_plugin(driver, max_driver_calls=1)
    try:
        with KubeletStandin().register(plugin.registration_socket) as kubelet:
            for n in (1, 2):
                try:
                    error = kubelet.prepare([claim(n)], timeout=0.5)[claim(n).uid].error
                except grpc.RpcError as rpc_error:
                    assert rpc_error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                else:
                    assert "before the kubelet's deadline" in error
            gate.set()
            # The kubelet gave up on claim 2 and unprepared it (this call queues
            # behind the first prepare, which is free to finish now).
            assert kubelet.unprepare([claim(2)], timeout=10) == {"uid-0002": ""}
    finally:
        gate.set()
    # Claim 2's prepare never reached the driver, so it cannot undo that unprepare.
    assert driver.prepare_calls == [(claim(1).uid,)]
    assert driver.prepared == {claim(1).uid}
