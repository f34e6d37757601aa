"""The journal on its own: forward migrations and what survives a reopen."""

from __future__ import annotations

import sqlite3

from syncd.files import Identity
from syncd.journal.migrations import MIGRATIONS
from syncd.journal.sqlite import SqliteStore


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
        assert journal.known() == {b"/old/file": Identity(1, 2, 3, 4)}
        assert journal.counts()["done"] == 1
    finally:
        journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
    assert "uploaded_sha256" in columns
    assert path.stat().st_mode & 0o777 == 0o600


def test_uploading_rows_resume_after_a_crash(tmp_path):
    journal = SqliteStore(tmp_path / "journal.sqlite")
    journal.record_seen(b"/a", "ads", Identity(1, 2, 3, 4))
    row = journal.claim(10**10)
    assert row is not None
    hashed = journal.mark_hashed(row, "0" * 64, row.identity)
    assert hashed is not None
    decision = journal.begin_upload(hashed, lambda result: True)
    assert decision is not None and decision[0] == "upload"
    journal.close()
    reopened = SqliteStore(tmp_path / "journal.sqlite")
    try:
        assert reopened.recover() == 1
        assert reopened.counts()["uploading"] == 0 and reopened.counts()["hashed"] == 1
    finally:
        reopened.close()
