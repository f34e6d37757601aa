"""The `store` fixture: every store test runs against every kind of store.

To run them against another store, add one line to OPENERS (say, "postgres" opening a
PostgresStore on a fresh database, with the same owner and lease).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncd.journal.sqlite import SqliteStore
from syncd.journal.store import Store

Opener = Callable[..., Store]
"""(owner=..., lease=...) -> another store on the test's one journal."""

OPENERS: dict[str, Callable[[Path, str, float | None], Store]] = {
    "sqlite": lambda tmp, owner, lease: SqliteStore(tmp / "journal.sqlite", owner, lease),
}


@pytest.fixture(params=sorted(OPENERS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a store on the test's journal; several are like several hosts (or restarts)."""
    opened: list[Store] = []

    def open_(owner: str = "host-a", lease: float | None = None) -> Store:
        store = OPENERS[request.param](tmp_path, owner, lease)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> Store:
    return open_store()
