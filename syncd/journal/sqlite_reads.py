"""The SQLite store's reads (a row, its progress, rows by state, the status counts,
metrics) and `syncd retry`. A mixin of SqliteStore."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from syncd.journal import rules
from syncd.journal.carry import CARRIED, Carried, carried_query
from syncd.journal.codec import decode, row_from
from syncd.journal.sqlite_base import SqlitePart
from syncd.journal.states import State, check_moves
from syncd.journal.store import Row


class SqliteReads(SqlitePart):
    def get(self, row_id: int) -> Row | None:
        found = self._read("SELECT * FROM files WHERE id=?", row_id)
        return row_from(found[0]) if found else None

    def load_progress(self, row: Row) -> dict[str, Any]:
        found = self._read("SELECT progress FROM files WHERE id=?", row.id)
        return (decode(found[0]["progress"]) if found else None) or {}

    def overdue_callbacks(self, now: float) -> list[Row]:
        found = self._read(
            "SELECT * FROM files WHERE state=? AND due <= ?", State.AWAITING_CALLBACK, now
        )
        return [row_from(r) for r in found]

    def in_state(self, state: State) -> list[Row]:
        return [row_from(r) for r in self._read("SELECT * FROM files WHERE state=?", state)]

    def carried(self) -> Carried:
        return {table: [dict(r) for r in self._read(carried_query(table))] for table in CARRIED}

    # -- the status socket's side ------------------------------------------------------

    def counts(self) -> dict[State, int]:
        found = self._read("SELECT state, COUNT(*) AS n FROM files GROUP BY state")
        by_state = {r["state"]: int(r["n"]) for r in found}
        return {state: by_state.get(state.value, 0) for state in State}

    def with_error(self, state: State, limit: int) -> list[Row]:
        found = self._read(
            "SELECT * FROM files WHERE state=? AND error IS NOT NULL"
            " ORDER BY error_at DESC LIMIT ?",
            state,
            limit,
        )
        return [row_from(r) for r in found]

    def retry(self, paths: Iterable[bytes] | None) -> int:
        queued_from = (State.FAILED, State.RETRY_WAIT)
        check_moves(queued_from, State.SEEN)
        check_moves(queued_from, State.HASHED)
        with self._write() as db:
            query = (
                "UPDATE files SET state=CASE WHEN sha256 IS NULL THEN 'seen' ELSE 'hashed' END,"
                " attempts=0, due=0, error=NULL, error_at=NULL, updated_at=?1,"
                " queued_at=CASE WHEN state='failed' THEN ?1 ELSE queued_at END"
                " WHERE state IN (?, ?)"
            )
            if paths is None:
                return db.execute(query, (time.time(), *queued_from)).rowcount
            return sum(
                db.execute(query + " AND path=?", (time.time(), *queued_from, p)).rowcount
                for p in paths
            )

    # -- metrics ---------------------------------------------------------------------------

    def oldest_pending(self) -> float | None:
        found = self._read(
            f"SELECT MIN(queued_at) AS at FROM files WHERE state IN {rules.PENDING}"  # noqa: S608
        )
        return None if found[0]["at"] is None else float(found[0]["at"])

    def last_success(self) -> dict[str, float]:
        # SQLite's planner would take files_due (state='done' is most rows): named here.
        found = self._read(rules.last_success("INDEXED BY files_success"))
        return {r["service"]: float(r["at"]) for r in found}
