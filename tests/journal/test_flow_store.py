"""The store's part for flow control, for every store (see conftest.py): the queue's order,
skipped services, held rows and the values kept across restarts."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from syncd.config.model import ServiceConfig
from syncd.journal.states import IllegalTransition, State
from syncd.journal.store import Decision, Store
from syncd.work.flow.clock import Clock
from syncd.work.flow.quota import PRUNE_FROM, Quotas

from .test_store import FAR, always_valid, claimed, hashed, ident, uploaded


def test_claims_follow_priority_then_rank_then_arrival(store: Store) -> None:
    store.record_seen(b"/low/old", "ads", ident(1), priority=0, rank=10)
    store.record_seen(b"/low/new", "ads", ident(2), priority=0, rank=-20)
    store.record_seen(b"/high/b", "ads", ident(3), priority=5, rank=b"/high/b")
    store.record_seen(b"/high/a", "ads", ident(4), priority=5, rank=b"/high/a")
    order = []
    while (row := store.claim(FAR)) is not None:
        order.append(row.path)
    assert order == [b"/high/a", b"/high/b", b"/low/new", b"/low/old"]


def test_claims_skip_full_services_without_blocking_the_rest(store: Store) -> None:
    store.record_seen(b"/a1", "ads", ident(1), priority=9)
    store.record_seen(b"/p1", "photos", ident(2))
    row = store.claim(FAR, frozenset({"ads"}))
    assert row is not None and row.path == b"/p1"
    assert store.claim(FAR, frozenset({"ads"})) is None
    assert store.next_due(frozenset({"ads"})) is None
    assert store.next_due() == 0


def test_held_rows_wait_until_released_where_they_were(store: Store) -> None:
    in_hand = hashed(store, b"/w/a")  # a worker holds it: not for hold_waiting to move
    store.record_seen(b"/w/b", "ads", ident(2))
    store.record_seen(b"/w/other", "photos", ident(3))
    assert store.hold_waiting("ads", "paused", None) == 1
    assert store.mark_held(in_hand, "paused", None)
    store.release(in_hand.id)
    assert store.counts()[State.HELD] == 2
    assert [r.path for r in store.held(10)] == [b"/w/a", b"/w/b"]
    assert {r.error for r in store.held(10)} == {"paused"}
    claimed_next = store.claim(FAR)
    assert claimed_next is not None and claimed_next.path == b"/w/other"
    assert store.claim(FAR) is None, "held rows are not claimable"
    assert store.release_held("ads") == 2
    assert {r.path for r in store.in_state(State.HASHED)} == {b"/w/a"}
    assert {r.path for r in store.in_state(State.SEEN)} == {b"/w/b", b"/w/other"}
    again = store.claim(FAR)
    assert again is not None and again.path == b"/w/a"
    assert store.mark_held(again, "quota", 123.0)
    assert [(r.path, r.due) for r in store.held(10)] == [(b"/w/a", 123.0)]


def test_an_uploading_row_can_be_held_a_done_one_cannot(store: Store) -> None:
    decision = store.begin_upload(hashed(store, b"/w/a"), always_valid)
    assert decision is not None and decision[0] is Decision.UPLOAD
    assert store.mark_held(decision[1], "rate limited (HTTP 429)", 60.0)
    row = store.get(decision[1].id)
    assert row is not None and row.state is State.HELD
    with pytest.raises(IllegalTransition):
        store.mark_uploaded(row, {"id": "1"})  # a held row waits: it is not uploaded
    other = uploaded(store, b"/w/b", {"id": "2"}, n=2)
    store.mark_done(other.id)
    done = store.get(other.id)
    assert done is not None and done.state is State.DONE
    with pytest.raises(IllegalTransition):
        store.mark_held(done, "paused", None)


def test_flow_state_survives_a_reopen(open_store) -> None:
    store = open_store()
    assert store.flow_state("paused") is None
    store.save_flow_state("paused", ["ads"])
    store.save_flow_state("paused", ["ads", "photos"])
    store.save_flow_state("quota:ads", [1.5, 3, 300, [1, 2, 3]])
    store.close()
    again = open_store()
    assert again.flow_state("paused") == ["ads", "photos"]
    assert again.flow_state("quota:ads") == [1.5, 3, 300, [1, 2, 3]]


def test_once_outcome_counts_exhausted_retries_as_failed(store: Store) -> None:
    decision = store.begin_upload(hashed(store, b"/w/a"), always_valid)
    assert decision is not None
    assert store.mark_retry(decision[1], "HTTP 503", FAR)
    store.record_seen(b"/w/b", "ads", ident(2))
    assert store.once_outcome(retries=3) == (2, 0)
    assert store.once_outcome(retries=0) == (1, 1)


def test_flow_state_changes_from_two_hosts_take_turns(open_store) -> None:
    """A fleet's hosts counting against one quota: no count is lost to a race."""
    hosts = [open_store(owner="host-a"), open_store(owner="host-b")]

    def count(store: Store) -> None:
        for _ in range(25):
            store.change_flow_state("quota:ads", lambda n: (n or 0) + 1)

    threads = [threading.Thread(target=count, args=(store,)) for store in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert hosts[0].flow_state("quota:ads") == 50
    hosts[1].change_flow_state("quota:ads", lambda n: n)
    assert hosts[1].flow_state("quota:ads") == 50


def test_rows_held_for_a_route_go_on_where_they_were_once_routed(
    open_store: Callable[..., Store],
) -> None:
    """Only rows held for that reason, and only those the asking host routes: another
    host's (in a fleet) and rows held for a pause stay held; progress is kept."""
    store = open_store()
    unrouted = "no route"
    decision = store.begin_upload(hashed(store, b"/w/a"), always_valid)
    assert decision is not None and decision[0] is Decision.UPLOAD
    assert store.save_progress(decision[1], {"offset": 4096})
    assert store.mark_held(decision[1], unrouted, None)
    store.release(decision[1].id)
    store.record_seen(b"/w/b", "ads", ident(2))
    store.record_seen(b"/other/c", "ads", ident(3))
    assert store.hold_waiting("ads", unrouted, None) == 2
    paused = claimed(store, b"/w/d", n=4)
    assert store.mark_held(paused, "paused", None)
    store.release(paused.id)
    asked: list[tuple[bytes, str]] = []

    def routes(path: bytes, service: str) -> bool:
        asked.append((path, service))
        return path.startswith(b"/w/")

    other_host = open_store(owner="host-b")
    assert other_host.release_routed(unrouted, lambda path, service: False) == 0
    assert store.release_routed(unrouted, routes) == 2
    assert sorted(asked) == [(b"/other/c", "ads"), (b"/w/a", "ads"), (b"/w/b", "ads")]
    assert store.release_routed(unrouted, routes) == 0
    assert {(r.path, r.error) for r in store.held(10)} == {
        (b"/other/c", unrouted),
        (b"/w/d", "paused"),
    }
    resumed = store.get(decision[1].id)
    assert resumed is not None and resumed.state is State.HASHED and resumed.error is None
    assert store.load_progress(resumed) == {"offset": 4096}
    assert {r.path for r in store.in_state(State.SEEN)} == {b"/w/b"}
    again = store.claim(FAR)
    assert again is not None and again.path == b"/w/a"


def test_a_clock_step_moves_retry_due_times_and_nothing_else(store: Store) -> None:
    held = claimed(store, b"/w/held", n=2)
    assert store.mark_held(held, "quota", 9_000.0)
    store.release(held.id)
    decision = store.begin_upload(hashed(store, b"/w/retry"), always_valid)
    assert decision is not None
    assert store.mark_retry(decision[1], "HTTP 503", 5_000.0)
    store.release(decision[1].id)
    assert store.shift_retries(-3_600.0) == 1
    assert store.next_due() == 1_400.0
    assert store.claim(1_399.0) is None
    again = store.claim(1_400.0)
    assert again is not None and again.path == b"/w/retry"
    assert [r.due for r in store.held(10)] == [9_000.0]


def test_not_done_leaves_out_the_done_files_and_those_gone(store: Store) -> None:
    done = uploaded(store, b"/w/done", {"url": "u"}, n=1)
    assert store.mark_done(done.id)
    waiting = hashed(store, b"/w/waiting", n=2)
    failed = hashed(store, b"/w/failed", n=3)
    assert store.mark_failed(failed, "HTTP 400")
    assert store.not_done([done.id, waiting.id, failed.id, 10**9]) == {waiting.id, failed.id}
    assert store.not_done([]) == set()


def test_a_quota_count_lists_the_files_that_may_come_back_not_the_whole_day(
    store: Store,
) -> None:
    """Every admit rewrites the day's count: one listing every file of the day made each
    admit cost as much as all those before it. Files done since they were counted leave the
    list; one still in flight stays, and is not counted twice when it comes back."""
    quotas = Quotas(store, Clock(offset_file=""))
    service = ServiceConfig("ads", "http://127.0.0.1", daily_bytes=10**12)
    in_flight = hashed(store, b"/w/in-flight", n=1)
    assert quotas.admit(service, in_flight.id, 10) is None
    total = 3 * PRUNE_FROM
    for n in range(2, total + 1):
        decision = store.begin_upload(hashed(store, b"/w/%d" % n, f"{n:064x}", n), always_valid)
        assert decision is not None and decision[0] is Decision.UPLOAD
        assert quotas.admit(service, decision[1].id, 10) is None
        row = store.mark_uploaded(decision[1], {"url": "u"})
        assert row is not None and store.mark_done(row.id)
    _, files, sent, listed = store.flow_state("quota:ads")
    assert (files, sent) == (total, 10 * total)
    assert in_flight.id in listed and len(listed) < PRUNE_FROM
    assert quotas.admit(service, in_flight.id, 10) is None
    assert store.flow_state("quota:ads")[1:3] == [total, 10 * total], "counted once a day"
