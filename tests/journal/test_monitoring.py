"""What metrics and webhooks ask of every store: the oldest pending file, the last success per
service, and the outbox that state changes fill in their own transaction."""

from __future__ import annotations

import time
from collections.abc import Callable

from syncd.journal.store import Decision, Row, Store

from .test_store import FAR, always_valid, claimed, hashed, ident

RESULT = {"location": "/1.1/ton/data/x"}


def uploaded(store: Store, path: bytes, n: int, service: str = "ads") -> Row:
    """A row uploaded with content of its own (`n` makes both the identity and the hash)."""
    row = store.mark_hashed(claimed(store, path, service, n), f"{n:064x}", ident(n))
    assert row is not None
    decision = store.begin_upload(row, always_valid)
    assert decision is not None and decision[0] is Decision.UPLOAD
    done = store.mark_uploaded(decision[1], RESULT)
    assert done is not None
    return done


def test_oldest_pending_counts_from_when_the_file_was_queued(store: Store) -> None:
    assert store.oldest_pending() is None
    row = uploaded(store, b"/w/c", 3)
    store.mark_done(row.id)
    assert store.oldest_pending() is None, "a done file is not pending"
    before = time.time()
    store.record_seen(b"/w/a", "ads", ident(1))
    store.record_seen(b"/w/b", "ads", ident(2))
    oldest = store.oldest_pending()
    assert oldest is not None and before <= oldest <= time.time()
    while (row := store.claim(FAR)) is not None:
        store.mark_failed(row, "no")
    assert store.oldest_pending() is None, "failed files are not pending either"
    store.retry(None)
    requeued = store.oldest_pending()
    assert requeued is not None and requeued > oldest, "retry queues afresh"


def test_last_success_per_service(store: Store) -> None:
    assert store.last_success() == {}
    before = time.time()
    row = uploaded(store, b"/w/a", 1)
    assert store.last_success() == {}, "uploaded is not done yet"
    store.mark_done(row.id)
    other = uploaded(store, b"/w/b", 2, service="pics")
    store.mark_done(other.id)
    uploaded(store, b"/w/c", 3, service="notes")
    last = store.last_success()
    assert set(last) == {"ads", "pics"}
    assert before <= last["ads"] <= last["pics"] <= time.time()


def test_done_and_failed_fill_the_outbox_for_subscribers(store: Store) -> None:
    outbox = store.outbox
    done = uploaded(store, b"/w/a", 1)
    store.mark_done(done.id)
    assert outbox.backlog() == (0, 0), "nobody subscribed: nothing kept"
    assert (
        outbox.subscribe(
            {"https://a.example": ("done", "failed"), "https://b.example": ("failed",)}
        )
        == 0
    )
    done = uploaded(store, b"/w/b", 2)
    store.mark_done(done.id)
    failed = hashed(store, b"/w/c", "c" * 64, n=3)
    assert store.mark_failed(failed, "HTTP 403")
    due = outbox.due(FAR, 10)
    assert [(d.event, d.target) for d in due] == [
        ("done", "https://a.example"),
        ("failed", "https://a.example"),
        ("failed", "https://b.example"),
    ]
    first, *copies = due
    assert (first.path, first.service, first.result, first.error) == (b"/w/b", "ads", RESULT, None)
    assert first.size == ident(2).size and first.attempts == 0
    assert copies[0].event_id == copies[1].event_id != first.event_id
    assert (copies[0].error, copies[0].result, copies[0].sha256) == ("HTTP 403", None, "c" * 64)

    outbox.failed(first.seq, "HTTP 503", FAR + 1)
    assert outbox.backlog() == (3, 1)
    assert [d.last_error for d in outbox.failing(10)] == ["HTTP 503"]
    # Receiver a waits out its backoff, with all its events; b does not.
    assert [(d.seq, d.target) for d in outbox.due(FAR, 10)] == [
        (copies[1].seq, "https://b.example")
    ]
    assert [d.seq for d in outbox.due(FAR + 1, 10)] == [copies[1].seq, first.seq, copies[0].seq]
    outbox.delivered(copies[1].seq)
    assert outbox.backlog() == (2, 1)
    outbox.subscribe({"https://b.example": ("done",)})
    assert outbox.backlog() == (0, 0), "a's deliveries dropped with a"


def test_a_stale_write_records_no_event(store: Store) -> None:
    store.outbox.subscribe({"https://a.example": ("failed",)})
    row = claimed(store, b"/w/a")
    store.record_seen(b"/w/a", "ads", ident(9))  # the file changed: the row is stale
    assert not store.mark_failed(row, "too late")
    assert store.outbox.backlog() == (0, 0)


def test_the_outbox_outlives_a_restart(open_store: Callable[..., Store]) -> None:
    store = open_store()
    store.outbox.subscribe({"https://a.example": ("done",)})
    row = uploaded(store, b"/w/a", 1)
    store.mark_done(row.id)
    store.close()
    again = open_store()
    [delivery] = again.outbox.due(FAR, 10)
    assert (delivery.event, delivery.path, delivery.result) == ("done", b"/w/a", RESULT)
