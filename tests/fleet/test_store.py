"""The PostgreSQL store's fleet rules, with two stores standing for two hosts on one database."""

from __future__ import annotations

import os
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
    assert two.known_in(b"/drop/") == {b"/drop/a": (1, 2, 3, 4)}


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


# -- one live process per host_id (journal/pg_hosts.py) -------------------------------------


def hold_as_another_machine(url: str, password: str, host_id: str, instance: str | None) -> None:
    """The `hosts` row as a daemon on another machine (pids not visible here) writes it."""
    import psycopg

    with psycopg.connect(url, password=password, autocommit=True) as db:
        db.execute(
            "INSERT INTO hosts (host_id, pid, version, started_at, heartbeat_at, instance,"
            " machine, pid_space) VALUES (%(host)s, 4242, 'x', %(now)s, %(now)s, %(instance)s,"
            " 'vm-b', 'elsewhere') ON CONFLICT (host_id) DO UPDATE SET pid=4242,"
            " heartbeat_at=%(now)s, instance=%(instance)s, machine='vm-b', pid_space='elsewhere'",
            {"host": host_id, "now": time.time(), "instance": instance},
        )


def test_a_holder_on_another_machine_is_refused_once_it_beats_and_taken_over_once_silent(
    hosts, postgres_cluster, postgres_url
):
    import threading

    from syncd.journal.pg_hosts import HostIdTaken

    store = hosts("clone", lease=2.0)
    silent = threading.Event()

    def beat() -> None:  # the other machine's daemon, alive until `silent`
        while not silent.wait(0.2):
            hold_as_another_machine(postgres_url, postgres_cluster.password, "clone", "theirs")

    hold_as_another_machine(postgres_url, postgres_cluster.password, "clone", "theirs")
    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        with pytest.raises(HostIdTaken) as refused:
            store.seat.join()
    finally:
        silent.set()
        beating.join(5)
    assert str(refused.value).startswith(
        'host_id "clone" is in use by another running syncd: pid 4242 on vm-b'
    )
    assert not store.seat.joined
    # Silent now (crashed, or cut off): taken over once its heartbeat is older than the lease.
    holder = store.seat.join()
    assert holder is not None and (holder.pid, holder.instance) == (4242, "theirs")
    assert [(h["host"], h["pid"]) for h in store.hosts()] == [("clone", os.getpid())]


def test_a_process_whose_host_id_was_taken_claims_nothing_until_it_is_free_again(
    hosts, postgres_cluster, postgres_url
):
    store = hosts("clone", lease=30.0)
    store.recover()
    told: list[str | None] = []
    store.watch_host_id(told.append)
    store.record_seen(b"/drop/a", "ads", Identity(1, 2, 3, 4))
    # Another process took "clone" over (this one was frozen past its lease, say).
    hold_as_another_machine(postgres_url, postgres_cluster.password, "clone", "theirs")
    assert store.claim(time.time()) is None, "nothing claimed, before the heartbeat found out"
    assert store.seat.beat() is False
    assert told == [
        'host_id "clone" was taken over by pid 4242 on vm-b (its heartbeat 0 s ago);'
        " taking no new work"
    ]
    assert store.seat.beat() is False and len(told) == 1, "told once"
    assert [h["pid"] for h in store.hosts()] == [4242], "its row is left to the other"
    # The other stopped cleanly: this process takes its host_id back and works again.
    hold_as_another_machine(postgres_url, postgres_cluster.password, "clone", None)
    assert store.seat.beat() is True
    assert told[-1] is None
    row = store.claim(time.time())
    assert row is not None and store.holds(row)


def test_a_clean_stop_frees_the_host_id_for_the_next_start_at_once(hosts):
    first = hosts("one", lease=30.0)
    first.recover()
    first.close()
    second = hosts("one", lease=30.0)
    holder = second.seat.join(wait=False)
    assert holder is not None and holder.instance is None, "left by the first, not taken"


def test_a_start_releases_its_host_ids_claims_from_before_tokens_and_no_other_hosts(
    hosts, postgres_cluster, postgres_url
):
    """Claims an older syncd made under the bare host_id are a crash's at the next start;
    those of a host_id that merely begins the same are not."""
    import psycopg

    store = hosts("one", lease=30.0)
    for name in (b"/drop/a", b"/drop/b"):
        store.record_seen(name, "ads", Identity(1, 2, 3, 4))
    with psycopg.connect(postgres_url, password=postgres_cluster.password) as db:
        db.execute(
            "UPDATE files SET claim_owner=CASE WHEN path='/drop/a'::bytea THEN 'one'"
            " ELSE 'one.b#0123456789abcdef' END, claim_expires=%s",
            (time.time() + 3600,),
        )
    store.recover()
    row = store.claim(time.time())
    assert row is not None and row.path == b"/drop/a"
    assert store.claim(time.time()) is None, "host one.b's claim stands"
