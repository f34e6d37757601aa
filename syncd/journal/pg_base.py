"""What the PostgreSQL store's parts share: the connection methods they call (PostgresStore
provides them) and the conversion of rows, whose st_dev and st_ino are unsigned 64-bit
numbers kept in signed BIGINT columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg.rows import DictRow

from syncd.journal.codec import row_from
from syncd.journal.store import Row

Params = Sequence[Any] | Mapping[str, Any] | None


class Connected:
    def _write(self) -> AbstractContextManager[psycopg.Connection[DictRow]]:
        """A transaction, committed on leaving."""
        raise NotImplementedError

    def _read(self, query: str, values: Params = None) -> list[DictRow]:
        raise NotImplementedError

    def execute(self, query: str, values: Params = None) -> list[DictRow]:
        """A statement in a transaction of its own; the rows it returns."""
        raise NotImplementedError


def signed(number: int) -> int:
    return number - (1 << 64) if number >= 1 << 63 else number


def unsigned(number: int) -> int:
    return number + (1 << 64) if number < 0 else number


def row_of(columns: DictRow) -> Row:
    """A Row from a `SELECT *` of `files`."""
    values = dict(columns)
    values["dev"], values["inode"] = unsigned(values["dev"]), unsigned(values["inode"])
    return row_from(values)
