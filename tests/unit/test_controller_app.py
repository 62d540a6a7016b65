"""The controller put together over the in-memory API server: threads, probes, metrics,
leadership, and ``dra-driver explain claim`` against a live cluster."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from controller_fixtures import claim, device_class, node, node_slice, pod

from controller.app import Controller, run_explain_claim
from controller.settings import parse_settings
from dra_cli.main import main
from tests.fakes.cluster import FakeCluster


def _wait(what: str, condition: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _cluster() -> FakeCluster:
    cluster = FakeCluster()
    cluster.create("deviceclasses", device_class())
    for name in ("node-a", "node-b"):
        cluster.create("nodes", node(name))
        cluster.create("resourceslices", node_slice(name, 2))
    return cluster


def _controller(cluster: FakeCluster, *argv: str, identity: str = "c0") -> Controller:
    settings = parse_settings(
        [
            "--identity",
            identity,
            "--watch-timeout-seconds",
            "0.2",
            "--lease-duration-seconds",
            "1.5",
            "--renew-deadline-seconds",
            "1",
            "--retry-period-seconds",
            "0.1",
            *argv,
        ],
        environ={},
    )
    return Controller(settings, cluster, workers=2)


@pytest.fixture
def running() -> Iterator[list[Controller]]:
    started: list[Controller] = []
    yield started
    for controller in started:
        controller.shutdown(timeout_s=5)


def _allocated(cluster: FakeCluster, name: str) -> list[tuple[str, str]]:
    status = cluster.get("resourceclaims", name, namespace="default").get("status") or {}
    results = ((status.get("allocation") or {}).get("devices") or {}).get("results") or []
    return [(r["pool"], r["device"]) for r in results]


def _gated(cluster: FakeCluster, name: str) -> bool:
    return bool(cluster.get("pods", name, namespace="default")["spec"].get("schedulingGates"))


def test_gated_pods_are_placed_by_the_running_controller(running: list[Controller]) -> None:
    cluster = _cluster()
    controller = _controller(
        cluster, "--health-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0"
    )
    running.append(controller)
    controller.start()
    assert controller.wait_synced(10)
    for i in range(4):
        cluster.create("resourceclaims", claim(f"c{i}"))
        cluster.create("pods", pod(f"p{i}", f"c{i}"))
    _wait("every pod placed", lambda: not any(_gated(cluster, f"p{i}") for i in range(4)))
    devices = [d for i in range(4) for d in _allocated(cluster, f"c{i}")]
    assert sorted(devices) == [
        ("node-a", "gpu-0"),
        ("node-a", "gpu-1"),
        ("node-b", "gpu-0"),
        ("node-b", "gpu-1"),
    ]
    (server,) = controller.endpoints  # one address for probes and metrics: one server
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz") as answer:
        assert answer.read() == b"ok\n"
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz") as answer:
        assert answer.read() == b"ok\n"  # urlopen raises for a 503

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as answer:
            return str(answer.read().decode())

    # The count follows the gate removal by a moment.
    _wait("4 placements counted", lambda: 'placements_total{policy="binpack"} 4.0' in metrics())
    assert "dra_driver_leader 1.0" in metrics()
    # The default DeviceClasses were created next to the existing one.
    _wait(
        "the driver's classes",
        lambda: (
            {"mig.gpu.dra-driver.io", "timeslicing.gpu.dra-driver.io"}
            <= {c["metadata"]["name"] for c in cluster.objects("deviceclasses")}
        ),
    )


def test_readiness_waits_for_the_first_lists() -> None:
    cluster = _cluster()
    cluster.fail("list", "pods", 503, times=1000)
    controller = _controller(cluster, "--health-address", "127.0.0.1:0")
    controller.start()
    try:
        (server,) = controller.endpoints
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz")
        assert info.value.code == 503
        assert b"pods" in info.value.read()
    finally:
        controller.shutdown(timeout_s=5)


def test_a_standby_takes_over_when_the_leader_stops(running: list[Controller]) -> None:
    cluster = _cluster()
    first = _controller(cluster, identity="first")
    running.append(first)
    first.start()
    _wait("a leader", lambda: first.elector is not None and first.elector.is_leader)
    second = _controller(cluster, identity="second")
    running.append(second)
    second.start()
    cluster.create("resourceclaims", claim("c0"))
    cluster.create("pods", pod("p0", "c0"))
    _wait("p0 placed", lambda: not _gated(cluster, "p0"))
    assert second.elector is not None and not second.elector.is_leader
    first.shutdown(timeout_s=5)  # releases the lease
    _wait("the standby leading", lambda: second.elector is not None and second.elector.is_leader)
    cluster.create("resourceclaims", claim("c1"))
    cluster.create("pods", pod("p1", "c1"))
    _wait("p1 placed by the new leader", lambda: not _gated(cluster, "p1"))
    assert set(_allocated(cluster, "c0")).isdisjoint(_allocated(cluster, "c1"))


def test_a_relisted_cache_after_410_keeps_placing(running: list[Controller]) -> None:
    cluster = _cluster()
    controller = _controller(cluster, "--no-leader-elect")
    running.append(controller)
    controller.start()
    assert controller.wait_synced(10)
    cluster.compact()
    cluster.create("resourceclaims", claim("c"))
    cluster.create("pods", pod("p", "c"))
    cluster.compact()
    _wait("p placed", lambda: not _gated(cluster, "p"))
    assert sum(m.value for m in _samples(controller, "dra_driver_watch_relists_total")) >= 1


def test_no_pod_is_placed_before_every_watch_has_listed(running: list[Controller]) -> None:
    """The DeviceTaintRules' first lists fail while the other watches list: a worker that
    decided then would place the pod on node-a (the first fit), whose GPUs an admin took
    away. It waits for the rules, and places the pod on node-b."""
    cluster = _cluster()
    drain = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceTaintRule",
        "metadata": {"name": "drain-a"},
        "spec": {
            "deviceSelector": {"pool": "node-a"},
            "taint": {"key": "example.com/maintenance", "effect": "NoExecute"},
        },
    }
    cluster.create("devicetaintrules", drain)
    cluster.create("resourceclaims", claim("c"))
    cluster.create("pods", pod("p", "c"))
    cluster.fail("list", "devicetaintrules", 503, times=2)
    controller = _controller(cluster, "--no-leader-elect", "--policy", "first-fit")
    running.append(controller)
    controller.start()
    _wait("p placed", lambda: not _gated(cluster, "p"))
    assert [pool for pool, _ in _allocated(cluster, "c")] == ["node-b"]


def _samples(controller: Controller, name: str) -> list[Any]:
    return [
        sample
        for metric in controller.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == name
    ]


def test_explain_claim_against_the_live_cluster() -> None:
    cluster = _cluster()
    cluster.create("resourceclaims", claim("big", count=3))
    out = io.StringIO()
    code = run_explain_claim(
        ["claim", "default/big"], node=None, output="json", out=out, client=cluster
    )
    assert code == 0
    report = json.loads(out.getvalue())
    assert report["claims"] == ["claim default/big"]
    assert report["allocatable"] is False
    assert [n["node"] for n in report["nodes"]] == ["node-a", "node-b"]
    table = io.StringIO()
    assert (
        run_explain_claim(
            ["claim", "default/big"], node="node-a", output="table", out=table, client=cluster
        )
        == 0
    )
    assert "node-a" in table.getvalue() and "node-b" not in table.getvalue()


def test_explain_claim_errors() -> None:
    cluster = _cluster()
    out = io.StringIO()
    assert (
        run_explain_claim(
            ["claim", "default/none"], node=None, output="table", out=out, client=cluster
        )
        == 1
    )
    assert run_explain_claim(["pod", "x"], node=None, output="table", out=out, client=cluster) == 2
    assert out.getvalue() == ""


def test_the_cli_reaches_the_controller(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["controller", "--policy", "fastest"]) == 2
    assert "--policy: unknown policy 'fastest'" in capsys.readouterr().err
    assert main(["explain", "claim", "nonamespace"]) == 2
