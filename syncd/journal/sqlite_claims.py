"""The SQLite store's claims on file rows, taken in one `UPDATE … RETURNING` so that two
stores opened on one file never hand out the same row. A mixin of SqliteStore."""

from __future__ import annotations

import sqlite3
import time

from syncd.journal.codec import row_from
from syncd.journal.sqlite_base import SqlitePart
from syncd.journal.states import CLAIMABLE, State
from syncd.journal.store import Row

_CLAIMABLE = ", ".join(f"'{s}'" for s in sorted(CLAIMABLE))
_WAITING = f"state IN ({_CLAIMABLE}) AND (claim_owner IS NULL OR claim_expires < :now)"
"""Rows waiting for a worker (SQL built from our own constants, never from input)."""


def _not_in(skipped: dict[str, str]) -> str:
    """SQL: the row's service is none of the named parameters in `skipped`."""
    return f"service NOT IN ({', '.join(':' + name for name in skipped)})"


class SqliteClaims(SqlitePart):
    def claim(self, now: float, skip: frozenset[str] = frozenset()) -> Row | None:
        expires = None if self._lease is None else now + self._lease
        skipped = {f"skip{n}": service for n, service in enumerate(sorted(skip))}
        with self._write(counted=False) as db:
            # The planner, without statistics, prefers files_due and sorts every waiting
            # row; walking the queue's own index finds the first one at once.
            found = db.execute(
                "UPDATE files SET claim_owner=:owner, claim_expires=:expires,"  # noqa: S608
                " claim_fence=claim_fence+1 WHERE id=(SELECT id FROM files INDEXED BY"
                f" files_queue WHERE {_WAITING} AND due <= :now AND {_not_in(skipped)}"
                " ORDER BY priority DESC, rank, id LIMIT 1) RETURNING *",
                {"owner": self._owner, "expires": expires, "now": now, **skipped},
            ).fetchall()
        return row_from(found[0]) if found else None

    def release(self, row_id: int) -> None:
        with self._write(counted=False) as db:
            db.execute(
                "UPDATE files SET claim_owner=NULL, claim_expires=NULL"
                " WHERE id=? AND claim_owner=?",
                (row_id, self._owner),
            )

    def holds(self, row: Row) -> bool:
        """One host writes this journal: a read suffices (no other store takes the row over
        between this answer and the write that follows). A row already done is nobody's to
        write for, as in the PostgreSQL store: its sidecar and its completion happened."""
        found = self._read(
            "SELECT 1 FROM files WHERE id=? AND claim_fence=? AND state<>?"
            " AND (claim_owner IS NULL OR claim_owner=?)",
            row.id,
            row.fence,
            State.DONE,
            self._owner,
        )
        return bool(found)

    def next_due(self, skip: frozenset[str] = frozenset()) -> float | None:
        skipped = {f"skip{n}": service for n, service in enumerate(sorted(skip))}
        with self._lock:
            try:
                found = self._db.execute(
                    f"SELECT MIN(due) AS due FROM files WHERE {_WAITING} AND {_not_in(skipped)}",  # noqa: S608
                    {"now": time.time(), **skipped},
                ).fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._fault(exc) from None
        return None if found["due"] is None else float(found["due"])
