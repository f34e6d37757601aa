"""The webhook outbox, as SQL the SQLite store runs inside its own transactions.

An event is written as one row per subscribed receiver in the very transaction of the state
change it reports (`record`), so a crash can never keep the change and lose the event, nor
the reverse. The sender deletes a row once delivered and pushes `due` back when it fails.
The file's facts are copied into the row: the event says what was true when it happened,
whatever the file does later.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from syncd.journal.codec import decode

SCHEMA = """
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        target TEXT NOT NULL,
        event TEXT NOT NULL,
        at REAL NOT NULL,
        path BLOB NOT NULL,
        service TEXT NOT NULL,
        sha256 TEXT,
        size INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        due REAL NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox(due, seq)
"""
"""The migration that adds the outbox."""

Subscribers = Mapping[str, tuple[str, ...]]
"""Event name -> the receivers (webhook URLs) that want it."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one receiver."""

    seq: int
    event_id: str
    """The event's id, the same for every receiver: what a receiver dedups on."""
    target: str
    event: str
    at: float
    path: bytes
    service: str
    sha256: str | None
    size: int
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    due: float
    last_error: str | None


def record(
    db: sqlite3.Connection, subscribers: Subscribers, event: str, file_id: int, now: float
) -> None:
    """The event of file `file_id` (as it stands in this transaction), once per receiver."""
    targets = subscribers.get(event, ())
    if not targets:
        return
    event_id = str(uuid.uuid4())
    db.executemany(
        "INSERT INTO outbox (event_id, target, event, at, path, service, sha256, size, result,"
        " error) SELECT :id, :target, :event, :now, path, service, sha256, size,"
        " CASE WHEN :event='failed' THEN NULL ELSE result END,"
        " CASE WHEN :event='failed' THEN error END FROM files WHERE id=:file",
        [
            {"id": event_id, "target": t, "event": event, "now": now, "file": file_id}
            for t in targets
        ],
    )


def drop_unsubscribed(db: sqlite3.Connection, targets: set[str]) -> int:
    """Rows for receivers no longer configured; how many were dropped."""
    marks = ",".join("?" * len(targets))
    return db.execute(f"DELETE FROM outbox WHERE target NOT IN ({marks})", tuple(targets)).rowcount  # noqa: S608


def due(db: sqlite3.Connection, now: float, limit: int) -> list[Delivery]:
    return _deliveries(
        db.execute("SELECT * FROM outbox WHERE due <= ? ORDER BY due, seq LIMIT ?", (now, limit))
    )


def failing(db: sqlite3.Connection, limit: int) -> list[Delivery]:
    """Rows whose last attempt failed, oldest event first."""
    return _deliveries(
        db.execute("SELECT * FROM outbox WHERE attempts > 0 ORDER BY seq LIMIT ?", (limit,))
    )


def backlog(db: sqlite3.Connection) -> tuple[int, int]:
    """(rows waiting, rows whose last attempt failed)."""
    found = db.execute("SELECT COUNT(*), COALESCE(SUM(attempts > 0), 0) FROM outbox").fetchone()
    return int(found[0]), int(found[1])


def delivered(db: sqlite3.Connection, seq: int) -> None:
    db.execute("DELETE FROM outbox WHERE seq=?", (seq,))


def failed(db: sqlite3.Connection, seq: int, error: str, due_at: float) -> None:
    db.execute(
        "UPDATE outbox SET attempts=attempts+1, last_error=?, due=? WHERE seq=?",
        (error, due_at, seq),
    )


def _deliveries(cursor: sqlite3.Cursor) -> list[Delivery]:
    names = [column[0] for column in cursor.description]
    found = []
    for values in cursor.fetchall():
        r = dict(zip(names, values, strict=True))
        found.append(
            Delivery(
                seq=r["seq"],
                event_id=r["event_id"],
                target=r["target"],
                event=r["event"],
                at=r["at"],
                path=bytes(r["path"]),
                service=r["service"],
                sha256=r["sha256"],
                size=r["size"],
                result=decode(r["result"]),
                error=r["error"],
                attempts=r["attempts"],
                due=r["due"],
                last_error=r["last_error"],
            )
        )
    return found
