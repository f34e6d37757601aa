"""The SQLite store's part for flow control: held rows, and the small values (pauses,
service-wide holds, quota counts) that must survive a restart. A mixin of SqliteStore."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from syncd.journal import rules
from syncd.journal.codec import row_from
from syncd.journal.states import CLAIMABLE, State, check_moves
from syncd.journal.store import Row

_CLAIMABLE = ", ".join(f"'{s}'" for s in sorted(CLAIMABLE))


class _Base(Protocol):
    def _write(self, counted: bool = True) -> AbstractContextManager[sqlite3.Connection]: ...

    def _read(self, query: str, *values: object) -> list[sqlite3.Row]: ...

    def _update(
        self, row: Row, target: State | None, assignments: str, *values: object
    ) -> bool: ...


class SqliteFlow:
    def mark_held(self: _Base, row: Row, reason: str, until: float | None) -> bool:
        return self._update(
            row, State.HELD, "error=?, error_at=?, due=?", reason, time.time(), until or 0
        )

    def hold_waiting(self: _Base, service: str, reason: str, until: float | None) -> int:
        check_moves(CLAIMABLE, State.HELD)
        now = time.time()
        with self._write() as db:
            return db.execute(
                "UPDATE files SET state=?, error=?, error_at=?, due=?, updated_at=?"  # noqa: S608
                f" WHERE service=? AND state IN ({_CLAIMABLE})"
                " AND (claim_owner IS NULL OR claim_expires < ?)",
                (State.HELD, reason, now, until or 0, now, service, now),
            ).rowcount

    def release_held(self: _Base, service: str) -> int:
        rules.check_release()
        with self._write() as db:
            return db.execute(
                f"UPDATE files SET state={rules.RELEASED}, due=0, error=NULL, error_at=NULL,"  # noqa: S608
                " updated_at=? WHERE state=? AND service=?",
                (time.time(), State.HELD, service),
            ).rowcount

    def shift_retries(self: _Base, seconds: float) -> int:
        with self._write() as db:
            return db.execute(
                "UPDATE files SET due=due+? WHERE state=?", (seconds, State.RETRY_WAIT)
            ).rowcount

    def release_routed(self: _Base, reason: str, routes: Callable[[bytes, str], bool]) -> int:
        rules.check_release()
        with self._write() as db:
            found = db.execute(
                "SELECT id, path, service FROM files WHERE state=? AND error=?",
                (State.HELD, reason),
            ).fetchall()
            now = time.time()
            routed = [(now, r["id"]) for r in found if routes(bytes(r["path"]), r["service"])]
            db.executemany(
                f"UPDATE files SET state={rules.RELEASED}, due=0, error=NULL, error_at=NULL,"  # noqa: S608
                " updated_at=? WHERE id=?",
                routed,
            )
            return len(routed)

    def held(self: _Base, limit: int) -> list[Row]:
        found = self._read(
            "SELECT * FROM files WHERE state=? ORDER BY due, id LIMIT ?", State.HELD, limit
        )
        return [row_from(r) for r in found]

    def flow_state(self: _Base, key: str) -> Any:
        found = self._read("SELECT value FROM flow_state WHERE key=?", key)
        return json.loads(found[0]["value"]) if found else None

    def save_flow_state(self: _Base, key: str, value: Any) -> None:
        with self._write(counted=False) as db:
            db.execute(
                "INSERT INTO flow_state (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    def change_flow_state(self: _Base, key: str, change: Callable[[Any], Any]) -> None:
        with self._write(counted=False) as db:
            found = db.execute("SELECT value FROM flow_state WHERE key=?", (key,)).fetchone()
            value = change(json.loads(found["value"]) if found else None)
            db.execute(
                "INSERT INTO flow_state (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    def not_done(self: _Base, ids: list[int]) -> set[int]:
        found = self._read(
            "SELECT id FROM files WHERE state<>? AND id IN (SELECT value FROM json_each(?))",
            State.DONE,
            json.dumps(ids),
        )
        return {int(r["id"]) for r in found}

    def once_outcome(self: _Base, retries: int) -> tuple[int, int]:
        found = self._read(
            f"SELECT SUM({rules.once_unfinished('?')}) AS unfinished,"  # noqa: S608
            f" SUM({rules.once_failed('?')}) AS failed FROM files WHERE state IN {rules.ONCE}",
            retries,
            retries,
        )
        return int(found[0]["unfinished"] or 0), int(found[0]["failed"] or 0)
