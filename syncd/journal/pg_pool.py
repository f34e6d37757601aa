"""The PostgreSQL store's connections: a pool, each transaction on a connection of its own,
or all of a `batch()` (group commit) on the one connection the batch holds. Mixed into
PostgresStore, which opens the pool."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool, PoolTimeout

from syncd.journal.pg_base import Connected, Params
from syncd.journal.pg_schema import first_line
from syncd.journal.store import JournalUnavailable

OUTAGE_WAIT = 1.0
"""Seconds a call waits for a connection while the database is known to be unavailable."""
T = TypeVar("T")


class Pooled(Connected):
    _pool: ConnectionPool[psycopg.Connection[DictRow]]
    _outage: bool
    _batch: threading.local
    """`db`: the connection of the batch this thread has open, if any."""
    changes: int

    @contextmanager
    def _db(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A connection of the pool, or the one of the batch this thread has open; losing
        the database is JournalUnavailable, which callers ride out (the pool replaces the
        broken connection). During an outage a connection is waited for briefly, so that
        every caller finds out soon."""
        held = getattr(self._batch, "db", None)
        if held is not None:
            yield held
            return
        try:
            with self._pool.connection(OUTAGE_WAIT if self._outage else None) as db:
                yield db
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            self._outage = True
            raise JournalUnavailable(
                f"the journal database is unavailable: {first_line(exc)}"
            ) from None
        self._outage = False

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A transaction, or a part of the batch this thread has open."""
        held = getattr(self._batch, "db", None)
        if held is not None:
            yield held
            return
        with self._db() as db, db.transaction():
            yield db
        self.changes += 1

    def batch(self, work: Callable[[], T]) -> T:
        """`work`'s journal calls in one transaction on one connection of the pool."""
        if getattr(self._batch, "db", None) is not None:
            return work()
        with self._write() as db:
            self._batch.db = db
            try:
                return work()
            finally:
                self._batch.db = None

    def _read(self, query: str, values: Params = None) -> list[DictRow]:
        with self._db() as db:
            return db.execute(query, values).fetchall()

    def execute(self, query: str, values: Params = None) -> list[DictRow]:
        """A statement in a transaction of its own; the rows it returns (leases.py's use)."""
        with self._write() as db:
            cursor = db.execute(query, values)
            return cursor.fetchall() if cursor.description else []
