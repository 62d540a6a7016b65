"""UnprepareLedger: which prepare call may still prepare a claim, and what it remembers."""

from __future__ import annotations

from kubelet_plugin.driver.ordering import UnprepareLedger


def test_a_call_skips_a_claim_unprepared_after_it_arrived_only() -> None:
    ledger = UnprepareLedger()
    with ledger.batch() as stale:
        ledger.record_unprepare("uid-a")
        with ledger.batch() as fresh:
            assert ledger.unprepared_since("uid-a", stale)
            # A call that arrived after the unprepare (another pod of the claim) goes on.
            assert not ledger.unprepared_since("uid-a", fresh)
            assert not ledger.unprepared_since("uid-b", stale)


def test_an_unprepare_is_remembered_only_while_an_older_call_runs() -> None:
    ledger = UnprepareLedger()
    ledger.record_unprepare("uid-a")  # no call in flight: nothing could race with it
    assert ledger.remembered() == 0
    with ledger.batch() as first:
        ledger.record_unprepare("uid-a")
        with ledger.batch():
            ledger.record_unprepare("uid-b")
        # The newer call ended; the first still predates both unprepares.
        assert ledger.remembered() == 2
        assert ledger.unprepared_since("uid-b", first)
    assert ledger.remembered() == 0


def test_the_oldest_unprepare_is_forgotten_past_the_limit() -> None:
    ledger = UnprepareLedger(limit=2)
    with ledger.batch() as ticket:
        for uid in ("uid-a", "uid-b", "uid-c"):
            ledger.record_unprepare(uid)
        assert ledger.remembered() == 2
        assert not ledger.unprepared_since("uid-a", ticket)
        assert ledger.unprepared_since("uid-c", ticket)
