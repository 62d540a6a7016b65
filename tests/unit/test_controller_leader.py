"""Leader election on a Lease: one leader, takeover after the lease duration, the fence."""

from __future__ import annotations

from controller_fixtures import FakeClock

from controller.leader import LeaderElector
from tests.fakes.cluster import FakeCluster


def _elector(
    cluster: FakeCluster, identity: str, clock: FakeClock, log: list[str]
) -> LeaderElector:
    return LeaderElector(
        cluster,
        namespace="dra-driver",
        name="lease",
        identity=identity,
        lease_duration_s=15,
        renew_deadline_s=10,
        retry_period_s=2,
        clock=clock,
        on_started=lambda: log.append(f"{identity} started"),
        on_stopped=lambda: log.append(f"{identity} stopped"),
    )


def test_one_leader_and_a_takeover_only_after_the_lease_duration() -> None:
    cluster = FakeCluster()
    clock = FakeClock()
    log: list[str] = []
    a, b = _elector(cluster, "a", clock, log), _elector(cluster, "b", clock, log)
    assert a.step() and a.can_write()
    assert not b.step() and not b.can_write()
    assert b.holder == "a"
    # a stops renewing (it died). b waits a whole lease duration from when it saw
    # the last renewal, on its own clock.
    clock.advance(14)
    assert not b.step()
    assert not a.can_write()  # past the renew deadline: a stopped writing long ago
    clock.advance(2)
    assert b.step() and b.can_write()
    lease = cluster.get("leases", "lease", namespace="dra-driver")
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert log == ["a started", "b started"]


def test_renewals_keep_the_lease_and_a_failing_renewal_ends_the_leadership() -> None:
    cluster = FakeCluster()
    clock = FakeClock()
    log: list[str] = []
    a, b = _elector(cluster, "a", clock, log), _elector(cluster, "b", clock, log)
    a.step()
    for _ in range(10):
        clock.advance(2)
        assert a.step()
        assert not b.step()
    cluster.fail("get", "leases", 503, times=100)
    clock.advance(2)
    a.step()
    assert a.is_leader and a.can_write()
    clock.advance(8)  # 10 s since the last renewal started
    a.step()
    assert not a.is_leader and not a.can_write()
    assert log == ["a started", "a stopped"]


def test_the_fence_closes_at_the_renew_deadline_even_between_rounds() -> None:
    cluster = FakeCluster()
    clock = FakeClock()
    a = _elector(cluster, "a", clock, [])
    a.step()
    clock.advance(9.9)
    assert a.can_write()
    clock.advance(0.2)
    assert not a.can_write()  # before any other replica could take over (15 s)


def test_release_hands_over_at_once() -> None:
    cluster = FakeCluster()
    clock = FakeClock()
    log: list[str] = []
    a, b = _elector(cluster, "a", clock, log), _elector(cluster, "b", clock, log)
    a.step()
    b.step()
    a.release()
    assert not a.can_write()
    assert b.step()
    assert log == ["a started", "a stopped", "b started"]


def test_two_candidates_racing_for_a_free_lease_get_one_winner() -> None:
    cluster = FakeCluster()
    clock = FakeClock()
    a, b = _elector(cluster, "a", clock, []), _elector(cluster, "b", clock, [])

    # b creates the lease between a's read (404) and a's create.
    def b_goes_first() -> None:
        b.step()

    cluster.before("create", "leases", b_goes_first)
    assert not a.step()
    assert b.is_leader and not a.is_leader
