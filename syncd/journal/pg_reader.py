"""Fleet mode's journal read for `run --once --dry-run`: one read-only session on the
fleet's database; nothing is created, migrated or written, and a database without the
schema yet simply knows nothing (as a missing SQLite journal, reader.py)."""

from __future__ import annotations

import psycopg
from psycopg.rows import DictRow, dict_row

from syncd.errors import SyncdError
from syncd.journal.pg_base import Params, row_of
from syncd.journal.pg_schema import connect_error, current_version, first_line
from syncd.journal.store import Row


class PgJournalReader:
    def __init__(self, url: str, password: str) -> None:
        self._url = url
        try:
            self._db: psycopg.Connection[DictRow] = psycopg.connect(
                url,
                password=password or None,
                connect_timeout=10,
                autocommit=True,
                row_factory=dict_row,
            )
            self._db.execute("SET default_transaction_read_only = on")
            self._known = current_version(self._db) > 0
        except psycopg.Error as exc:
            raise connect_error(url, exc) from None

    def close(self) -> None:
        self._db.close()

    def _rows(self, where: str, values: Params) -> list[Row]:
        if not self._known:
            return []
        try:
            found = self._db.execute(f"SELECT * FROM files WHERE {where}", values).fetchall()  # noqa: S608
        except psycopg.Error as exc:
            raise SyncdError(f"{self._url}: cannot read the journal: {first_line(exc)}") from None
        return [row_of(r) for r in found]

    def row(self, path: bytes) -> Row | None:
        rows = self._rows("path=%s", (path,))
        return rows[0] if rows else None

    def uploaded(self, service: str, sha256: str) -> list[Row]:
        """Rows whose upload of this content through `service` another copy could reuse."""
        return self._rows(
            "service=%s AND sha256=%s AND state IN ('uploaded', 'done') ORDER BY id",
            (service, sha256),
        )
