"""The webhook outbox of the SQLite store (table `outbox`, migrations 5 and 8).

An event is written as one row per subscribed receiver in the very transaction of the state
change it reports (`record`, called by the store), so a crash can never keep the change and
lose the event, nor the reverse. The sender deletes a row once delivered and pushes `due`
back when it fails. The file's facts are copied into the row: the event says what was true
when it happened, whatever the file does later. Service-level events (paused, resumed,
quota_exhausted, degraded) come through `emit`, in a transaction of their own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager

from syncd.journal.codec import EmitStatements, delivery_from, emit_rows, new_event_id
from syncd.journal.rules import by_event
from syncd.journal.states import State
from syncd.journal.store import Delivery, ServiceEvent

Write = Callable[[], AbstractContextManager[sqlite3.Connection]]
Read = Callable[..., list[sqlite3.Row]]
"""The store's `_read(query, *values)`: under its lock, a damaged file said so."""
"""The store's write transaction (BEGIN IMMEDIATE under its lock)."""

_EMIT = EmitStatements(
    prune="DELETE FROM outbox_once WHERE at < ?",
    take_key="INSERT OR IGNORE INTO outbox_once (key, at) VALUES (?, ?)",
    insert="INSERT INTO outbox (event_id, target, event, at, path, service, size, detail)"
    " VALUES (:id, :target, :event, :at, x'', :service, 0, :detail)",
)


class SqliteOutbox:
    """Shares the store's connection, lock and transactions."""

    def __init__(self, read: Read, write: Write) -> None:
        self._read = read
        self._write = write
        self._subscribers: dict[str, tuple[str, ...]] = {}
        """Event name -> the receivers (webhook URLs) that want it."""

    def record(self, db: sqlite3.Connection, event: State, file_id: int, now: float) -> None:
        """Inside the store's transaction: the event of file `file_id` as it now stands."""
        targets = self._subscribers.get(event, ())
        if not targets:
            return
        event_id = new_event_id()
        db.executemany(
            "INSERT INTO outbox (event_id, target, event, at, path, service, sha256, size,"
            " result, error) SELECT :id, :target, :event, :now, path, service, sha256, size,"
            " CASE WHEN :event='failed' THEN NULL ELSE result END,"
            " CASE WHEN :event='failed' THEN error END FROM files WHERE id=:file",
            [
                {"id": event_id, "target": t, "event": str(event), "now": now, "file": file_id}
                for t in targets
            ],
        )

    def subscribe(self, targets: Mapping[str, tuple[str, ...]]) -> int:
        subscribers = by_event(targets)
        marks = ",".join("?" * len(targets))
        with self._write() as db:
            self._subscribers = subscribers
            return db.execute(
                f"DELETE FROM outbox WHERE target NOT IN ({marks})",  # noqa: S608
                tuple(targets),
            ).rowcount

    def emit(self, event: ServiceEvent) -> bool:
        targets = self._subscribers.get(event.event, ())
        if not targets:
            return False
        with self._write() as db:
            return emit_rows(db.execute, db.executemany, _EMIT, event, targets)

    def due(self, now: float, limit: int) -> list[Delivery]:
        return self._select("WHERE due <= ? ORDER BY due, seq LIMIT ?", now, limit)

    def failing(self, limit: int) -> list[Delivery]:
        return self._select("WHERE attempts > 0 ORDER BY seq LIMIT ?", limit)

    def backlog(self) -> tuple[int, int]:
        (found,) = self._read("SELECT COUNT(*), COALESCE(SUM(attempts > 0), 0) FROM outbox")
        return int(found[0]), int(found[1])

    def delivered(self, seq: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM outbox WHERE seq=?", (seq,))

    def failed(self, seq: int, error: str, due: float) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE outbox SET attempts=attempts+1, last_error=? WHERE seq=?", (error, seq)
            )
            db.execute(
                "UPDATE outbox SET due=MAX(due, ?)"
                " WHERE target=(SELECT target FROM outbox WHERE seq=?)",
                (due, seq),
            )

    def _select(self, where: str, *values: object) -> list[Delivery]:
        found = self._read(f"SELECT * FROM outbox {where}", *values)  # noqa: S608
        return [delivery_from(r) for r in found]
