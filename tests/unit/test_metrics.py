"""Prometheus metrics: the metered NodeDriver decorator, the gauges, and the endpoint
both agents serve them and their probes on (agent_kit.metrics_server)."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence

import pytest

from agent_kit.metrics_server import EndpointServer
from kubelet_plugin.metrics import MeteredNodeDriver, PluginMetrics
from kubelet_plugin.node_driver import ClaimRef, PreparedDevice, PrepareResult

OK = ClaimRef("default", "ok", "uid-ok")
BAD = ClaimRef("default", "bad", "uid-bad")
DEVICE = PreparedDevice(("gpu",), "node-a", "gpu-0", ("gpu.dra-driver.io/gpu=uid-ok-gpu-0",))


class StubDriver:
    """Prepares every claim but ``bad``; ``explode`` makes calls raise."""

    def __init__(self) -> None:
        self.explode = False

    def prepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, PrepareResult]:
        if self.explode:
            raise RuntimeError("driver bug")
        return {
            c.uid: PrepareResult(error="claim default/bad: not allocated")
            if c is BAD
            else PrepareResult(devices=(DEVICE,))
            for c in claims
        }

    def unprepare(self, claims: Sequence[ClaimRef]) -> Mapping[str, str | None]:
        if self.explode:
            raise RuntimeError("driver bug")
        return {c.uid: "checkpoint not writable" if c is BAD else None for c in claims}


@pytest.fixture
def metrics() -> PluginMetrics:
    return PluginMetrics()


def value(metrics: PluginMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_every_series_exists_at_zero_before_the_first_call(metrics: PluginMetrics) -> None:
    for operation in ("prepare", "unprepare"):
        for result in ("success", "error"):
            assert (
                value(metrics, "dra_driver_requests_total", operation=operation, result=result) == 0
            )
            assert (
                value(metrics, "dra_driver_claims_total", operation=operation, result=result) == 0
            )
        assert value(metrics, "dra_driver_request_duration_seconds_count", operation=operation) == 0


def test_prepare_calls_are_counted_by_result_per_call_and_per_claim(
    metrics: PluginMetrics,
) -> None:
    inner = StubDriver()
    driver = MeteredNodeDriver(inner, metrics)

    answer = driver.prepare([OK])
    assert answer == inner.prepare([OK])  # the wrapped driver's answer, untouched
    driver.prepare([OK, BAD])
    driver.prepare([])

    assert value(metrics, "dra_driver_requests_total", operation="prepare", result="success") == 2
    assert value(metrics, "dra_driver_requests_total", operation="prepare", result="error") == 1
    assert value(metrics, "dra_driver_claims_total", operation="prepare", result="success") == 2
    assert value(metrics, "dra_driver_claims_total", operation="prepare", result="error") == 1
    assert value(metrics, "dra_driver_request_duration_seconds_count", operation="prepare") == 3
    assert value(metrics, "dra_driver_requests_total", operation="unprepare", result="success") == 0


def test_unprepare_calls_are_counted_by_result(metrics: PluginMetrics) -> None:
    driver = MeteredNodeDriver(StubDriver(), metrics)

    assert driver.unprepare([OK, BAD]) == {"uid-ok": None, "uid-bad": "checkpoint not writable"}

    assert value(metrics, "dra_driver_requests_total", operation="unprepare", result="error") == 1
    assert value(metrics, "dra_driver_claims_total", operation="unprepare", result="success") == 1
    assert value(metrics, "dra_driver_claims_total", operation="unprepare", result="error") == 1
    assert value(metrics, "dra_driver_request_duration_seconds_count", operation="unprepare") == 1


def test_a_call_that_raises_is_counted_and_the_error_passes_through(
    metrics: PluginMetrics,
) -> None:
    inner = StubDriver()
    inner.explode = True
    driver = MeteredNodeDriver(inner, metrics)

    with pytest.raises(RuntimeError, match="driver bug"):
        driver.prepare([OK])
    with pytest.raises(RuntimeError, match="driver bug"):
        driver.unprepare([OK])

    for operation in ("prepare", "unprepare"):
        assert (
            value(metrics, "dra_driver_requests_total", operation=operation, result="exception")
            == 1
        )
        assert value(metrics, "dra_driver_request_duration_seconds_count", operation=operation) == 1
        assert value(metrics, "dra_driver_claims_total", operation=operation, result="error") == 0


def test_gauges_read_their_sources_at_each_scrape(metrics: PluginMetrics) -> None:
    prepared: dict[str, Sequence[object]] = {"uid-1": ["gpu-0", "gpu-1"]}
    tainted = [0]
    pending = [0]
    metrics.track_prepared(lambda: prepared)
    metrics.track_tainted(lambda: tainted[0])
    metrics.track_cleanup_pending(lambda: pending[0])
    metrics.published_devices.set(52)

    assert value(metrics, "dra_driver_prepared_claims") == 1
    assert value(metrics, "dra_driver_prepared_devices") == 2
    prepared["uid-2"] = ["gpu-3"]
    tainted[0] = 7
    assert value(metrics, "dra_driver_prepared_claims") == 2
    assert value(metrics, "dra_driver_prepared_devices") == 3
    assert value(metrics, "dra_driver_tainted_devices") == 7
    assert value(metrics, "dra_driver_cleanup_pending_claims") == 0
    pending[0] = 2
    assert value(metrics, "dra_driver_cleanup_pending_claims") == 2
    assert value(metrics, "dra_driver_published_devices") == 52


def test_health_events_are_counted_by_kind_and_action(metrics: PluginMetrics) -> None:
    metrics.count_health_event("xid", "tainted")
    metrics.count_health_event("xid", "ignored")
    metrics.count_health_event("xid", "ignored")

    assert value(metrics, "dra_driver_health_events_total", kind="xid", action="ignored") == 2
    assert value(metrics, "dra_driver_health_events_total", kind="xid", action="tainted") == 1


def test_each_instance_has_its_own_registry() -> None:
    first, second = PluginMetrics(), PluginMetrics()
    first.published_devices.set(3)
    assert value(second, "dra_driver_published_devices") == 0


@pytest.fixture
def server(metrics: PluginMetrics) -> Iterator[EndpointServer]:
    served = EndpointServer("127.0.0.1:0", metrics=metrics)
    served.start()
    try:
        yield served
    finally:
        served.stop()


def test_the_endpoint_serves_the_text_format(
    metrics: PluginMetrics, server: EndpointServer
) -> None:
    MeteredNodeDriver(StubDriver(), metrics).prepare([OK])
    host, port = server.bound_address.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) > 0

    with urllib.request.urlopen(f"http://{server.bound_address}/metrics", timeout=10) as reply:
        body = reply.read().decode()
        assert reply.headers["Content-Type"].startswith("text/plain")

    assert 'dra_driver_requests_total{operation="prepare",result="success"} 1.0' in body
    assert body == metrics.render().decode()


def test_a_stopped_endpoint_no_longer_answers(metrics: PluginMetrics) -> None:
    served = EndpointServer("127.0.0.1:0", metrics=metrics)
    served.start()
    address = served.bound_address
    served.stop()
    served.stop()  # idempotent

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://{address}/metrics", timeout=5)


def test_an_address_without_a_port_is_refused(metrics: PluginMetrics) -> None:
    with pytest.raises(ValueError, match="has no port"):
        EndpointServer("localhost", metrics=metrics)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_probes_answer_what_their_checks_say_and_unknown_paths_are_404() -> None:
    problem: list[str] = []
    served = EndpointServer(
        "127.0.0.1:0",
        liveness=lambda: None,
        readiness=lambda: problem[0] if problem else None,
    )
    served.start()
    base = f"http://127.0.0.1:{served.port}"
    try:
        assert _get(f"{base}/healthz") == (200, "ok\n")
        assert _get(f"{base}/livez") == (200, "ok\n")
        assert _get(f"{base}/readyz") == (200, "ok\n")
        problem.append("waiting for the first list of pods")
        assert _get(f"{base}/readyz") == (503, "waiting for the first list of pods\n")
        # Without metrics there is no /metrics; other paths are not found either.
        assert _get(f"{base}/metrics")[0] == 404
        assert _get(f"{base}/")[0] == 404
    finally:
        served.stop()


def test_the_endpoint_speaks_openmetrics_and_gzip_when_asked(
    metrics: PluginMetrics, server: EndpointServer
) -> None:
    request = urllib.request.Request(
        f"http://{server.bound_address}/metrics",
        headers={"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
        assert reply.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(reply.read()).decode()
    assert body.endswith("# EOF\n")
