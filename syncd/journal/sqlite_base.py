"""What the SQLite store's parts share: the connection, its lock and the transactions that
SqliteStore provides. Its mixins (claims, reads, after-upload tables) build on this."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path

from syncd.errors import JournalDamaged

DAMAGE = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
"""SQLite's primary codes for a file that is not (or no longer) a sound database."""


class SqlitePart:
    _db: sqlite3.Connection
    _lock: threading.Lock
    _owner: str
    _lease: float | None
    _path: Path

    def _write(
        self, counted: bool = True, durable: bool = False
    ) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self, query: str, *values: object) -> list[sqlite3.Row]:
        raise NotImplementedError

    def _damage(self, exc: sqlite3.Error) -> Exception:
        """`exc` as JournalDamaged when it says the file is corrupt, else as it is."""
        if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) not in DAMAGE:
            return exc
        path = self._path
        return JournalDamaged(
            f"{path}: the journal is damaged ({exc}): restore it from a backup, or salvage"
            f" what it holds with `sqlite3 {path} .recover`; moved aside, it is started afresh"
            " and every file in the watches is uploaded again"
        )
