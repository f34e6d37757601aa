"""What the SQLite store's parts share: the connection, its lock and the transactions that
SqliteStore provides. Its mixins (claims, reads, after-upload tables) build on this."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path

from syncd.errors import JournalDamaged
from syncd.journal.patience import StorageFault

DAMAGE = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
"""SQLite's primary codes for a file that is not (or no longer) a sound database."""
STORAGE_FAULTS = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
"""SQLite's primary codes for a full disk and for I/O errors: they pass by themselves."""
BUSY_SECONDS = 0.5
"""How long a write waits for the lock another process holds on the journal before it is a
fault, waited out with backoff: the connection is free meanwhile, so the status reply (whose
reads take no lock in WAL mode) still tells why nothing moves. A writer that holds it for
less passes unseen."""


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

    def _fault(self, exc: sqlite3.Error) -> Exception:
        """`exc` as what it means to the daemon: a StorageFault when it passes by itself (a
        full disk, I/O errors, another process holding the journal's lock: an operator's
        `sqlite3` session, a backup tool), JournalDamaged when the file is corrupt, else as
        it is."""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        path = self._path
        if code in STORAGE_FAULTS:
            return StorageFault(f"{path}: {exc}")
        if code == sqlite3.SQLITE_BUSY:
            return StorageFault(
                f"{path}: {exc}: another process holds the journal's lock (an open"
                " `sqlite3` session or a backup tool?)"
            )
        if code not in DAMAGE:
            return exc
        return JournalDamaged(
            f"{path}: the journal is damaged ({exc}): restore it from a backup, or salvage"
            f" what it holds with `sqlite3 {path} .recover`; moved aside, it is started afresh"
            " and every file in the watches is uploaded again"
        )
