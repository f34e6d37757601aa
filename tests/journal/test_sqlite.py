"""The SQLite store's own concerns: its file, forward migrations that keep every row, and
another process holding its lock."""

from __future__ import annotations

import sqlite3
import time

import pytest

from syncd.errors import SyncdError
from syncd.files import Identity
from syncd.journal import rules
from syncd.journal.migrations import MIGRATIONS
from syncd.journal.patience import StorageFault
from syncd.journal.sqlite import DROP_CLAIMS, KNOWN_IN, SqliteStore
from syncd.journal.sqlite_base import BUSY_SECONDS
from syncd.journal.states import State


def test_a_journal_of_an_older_schema_is_migrated_forward(tmp_path):
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0])
        db.execute(
            "INSERT INTO files (path, service, state, dev, inode, size, mtime_ns, updated_at)"
            " VALUES (?, 'ads', 'done', 1, 2, 3, 4, 0)",
            (b"/old/file",),
        )
        db.execute("PRAGMA user_version=1")
    journal = SqliteStore(path)
    try:
        assert journal.known_in(b"/old/") == {b"/old/file": Identity(1, 2, 3, 4)}
        assert journal.counts()[State.DONE] == 1
    finally:
        journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
    assert "uploaded_sha256" in columns
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_version_2_journal_keeps_its_rows_and_ids_and_never_reuses_one(tmp_path):
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:
        for script in MIGRATIONS[:2]:
            db.executescript(script)
        for row_id, name, state, result in (
            (3, b"/old/done", "done", '{"url": "u"}'),
            (7, b"/old/waiting", "uploading", None),
        ):
            db.execute(
                "INSERT INTO files (id, path, service, state, dev, inode, size, mtime_ns,"
                " sha256, result, uploaded_sha256, progress, updated_at)"
                " VALUES (?, ?, 'ads', ?, 1, ?, 3, 4, 'abc', ?, 'abc', '{\"offset\": 5}', 0)",
                (row_id, name, state, row_id, result),
            )
        db.execute("PRAGMA user_version=2")
    journal = SqliteStore(path)
    try:
        done = journal.get(3)
        assert done is not None and done.path == b"/old/done" and done.state is State.DONE
        assert done.result == {"url": "u"} and done.uploaded_sha256 == "abc"
        assert journal.recover() == 1
        waiting = journal.claim(10.0**10)
        assert waiting is not None and waiting.id == 7 and waiting.progress == {"offset": 5}
        journal.forget_missing(b"/old/waiting")
        journal.record_seen(b"/new", "ads", Identity(1, 9, 9, 9))
        [new] = journal.in_state(State.SEEN)
        assert new.id == 8, "after the highest id ever used, not in the place of the deleted 7"
    finally:
        journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
        indexes = {row[1] for row in db.execute("PRAGMA index_list(files)")}
    assert {"claim_owner", "claim_expires", "claim_fence"} <= columns
    assert {"files_due", "files_content"} <= indexes


def test_an_unopenable_journal_is_one_clear_line(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(SyncdError) as raised:
        SqliteStore(blocker / "journal.sqlite")
    assert str(raised.value).startswith(f"{blocker / 'journal.sqlite'}: cannot open the journal")


def test_a_journal_of_a_newer_syncd_is_refused_untouched(tmp_path):
    """As the fleet's database is: an older syncd would misread its rows or write them wrong."""
    path = tmp_path / "journal.sqlite"
    SqliteStore(path).close()
    newer = len(MIGRATIONS) + 1
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={newer}")
    with pytest.raises(SyncdError) as refused:
        SqliteStore(path)
    assert str(refused.value) == (
        f"{path}: the journal's schema is version {newer}, newer than this syncd knows"
        f" ({len(MIGRATIONS)}): upgrade syncd on this host"
    )
    assert refused.value.exit_code == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == newer


def test_claims_left_under_another_host_name_are_dropped_at_start(tmp_path):
    """One daemon per state_dir: a claim left behind is a dead one's, even if the host name
    changed since (a container)."""
    path = tmp_path / "journal.sqlite"
    crashed = SqliteStore(path, owner="old-name")
    crashed.record_seen(b"/w/a", "ads", Identity(1, 2, 3, 4))
    assert crashed.claim(10.0**10) is not None
    crashed.close()
    restarted = SqliteStore(path, owner="new-name")
    try:
        assert restarted.claim(10.0**10) is None
        restarted.recover()
        row = restarted.claim(10.0**10)
        assert row is not None and row.path == b"/w/a"
    finally:
        restarted.close()


def test_a_rescan_reads_the_identities_from_their_index_not_the_rows(tmp_path):
    """A restart over 20,000 done files reads 20,000 identities: from the narrow index,
    not by walking every wide row (2.5x slower measured), a folder's range of it at a
    time, not the whole journal."""
    path = tmp_path / "journal.sqlite"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        explained = db.execute(f"EXPLAIN QUERY PLAN {KNOWN_IN}", rules.below(b"/w/"))
        plan = " ".join(row[-1] for row in explained)
    assert "COVERING INDEX files_identity (path>? AND path<?)" in plan


def test_a_start_finds_the_claims_to_drop_through_their_index_not_every_row(tmp_path):
    """A start drops the claims a dead daemon left: a search of the few claimed rows, not a
    read of every row (~15 ms over 20,000 done files, a second over a million)."""
    path = tmp_path / "journal.sqlite"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        plan = " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {DROP_CLAIMS}"))
    assert "USING INDEX files_claims" in plan and "SCAN" not in plan


def test_a_write_behind_another_process_lock_is_a_storage_fault_saying_so(tmp_path):
    """Waited out like a full disk (journal/patience.py), not an unexpected error that fails
    the file or drops the settler's batch; the wait inside SQLite is short, so the connection
    is soon free for the status reply's reads."""
    path = tmp_path / "journal.sqlite"
    store = SqliteStore(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(StorageFault) as raised:
            store.claim(time.time())
        waited = time.monotonic() - started
        assert str(raised.value) == (
            f"{path}: database is locked: another process holds the journal's lock (an open"
            " `sqlite3` session or a backup tool?)"
        )
        assert BUSY_SECONDS <= waited < BUSY_SECONDS + 5
        assert store.ping()  # reads go on meanwhile (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.claim(time.time()) is None
    store.close()
