"""The work queue: deduplication, delays, per-key backoff, the bound and its resync."""

from __future__ import annotations

from controller_fixtures import FakeClock

from controller.workqueue import WorkQueue


def test_a_key_is_queued_once_and_requeued_when_it_changed_while_processed() -> None:
    queue = WorkQueue()
    queue.add_all(["a", "b", "a"])
    assert len(queue) == 2
    assert queue.get(0) == "a"
    queue.add("a")  # changed while being processed
    assert queue.get(0) == "b"
    assert queue.get(0) is None  # "a" is not handed out twice at once
    queue.done("a")
    assert queue.get(0) == "a"


def test_delays_and_backoff_follow_the_clock() -> None:
    clock = FakeClock()
    queue = WorkQueue(base_s=1.0, cap_s=4.0, clock=clock)
    assert queue.add_rate_limited("k") == 1.0
    assert queue.get(0) is None
    clock.advance(1.0)
    assert queue.get(0) == "k"
    queue.done("k")
    assert [queue.add_rate_limited("k") for _ in range(3)] == [2.0, 4.0, 4.0]
    queue.forget("k")
    assert queue.backoff("k") == 1.0


def test_a_key_that_fails_thousands_of_times_keeps_the_capped_backoff() -> None:
    # 2.0 ** 1024 does not fit a float: the worker that queued the key used to die there.
    queue = WorkQueue(base_s=0.001, cap_s=2.0, clock=FakeClock())
    delays = [queue.add_rate_limited("k") for _ in range(2_000)]
    assert delays[-1] == 2.0 and queue.backoff("k") == 2.0


def test_an_immediate_add_beats_a_pending_delay() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after("k", 60)
    queue.add("k")
    assert queue.get(0) == "k"
    queue.done("k")
    clock.advance(61)
    assert queue.get(0) is None  # the superseded delay does not fire again


def test_the_bound_drops_nothing_for_good() -> None:
    everything = [f"k{i}" for i in range(10)]
    seen: list[str] = []
    # resync answers what still needs work, as the controller's does.
    queue = WorkQueue(maxsize=4, resync=lambda: [k for k in everything if k not in seen])
    queue.add_all(everything)
    assert len(queue) == 4 and queue.overflowed and queue.dropped == 6
    while (key := queue.get(0)) is not None:
        seen.append(key)
        queue.done(key)
    assert set(seen) == set(everything)


def test_shutdown_wakes_the_workers() -> None:
    queue = WorkQueue()
    queue.shutdown()
    assert queue.get(5) is None
    queue.add("late")
    assert len(queue) == 0
