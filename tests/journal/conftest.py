"""The `store` fixture: every store test runs against every kind of store.

To run them against another store, add one line to OPENERS; "postgres" (fleet mode's
PostgresStore, on a fresh database of the session's throwaway cluster) needs a fixture, so
it is opened by `_postgres`.
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


def _postgres(request: pytest.FixtureRequest) -> Callable[[Path, str, float | None], Store]:
    """A fresh database on the session's throwaway PostgreSQL (skipped without one)."""
    cluster = request.getfixturevalue("postgres_cluster")
    from syncd.journal.postgres import PostgresStore

    url = cluster.database()
    return lambda tmp, owner, lease: PostgresStore(url, cluster.password, owner, lease)


@pytest.fixture(params=[*sorted(OPENERS), "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a store on the test's journal; several are like several hosts (or restarts)."""
    opened: list[Store] = []
    opener = _postgres(request) if request.param == "postgres" else OPENERS[request.param]

    def open_(owner: str = "host-a", lease: float | None = None) -> Store:
        store = opener(tmp_path, owner, lease)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> Store:
    return open_store()
