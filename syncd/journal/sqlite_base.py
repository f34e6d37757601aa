"""What the SQLite store's parts share: the connection, its lock and the transactions that
SqliteStore provides. Its mixins (claims, reads, after-upload tables) build on this."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager


class SqlitePart:
    _db: sqlite3.Connection
    _lock: threading.Lock
    _owner: str
    _lease: float | None

    def _write(
        self, counted: bool = True, durable: bool = False
    ) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self, query: str, *values: object) -> list[sqlite3.Row]:
        raise NotImplementedError
