"""The fleet's commands: `syncd check`'s word on the journal database, `syncd journal copy`.

psycopg is imported only here and in the PostgreSQL store, so that a host without the
`fleet` extra runs everything else.
"""

from __future__ import annotations

import os
from pathlib import Path

from syncd.config import Config, JournalConfig
from syncd.config.values import parse_database_url
from syncd.daemon import lock_state_dir
from syncd.errors import SyncdError, UsageError
from syncd.intake.routing import route
from syncd.journal.states import State
from syncd.journal.store import Row
from syncd.work.flow import rank

FLEET_EXTRA = "fleet mode needs the fleet extra: pip install 'syncd[fleet]'"


def describe_journal(journal: JournalConfig) -> str:
    try:
        from syncd.journal.pg_schema import describe
    except ImportError:
        raise SyncdError(FLEET_EXTRA) from None
    return describe(journal.url, journal.password)


def copy_journal(config: Config, url: str) -> int:
    """Copy state_dir's SQLite journal into the database at `url`, while no daemon runs."""
    try:
        url = parse_database_url(url)
    except ValueError as exc:
        raise UsageError(f"--to: {exc}") from None
    try:
        from syncd.journal.postgres import PostgresStore
    except ImportError:
        raise SyncdError(FLEET_EXTRA) from None
    from syncd.journal.sqlite import SqliteStore

    state_dir = config.daemon.state_dir
    source = state_dir / "journal.sqlite"
    if not source.exists():
        raise SyncdError(f"{source}: no journal to copy")
    lock = lock_state_dir(state_dir)
    try:
        journal = config.journal
        password = journal.password if journal else os.environ.get("PGPASSWORD", "")
        host_id = journal.host_id if journal else "journal-copy"
        sqlite = SqliteStore(source)
        try:
            rows = [row for state in State for row in sqlite.in_state(state)]
        finally:
            sqlite.close()
        target = PostgresStore(url, password, host_id, lease=None, connections=2)
        try:
            copied, present = target.adopt(rows, lambda row: _queue_place(config, row))
        finally:
            target.close()
    finally:
        os.close(lock)
    also = f"; {present} were there already" if present else ""
    print(f"copied {copied} files from {source} into {url}{also}")
    return 0


def _queue_place(config: Config, row: Row) -> tuple[int, int | bytes | None]:
    """Where intake would queue the row on this host: its watch's priority and order."""
    watch = route(config.watches, Path(os.fsdecode(row.path)))
    if watch is None:
        return 0, None
    return watch.priority, rank(watch.order, row.path, row.identity)
