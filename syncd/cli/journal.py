"""The fleet's commands: `syncd check`'s word on the journal database, `syncd journal copy`.

psycopg is imported only here and in the PostgreSQL store, so that a host without the
`fleet` extra runs everything else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from syncd.config import Config, JournalConfig
from syncd.config.values import parse_database_url
from syncd.errors import SyncdError, UsageError
from syncd.intake.routing import route
from syncd.journal.carry import Adopted, Adoption
from syncd.journal.lock import lock_state_dir
from syncd.journal.states import State
from syncd.journal.store import Fleet, Row, Store
from syncd.outputs.hooks import rekey
from syncd.services.oneall.signer import KEY_FILE, MIN_KEY
from syncd.work.flow import rank
from syncd.work.flow.merge import merge_flow

FLEET_EXTRA = "fleet mode needs the fleet extra: pip install 'syncd[fleet]'"


def describe_journal(journal: JournalConfig) -> str:
    try:
        from syncd.journal.pg_schema import describe
    except ImportError:
        raise SyncdError(FLEET_EXTRA) from None
    return describe(journal.url, journal.password)


def copy_journal(config: Config, url: str) -> int:
    """Copy state_dir's SQLite journal into the database at `url`, while no daemon runs:
    its files and all they carry (journal/carry.py), and the media server's key."""
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
            carried = sqlite.carried()
        finally:
            sqlite.close()
        target = PostgresStore(url, password, host_id, lease=None, connections=2)
        try:
            key_kept = _share_media_key(state_dir, target)
            adoption = Adoption(lambda row: _queue_place(config, row), rekey, merge_flow)
            adopted = target.adopt(rows, carried, adoption)
            refused = _refuse_stranded_videos(target, rows, adopted, key_kept)
        finally:
            target.close()
    finally:
        os.close(lock)
    also = f"; {adopted.present} were there already" if adopted.present else ""
    print(f"copied {adopted.copied} files from {source} into {url}{also}")
    carried_counts = [f"{n} {CARRIED_NAMES[t]}" for t, n in adopted.carried.items() if n]
    if carried_counts:
        print("carried: " + ", ".join(carried_counts))
    for warning in _warnings(adopted, refused):
        print(f"syncd: warning: {warning}", file=sys.stderr)
    return 0


CARRIED_NAMES = {
    "actions": "after-upload actions",
    "hooks": "hooks",
    "outbox": "webhook deliveries",
    "outbox_once": "once-only event keys",
    "flow_state": "flow control values",
}


def _share_media_key(state_dir: Path, target: Fleet) -> bool:
    """The host's media key becomes the fleet's when the fleet has none yet: the URLs this
    host gave OneAll stay valid. Whether the fleet's key is the host's."""
    path = state_dir / KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise SyncdError(f"{path}: cannot read the media server's key: {exc.strerror}") from None
    if len(key) < MIN_KEY:
        return False  # damaged: the host's own start would refuse it too
    return target.shared_key(KEY_FILE, lambda: key) == key


def _refuse_stranded_videos(
    target: Store, rows: list[Row], adopted: Adopted, key_kept: bool
) -> list[str]:
    """A video awaiting OneAll's callback completes in the fleet only when the callback URL
    it was given still names it (its id) and still verifies (the key): else it is failed
    now, saying why (`syncd retry` pushes it again), rather than refused when OneAll calls."""
    refused = []
    for row in rows:
        new_id = adopted.ids.get(row.id)
        if row.state is not State.AWAITING_CALLBACK or new_id is None:
            continue
        if key_kept and new_id == row.id:
            continue
        why = "the fleet's media key is another" if not key_kept else "its journal id is taken"
        reason = (
            f"{row.service}: OneAll's callback cannot reach it after `syncd journal copy`"
            f" ({why}); `syncd retry` pushes it again"
        )
        copied = target.get(new_id)
        if copied is not None and target.mark_failed(copied, reason):
            refused.append(f"{os.fsdecode(row.path)}: failed: {reason}")
    return refused


def _warnings(adopted: Adopted, refused: list[str]) -> list[str]:
    """What was not carried, and why."""
    warnings = list(refused)
    if adopted.again:
        warnings.append(
            "every file was in the fleet's journal already (copied before?): nothing else"
            " was carried, so that no move, hook or delivery happens twice"
        )
    if adopted.left.get("actions"):
        warnings.append(
            f"{adopted.left['actions']} after-upload actions stay behind: their files were in"
            " the fleet's journal already, whose record of them stands"
        )
    return warnings


def _queue_place(config: Config, row: Row) -> tuple[int, int | bytes | None]:
    """Where intake would queue the row on this host: its watch's priority and order."""
    watch = route(config.watches, Path(os.fsdecode(row.path)))
    if watch is None:
        return 0, None
    return watch.priority, rank(watch.order, row.path, row.identity)
