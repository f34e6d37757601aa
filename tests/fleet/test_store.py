"""The PostgreSQL store's fleet rules, with two stores standing for two hosts on one database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from syncd.files import Identity
from syncd.journal.states import State
from syncd.journal.store import Decision

if TYPE_CHECKING:
    from syncd.journal.postgres import PostgresStore

SHA = "0" * 64


@pytest.fixture
def hosts(postgres_cluster, postgres_url) -> Iterator[Callable[..., PostgresStore]]:
    from syncd.journal.postgres import PostgresStore

    opened: list[Any] = []

    def open_host(name: str, lease: float = 30.0) -> PostgresStore:
        store = PostgresStore(postgres_url, postgres_cluster.password, name, lease)
        opened.append(store)
        return store

    yield open_host
    for store in opened:
        store.close()


def test_a_path_is_inserted_once_however_many_hosts_see_it(hosts):
    one, two = hosts("one"), hosts("two")
    identity = Identity(1, 2, 3, 4)
    assert one.record_seen(b"/drop/a", "ads", identity) is True
    assert two.record_seen(b"/drop/a", "ads", identity) is False
    # Another host mounts the shared folder with its own st_dev: the same file still.
    assert two.record_seen(b"/drop/a", "ads", Identity(99, 2, 3, 4)) is False
    assert one.counts()[State.SEEN] == 1
    assert two.known() == {b"/drop/a": (1, 2, 3, 4)}


def test_one_claim_per_row_and_a_lapsed_claim_is_taken_over_with_a_higher_fence(hosts):
    one, two = hosts("one", lease=1.0), hosts("two", lease=1.0)
    one.record_seen(b"/drop/a", "ads", Identity(1, 2, 3, 4))
    mine = one.claim(time.time())
    assert mine is not None
    assert two.claim(time.time()) is None
    hashed = one.mark_hashed(mine, SHA, mine.identity)
    assert hashed is not None
    decision = one.begin_upload(hashed, lambda result: True)
    assert decision is not None and decision[0] == Decision.UPLOAD
    uploading = decision[1]
    assert one.save_progress(uploading, {"offset": 8})
    taken = wait_for(lambda: two.claim(time.time()))
    assert taken.fence > uploading.fence
    # The row a dead host left uploading goes on from its saved progress.
    assert taken.state == State.HASHED and taken.progress == {"offset": 8}
    # The host cut off can change nothing any more.
    assert not one.holds(uploading)
    assert not one.save_progress(uploading, {"offset": 16})
    assert one.mark_uploaded(uploading, {"location": "/x"}) is None
    assert not one.mark_retry(uploading, "late", 0)
    assert not one.mark_failed(uploading, "late")
    one.release(uploading.id)
    assert two.holds(taken)
    assert two.get(taken.id) == taken


def test_a_frozen_host_loses_its_claims_for_good(hosts):
    one, two = hosts("one", lease=1.0), hosts("two", lease=1.0)
    one.record_seen(b"/drop/a", "ads", Identity(1, 2, 3, 4))
    mine = one.claim(time.time())
    assert mine is not None
    wait_for(lambda: two.claim(time.time()))
    one.leases.renew()
    assert not one.leases.valid(mine.id, mine.fence)
    assert not one.holds(mine)


def test_the_leases_thread_keeps_a_working_host_claims(hosts):
    one, two = hosts("one", lease=1.0), hosts("two", lease=1.0)
    one.recover()
    one.record_seen(b"/drop/a", "ads", Identity(1, 2, 3, 4))
    mine = one.claim(time.time())
    assert mine is not None
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert two.claim(time.time()) is None
    assert one.holds(mine)
    fleet = one.hosts()
    assert [h["host"] for h in fleet] == ["one"] and fleet[0]["claims"] == 1


def test_copies_of_one_content_on_two_hosts_upload_once(hosts):
    one, two = hosts("one"), hosts("two")
    one.record_seen(b"/drop/a", "ads", Identity(1, 2, 3, 4))
    two.record_seen(b"/drop/b", "ads", Identity(1, 5, 3, 4))
    rows = [one.claim(time.time()), two.claim(time.time())]
    assert all(rows)
    hashed = [
        store.mark_hashed(row, SHA, row.identity)
        for store, row in zip((one, two), rows, strict=True)
    ]
    decisions = [
        store.begin_upload(row, lambda result: True)
        for store, row in zip((one, two), hashed, strict=True)
    ]
    assert sorted(d[0] for d in decisions) == [Decision.UPLOAD, Decision.WAIT]


def test_the_schema_is_versioned_and_the_signing_key_shared(hosts, postgres_cluster, postgres_url):
    import psycopg

    from syncd.journal.pg_schema import MIGRATIONS

    one, two = hosts("one"), hosts("two")
    assert one.schema == len(MIGRATIONS)
    key = one.shared_key("media", lambda: b"k" * 32)
    assert two.shared_key("media", lambda: b"other" * 8) == key == b"k" * 32
    with psycopg.connect(postgres_url, password=postgres_cluster.password) as db:
        assert db.execute("SELECT version FROM schema_version").fetchone() == (len(MIGRATIONS),)


def wait_for(probe, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def done_row(store: PostgresStore, path: bytes) -> int:
    store.record_seen(path, "ads", Identity(1, 2, 3, 4))
    row = store.claim(time.time())
    assert row is not None
    hashed = store.mark_hashed(row, SHA, row.identity)
    assert hashed is not None
    decision = store.begin_upload(hashed, lambda result: True)
    assert decision is not None
    uploaded = store.mark_uploaded(decision[1], {"location": "/x"})
    assert uploaded is not None
    store.mark_done(row.id)
    return row.id


def test_actions_hooks_and_deliveries_are_each_one_hosts_until_its_claim_lapses(hosts):
    from syncd.journal.after import ActionTaken, HookEvent

    one, two = hosts("one", lease=1.0), hosts("two", lease=1.0)
    for store in (one, two):
        store.outbox.subscribe({"https://a.example": ("done",)})
    file_id = done_row(one, b"/drop/a")
    one.schedule_action(file_id, 0, "archive", b"/drop/a", b"/archive", 0.0)
    one.enqueue_hook(HookEvent("done:1", "done", b"/drop/a", ("true",), {}, 5.0))
    [action] = one.due_actions(time.time())
    [hook] = one.pending_hooks([], 10)
    [delivery] = one.outbox.due(time.time(), 10)
    assert two.due_actions(time.time()) == two.pending_hooks([], 10) == []
    assert two.outbox.due(time.time(), 10) == []
    # Host one stops renewing (frozen): host two takes everything over once the lease ran out.
    taken = wait_for(lambda: two.due_actions(time.time()))
    assert [a.id for a in taken] == [action.id]
    assert [h.id for h in wait_for(lambda: two.pending_hooks([], 10))] == [hook.id]
    assert [d.seq for d in wait_for(lambda: two.outbox.due(time.time(), 10))] == [delivery.seq]
    with pytest.raises(ActionTaken):
        one.action_intent(action, b"/archive/a")
    two.action_intent(taken[0], b"/archive/a")
    one.action_moved(action, None)  # too late: nothing changes
    [moving] = two.due_actions(time.time())
    assert (moving.state, moving.target) == ("moving", b"/archive/a")
