"""The Store protocol, for every store (see conftest.py): what intake, the workers and the
status socket rely on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from syncd.files import Identity
from syncd.journal.states import IllegalTransition, State
from syncd.journal.store import Decision, Row, Store

FAR = 10.0**10
"""A `now` at which every row is due."""
SHA = "a" * 64


def always_valid(result: dict[str, Any]) -> bool:
    return True


def ident(n: int) -> Identity:
    return Identity(1, n, 100 + n, 1_000 + n)


def claimed(store: Store, path: bytes, service: str = "ads", n: int = 1) -> Row:
    """A new row, claimed (rows of a test are claimed one by one, so the new one comes next)."""
    assert store.record_seen(path, service, ident(n))
    row = store.claim(FAR)
    assert row is not None and row.path == path
    return row


def hashed(store: Store, path: bytes, sha256: str = SHA, n: int = 1) -> Row:
    row = store.mark_hashed(claimed(store, path, n=n), sha256, ident(n))
    assert row is not None and row.state is State.HASHED
    return row


def uploaded(store: Store, path: bytes, result: dict[str, Any], n: int = 1) -> Row:
    decision = store.begin_upload(hashed(store, path, n=n), always_valid)
    assert decision is not None and decision[0] is Decision.UPLOAD
    row = store.mark_uploaded(decision[1], result)
    assert row is not None
    return row


# -- intake's side -----------------------------------------------------------------------


def test_known_in_holds_a_folders_own_files_and_nothing_beside_or_below(store: Store) -> None:
    """The scans ask a folder at a time: its files, not its subfolders' nor a sibling's
    whose name starts alike or sorts between (bytes before and after "/")."""
    paths = [
        b"/top",
        b"/w/a",
        b"/w/b.txt",
        b"/w/\x01",
        b"/w/\xff\xfe not UTF-8",
        b"/w/sub/c",
        b"/w/sub/deeper/d",
        b"/w-x/e",
        b"/w.x/f",
        b"/w0/g",
        b"/wa",
    ]
    for n, path in enumerate(paths):
        store.record_seen(path, "ads", ident(n))
    for folder in (b"/", b"/w/", b"/w/sub/", b"/w/sub/deeper/", b"/w-x/", b"/nothing/"):
        expected = {
            path: tuple(ident(n))
            for n, path in enumerate(paths)
            if path.startswith(folder) and b"/" not in path[len(folder) :]
        }
        assert store.known_in(folder) == expected, folder
    mine = {b"/w/a", b"/w/b.txt", b"/w/\x01", b"/w/\xff\xfe not UTF-8"}
    assert set(store.known_in(b"/w/")) == mine


def test_record_seen_tells_new_and_changed_files_from_known_ones(store: Store) -> None:
    assert store.record_seen(b"/w/a", "ads", ident(1)) is True
    assert store.record_seen(b"/w/a", "ads", ident(1)) is False
    assert store.known_in(b"/w/") == {b"/w/a": ident(1)}
    [first] = store.in_state(State.SEEN)
    assert store.record_seen(b"/w/a", "ads", ident(2)) is True
    [changed] = store.in_state(State.SEEN)
    assert (changed.id, changed.identity) == (first.id, ident(2))
    assert changed.version == first.version + 1
    assert store.record_seen(b"/w/a", "other", ident(2)) is True, "a new service is new work"


def test_a_changed_file_goes_back_to_seen_from_any_state(store: Store) -> None:
    row = uploaded(store, b"/w/a", {"url": "u"})
    store.mark_done(row.id)
    assert store.record_seen(b"/w/a", "ads", ident(9))
    again = store.get(row.id)
    assert again is not None and again.state is State.SEEN and again.sha256 is None
    assert again.result == {"url": "u"}, "kept: the same bytes need no new upload"


def test_mark_done_says_whether_it_made_the_row_done(store: Store) -> None:
    """The committer counts only the rows it made `done` (in a fleet another host may have
    finished one while its batch waited)."""
    row = uploaded(store, b"/w/a", {"url": "u"})
    waiting = hashed(store, b"/w/b", n=2)
    assert store.mark_done(row.id) is True
    assert store.mark_done(row.id) is False, "done already"
    assert store.mark_done(waiting.id) is False, "not uploaded"
    again = store.get(waiting.id)
    assert again is not None and again.state is State.HASHED


def test_forget_missing_drops_only_rows_not_uploaded(store: Store) -> None:
    done = uploaded(store, b"/w/done", {"url": "u"}, n=2)
    store.mark_done(done.id)
    store.record_seen(b"/w/waiting", "ads", ident(1))
    store.forget_missing(b"/w/waiting")
    store.forget_missing(b"/w/done")
    assert set(store.known_in(b"/w/")) == {b"/w/done"}


def test_row_ids_are_never_reused(store: Store) -> None:
    for n, path in enumerate((b"/w/a", b"/w/b"), start=1):
        store.record_seen(path, "ads", ident(n))
    last = max(row.id for row in store.in_state(State.SEEN))
    store.forget_missing(b"/w/b")
    store.record_seen(b"/w/c", "ads", ident(3))
    ids = {row.path: row.id for row in store.in_state(State.SEEN)}
    assert ids[b"/w/c"] > last


# -- claims ------------------------------------------------------------------------------


def test_a_claimed_row_is_nobody_elses_until_released(open_store: Callable[..., Store]) -> None:
    here, there = open_store("host-a"), open_store("host-b")
    here.record_seen(b"/w/a", "ads", ident(1))
    assert here.next_due() == 0
    row = here.claim(FAR)
    assert row is not None
    assert here.claim(FAR) is None and there.claim(FAR) is None
    assert here.next_due() is None, "idle workers do not wake for a claimed row"
    here.release(row.id)
    again = there.claim(FAR)
    assert again is not None and again.id == row.id and again.fence > row.fence


def test_a_row_done_is_held_by_nobody(store: Store) -> None:
    """A finisher that read the row while it was `uploaded` must not write its sidecar or
    complete it again once another finisher (or host) made it `done`."""
    row = uploaded(store, b"/w/a", {"url": "u"})
    assert store.holds(row)
    store.mark_done(row.id)
    store.release(row.id)
    assert not store.holds(row)


def test_rows_are_claimed_only_once_due(store: Store) -> None:
    decision = store.begin_upload(hashed(store, b"/w/a"), always_valid)
    assert decision is not None
    assert store.mark_retry(decision[1], "timeout", 500.0)
    store.release(decision[1].id)
    assert store.next_due() == 500.0
    assert store.claim(499.0) is None
    assert store.claim(500.0) is not None


def test_concurrent_claims_never_hand_out_one_row_twice(open_store: Callable[..., Store]) -> None:
    stores = [open_store("host-a"), open_store("host-b")]
    for n in range(200):
        stores[0].record_seen(f"/w/{n}".encode(), "ads", ident(n))
    claims: list[int] = []
    start = threading.Barrier(4)

    def worker(store: Store) -> None:
        start.wait()
        while (row := store.claim(FAR)) is not None:
            claims.append(row.id)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(claims) == 200 and len(set(claims)) == 200


def test_an_expired_claim_is_taken_over_and_fences_the_old_holder(
    open_store: Callable[..., Store],
) -> None:
    first, second = open_store("host-a", lease=30.0), open_store("host-b", lease=30.0)
    first.record_seen(b"/w/a", "ads", ident(1))
    stale = first.claim(1000.0)
    assert stale is not None
    assert second.claim(1010.0) is None, "the lease still runs"
    taken = second.claim(1031.0)
    assert taken is not None and taken.id == stale.id
    assert first.mark_hashed(stale, SHA, ident(1)) is None
    assert first.save_progress(stale, {"step": 1}) is False
    assert second.mark_hashed(taken, SHA, ident(1)) is not None


def test_recover_resumes_uploads_and_drops_this_hosts_claims(
    open_store: Callable[..., Store],
) -> None:
    crashed = open_store("host-a")
    decision = crashed.begin_upload(hashed(crashed, b"/w/a"), always_valid)
    assert decision is not None and decision[0] is Decision.UPLOAD
    crashed.close()
    restarted = open_store("host-a")
    assert restarted.recover() == 1
    counts = restarted.counts()
    assert counts[State.UPLOADING] == 0 and counts[State.HASHED] == 1
    row = restarted.claim(FAR)
    assert row is not None and row.state is State.HASHED and row.attempts == 1


# -- transitions -------------------------------------------------------------------------


def test_a_move_not_in_the_table_raises(store: Store) -> None:
    row = uploaded(store, b"/w/a", {"url": "u"})
    store.mark_done(row.id)
    done = store.get(row.id)
    assert done is not None and done.state is State.DONE
    with pytest.raises(IllegalTransition, match="done -> failed"):
        store.mark_failed(done, "too late")
    with pytest.raises(IllegalTransition, match="done -> awaiting_callback"):
        store.mark_awaiting(done, FAR)
    after = store.get(row.id)
    assert after is not None and after.state is State.DONE and after.error is None


def test_mark_done_moves_only_uploaded_rows(store: Store) -> None:
    row = hashed(store, b"/w/a")
    store.mark_done(row.id)
    current = store.get(row.id)
    assert current is not None and current.state is State.HASHED


def test_a_oneall_video_waits_for_its_callback(store: Store) -> None:
    decision = store.begin_upload(hashed(store, b"/w/a"), always_valid)
    assert decision is not None
    assert store.mark_awaiting(decision[1], 1000.0)
    store.release(decision[1].id)
    assert store.claim(FAR) is None, "a row awaiting its callback is not claimable"
    [late] = store.overdue_callbacks(1000.0)
    assert store.overdue_callbacks(999.0) == []
    assert late.state is State.AWAITING_CALLBACK
    assert store.mark_uploaded(late, {"url": "v"}) is not None


def test_progress_survives_and_a_stale_row_cannot_save(store: Store) -> None:
    row = hashed(store, b"/w/a")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert store.save_progress(row, {"session": "s", "at": when})
    assert store.load_progress(row) == {"session": "s", "at": when}
    store.record_seen(b"/w/a", "ads", ident(2))
    assert store.save_progress(row, {"session": "t"}) is False
    assert store.mark_changed(row) is False


# -- the start of an upload ------------------------------------------------------------


def test_begin_upload_reuses_the_result_of_the_same_content(store: Store) -> None:
    first = uploaded(store, b"/w/first", {"url": "u1"})
    store.mark_done(first.id)
    decision = store.begin_upload(hashed(store, b"/w/copy", n=2), always_valid)
    assert decision is not None
    answer, row = decision
    assert answer is Decision.DUPLICATE
    assert (row.state, row.result, row.duplicate_of) == (State.UPLOADED, {"url": "u1"}, b"/w/first")
    stored = store.get(row.id)
    assert stored is not None and stored.duplicate_of == b"/w/first"
    assert stored.result == {"url": "u1"} and stored.uploaded_sha256 == SHA


def test_a_result_the_service_no_longer_honours_is_uploaded_again(store: Store) -> None:
    store.mark_done(uploaded(store, b"/w/first", {"url": "gone"}).id)
    decision = store.begin_upload(hashed(store, b"/w/copy", n=2), lambda result: False)
    assert decision is not None and decision[0] is Decision.UPLOAD


def test_two_copies_arriving_together_upload_once(open_store: Callable[..., Store]) -> None:
    stores = [open_store("host-a"), open_store("host-b")]
    rows = [hashed(stores[0], b"/w/one"), hashed(stores[0], b"/w/two", n=2)]
    decisions: list[tuple[Decision, Row] | None] = [None, None]
    start = threading.Barrier(2)

    def begin(i: int) -> None:
        start.wait()
        decisions[i] = stores[i].begin_upload(rows[i], always_valid)

    threads = [threading.Thread(target=begin, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(d is not None for d in decisions)
    answers = sorted(d[0] for d in decisions if d is not None)
    assert answers == [Decision.UPLOAD, Decision.WAIT]
    uploader = next(d[1] for d in decisions if d is not None and d[0] is Decision.UPLOAD)
    waiter = next(d[1] for d in decisions if d is not None and d[0] is Decision.WAIT)
    assert waiter.state is State.HASHED and waiter.due > 0
    still = stores[1].begin_upload(waiter, always_valid)
    assert still is not None and still[0] is Decision.WAIT, "the upload is still in flight"
    assert stores[0].mark_uploaded(uploader, {"url": "once"}) is not None
    again = stores[1].begin_upload(waiter, always_valid)
    assert again is not None and again[0] is Decision.DUPLICATE
    assert again[1].result == {"url": "once"} and again[1].duplicate_of == uploader.path


def test_begin_upload_on_a_file_that_changed_does_nothing(store: Store) -> None:
    row = hashed(store, b"/w/a")
    store.record_seen(b"/w/a", "ads", ident(2))
    assert store.begin_upload(row, always_valid) is None
    assert store.mark_uploaded(row, {"url": "old content"}) is None
    current = store.get(row.id)
    assert current is not None and current.state is State.SEEN and current.result is None


def test_the_same_bytes_under_the_same_path_are_not_uploaded_again(store: Store) -> None:
    row = uploaded(store, b"/w/a", {"url": "u"})
    store.mark_done(row.id)
    store.release(row.id)
    store.record_seen(b"/w/a", "ads", ident(2))  # touched
    again = store.claim(FAR)
    assert again is not None
    rehashed = store.mark_hashed(again, SHA, ident(2))
    assert rehashed is not None
    decision = store.begin_upload(rehashed, always_valid)
    assert decision is not None and decision[0] is Decision.UNCHANGED
    assert decision[1].state is State.UPLOADED and decision[1].result == {"url": "u"}


# -- the status socket's side ------------------------------------------------------------


def test_counts_name_every_state(store: Store) -> None:
    hashed(store, b"/w/b", n=2)
    store.record_seen(b"/w/a", "ads", ident(1))
    counts = store.counts()
    assert set(counts) == set(State)
    assert (counts[State.SEEN], counts[State.HASHED], counts[State.HELD]) == (1, 1, 0)
    assert sum(counts.values()) == 2


def test_retry_queues_failed_rows_again(store: Store) -> None:
    unread = claimed(store, b"/w/unread")
    assert store.mark_failed(unread, "cannot read")
    refused = hashed(store, b"/w/refused", n=2)
    assert store.mark_failed(refused, "401")
    other = hashed(store, b"/w/other", sha256="b" * 64, n=3)
    assert store.mark_failed(other, "403")
    failures = store.with_error(State.FAILED, 10)
    assert sorted(r.error or "" for r in failures) == ["401", "403", "cannot read"]
    assert store.retry([b"/w/other", b"/w/unknown"]) == 1
    assert store.retry(None) == 2
    counts = store.counts()
    assert (counts[State.FAILED], counts[State.SEEN], counts[State.HASHED]) == (0, 1, 2)
    row = store.get(refused.id)
    assert row is not None and row.error is None and row.attempts == 0


# -- group commit ------------------------------------------------------------------------


def test_a_batch_commits_its_writes_together_and_seen_by_others_only_then(
    open_store: Callable[..., Store],
) -> None:
    store, other = open_store(), open_store("host-b")
    rows = [claimed(store, f"/w/{n}".encode(), n=n) for n in range(3)]
    inside: list[dict[State, int]] = []

    def hash_all() -> int:
        for row in rows:
            assert store.mark_hashed(row, SHA, row.identity) is not None
        inside.append(other.counts())
        return len(rows)

    assert store.batch(hash_all) == 3
    assert inside[0][State.SEEN] == 3 and inside[0][State.HASHED] == 0
    assert other.counts()[State.HASHED] == 3


def test_a_batch_that_raises_writes_nothing(store: Store) -> None:
    row = claimed(store, b"/w/a")

    def illegal() -> None:
        moved = store.mark_hashed(row, SHA, row.identity)
        assert moved is not None
        store.release(row.id)
        store.mark_awaiting(moved, FAR)  # hashed -> awaiting_callback is not in the table

    with pytest.raises(IllegalTransition):
        store.batch(illegal)
    current = store.get(row.id)
    assert current is not None and current.state is State.SEEN and current.sha256 is None
    assert store.claim(FAR) is None  # still held: the release went with the rest


def test_a_batch_reads_its_own_writes(store: Store) -> None:
    row = claimed(store, b"/w/a")

    def hash_then_claim_again() -> Row | None:
        assert store.mark_hashed(row, SHA, row.identity) is not None
        store.release(row.id)
        return store.claim(FAR)

    again = store.batch(hash_then_claim_again)
    assert again is not None and again.id == row.id and again.state is State.HASHED
