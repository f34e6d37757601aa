"""The PostgreSQL store's reads (a row, its progress, rows by state, metrics) and
`syncd retry`. Mixed into PostgresStore, which holds the connections."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from syncd.journal import rules
from syncd.journal.carry import CARRIED, Carried, carried_query
from syncd.journal.codec import decode
from syncd.journal.pg_base import Connected, row_of
from syncd.journal.states import State
from syncd.journal.store import Row


class Reads(Connected):
    def get(self, row_id: int) -> Row | None:
        found = self._read("SELECT * FROM files WHERE id=%s", (row_id,))
        return row_of(found[0]) if found else None

    def load_progress(self, row: Row) -> dict[str, Any]:
        found = self._read("SELECT progress FROM files WHERE id=%s", (row.id,))
        return (decode(found[0]["progress"]) if found else None) or {}

    def overdue_callbacks(self, now: float) -> list[Row]:
        found = self._read(
            "SELECT * FROM files WHERE state='awaiting_callback' AND due <= %s", (now,)
        )
        return [row_of(r) for r in found]

    def in_state(self, state: State) -> list[Row]:
        return [row_of(r) for r in self._read("SELECT * FROM files WHERE state=%s", (str(state),))]

    def carried(self) -> Carried:
        return {table: [dict(r) for r in self._read(carried_query(table))] for table in CARRIED}

    def counts(self) -> dict[State, int]:
        found = {
            r["state"]: r["n"]
            for r in self._read("SELECT state, COUNT(*) AS n FROM files GROUP BY state")
        }
        return {state: int(found.get(str(state), 0)) for state in State}

    def with_error(self, state: State, limit: int) -> list[Row]:
        found = self._read(
            "SELECT * FROM files WHERE state=%s AND error IS NOT NULL"
            " ORDER BY error_at DESC LIMIT %s",
            (str(state), limit),
        )
        return [row_of(r) for r in found]

    def retry(self, paths: Iterable[bytes] | None) -> int:
        query = (
            "UPDATE files SET state=CASE WHEN sha256 IS NULL THEN 'seen' ELSE 'hashed' END,"
            " attempts=0, due=0, error=NULL, error_at=NULL, updated_at=%(now)s,"
            " queued_at=CASE WHEN state='failed' THEN %(now)s ELSE queued_at END"
            " WHERE state IN ('failed', 'retry_wait')"
        )
        with self._write() as db:
            if paths is None:
                return db.execute(query, {"now": time.time()}).rowcount
            return sum(
                db.execute(query + " AND path=%(path)s", {"now": time.time(), "path": p}).rowcount
                for p in paths
            )

    def oldest_pending(self) -> float | None:
        found = self._read(
            f"SELECT MIN(queued_at) AS at FROM files WHERE state IN {rules.PENDING}"  # noqa: S608
        )
        return None if found[0]["at"] is None else float(found[0]["at"])

    def last_success(self) -> dict[str, float]:
        found = self._read(rules.last_success(""))
        return {r["service"]: float(r["at"]) for r in found}
