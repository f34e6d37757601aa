"""The SQLite journal opened read-only, for `run --once --dry-run`: nothing is created,
migrated or written, and a journal that does not exist yet simply knows nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol

from syncd.errors import SyncdError
from syncd.journal.codec import row_from
from syncd.journal.states import State
from syncd.journal.store import Row


class Reader(Protocol):
    """The reads a dry run makes, of SQLite (JournalReader) or a fleet's PostgreSQL."""

    def row(self, path: bytes) -> Row | None: ...

    def uploaded(self, service: str, sha256: str) -> list[Row]: ...

    def close(self) -> None: ...


class JournalReader:
    def __init__(self, path: Path) -> None:
        self._db: sqlite3.Connection | None = None
        if not path.exists():
            return
        # Without a -wal beside it the journal was closed cleanly and nobody writes to it:
        # `immutable` reads it without creating the -wal and -shm that `mode=ro` would.
        live = path.with_name(path.name + "-wal").exists()
        mode = "mode=ro" if live else "immutable=1"
        try:
            self._db = sqlite3.connect(f"{path.absolute().as_uri()}?{mode}", uri=True)
        except sqlite3.Error as exc:
            raise SyncdError(f"{path}: cannot read the journal: {exc}") from None
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def _rows(self, where: str, *values: object) -> list[Row]:
        if self._db is None:
            return []
        try:
            found = self._db.execute(f"SELECT * FROM files WHERE {where}", values).fetchall()  # noqa: S608
        except sqlite3.Error as exc:
            raise SyncdError(f"cannot read the journal: {exc}") from None
        return [row_from(r) for r in found]

    def row(self, path: bytes) -> Row | None:
        rows = self._rows("path=?", path)
        return rows[0] if rows else None

    def uploaded(self, service: str, sha256: str) -> list[Row]:
        """Rows whose upload of this content through `service` another copy could reuse."""
        return self._rows(
            "service=? AND sha256=? AND state IN (?, ?) ORDER BY id",
            service,
            sha256,
            State.UPLOADED,
            State.DONE,
        )
