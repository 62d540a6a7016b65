"""Concurrent kubelet calls over real gRPC to the real driver: no device twice, a claim once.

test_driver_concurrency does the same at the driver; here the calls also go
through the gRPC server's workers and the dispatcher's pool, as the kubelet's
concurrent pod syncs do.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from driver_fixtures import (
    cdi_root,
    checkpoint_states,
    claim,
    claim_uid,
    expected_id,
    files_in,
    spec_path,
    validate_cdi_file,
)
from kubelet_standin import ClaimOutcome
from plugin_factory import PluginFactory
from served_driver import served_driver

from kubelet_plugin.node_driver import ClaimRef
from tests.fakes.claim_source import FakeClaimSource

pytestmark = pytest.mark.component

DISTINCT = 50
GPUS = DISTINCT // 2
SAME = 20
WAIT_S = 30


def ref(n: int) -> ClaimRef:
    return ClaimRef(namespace="default", name=f"claim-{n}", uid=claim_uid(n))


def all_at_once(calls: int, call: Callable[[int], ClaimOutcome]) -> list[ClaimOutcome]:
    """``call(0..calls-1)``, each from its own thread, all released together."""
    start = threading.Barrier(calls, timeout=WAIT_S)

    def run(n: int) -> ClaimOutcome:
        start.wait()
        return call(n)

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(run, range(calls)))


def test_fifty_claims_racing_in_pairs_for_each_gpu(
    tmp_path: Path, make_plugin: PluginFactory
) -> None:
    # Claims n and n + 25 are both allocated gpu-n: each GPU goes to one of them.
    claims = FakeClaimSource([claim(n, [f"gpu-{n % GPUS}"]) for n in range(DISTINCT)])
    with served_driver(make_plugin, tmp_path, claims, gpus=GPUS) as (kubelet, _):
        outcomes = all_at_once(DISTINCT, lambda n: kubelet.prepare([ref(n)])[claim_uid(n)])

    winners = [n for n, o in enumerate(outcomes) if o.error == ""]
    handed_out = Counter(o.devices[0].device_name for o in outcomes if o.error == "")
    assert handed_out == Counter(f"gpu-{g}" for g in range(GPUS)), "each GPU exactly once"
    for n, outcome in enumerate(outcomes):
        if outcome.error:
            rival = n + GPUS if n < GPUS else n - GPUS
            assert rival in winners
            assert f"already prepared for claim default/claim-{rival}" in outcome.error
        else:
            assert outcome.devices[0].cdi_device_ids == (expected_id(n, f"gpu-{n % GPUS}"),)
    assert checkpoint_states(tmp_path) == {claim_uid(n): "PrepareCompleted" for n in winners}
    assert files_in(cdi_root(tmp_path)) == sorted(spec_path(tmp_path, n).name for n in winners)


def test_twenty_prepares_of_one_claim_prepare_it_once(
    tmp_path: Path, make_plugin: PluginFactory
) -> None:
    claims = FakeClaimSource([claim(1, ["gpu-1", "gpu-2"])])
    with served_driver(make_plugin, tmp_path, claims) as (kubelet, _):
        outcomes = all_at_once(SAME, lambda _: kubelet.prepare([ref(1)])[claim_uid(1)])

    assert [o.error for o in outcomes] == [""] * SAME
    assert {tuple(d.cdi_device_ids for d in o.devices) for o in outcomes} == {
        ((expected_id(1, "gpu-1"),), (expected_id(1, "gpu-2"),))
    }
    assert claims.reads == 1, "the others found it prepared"
    assert files_in(cdi_root(tmp_path)) == [spec_path(tmp_path, 1).name]
    validate_cdi_file(spec_path(tmp_path, 1))
    assert checkpoint_states(tmp_path) == {claim_uid(1): "PrepareCompleted"}
