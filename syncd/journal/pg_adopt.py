"""A host's journal joining the fleet's (`syncd journal copy`): its files and what they carry.

All in one transaction, so a copy cut short adds nothing; a copy run again finds every file
there and carries nothing twice. A file keeps its id when the fleet has no row of that id (a
OneAll video's callback URL names it); one whose id is taken gets the fleet's next. What
names a file by its id (an action, a hook's key, a quota's count) follows it. A path the
fleet knows already stays the fleet's, and its actions stay behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import DictRow

from syncd.journal import rules
from syncd.journal.after import HOOKS_KEPT
from syncd.journal.carry import CARRIED, Adopted, Adoption, Carried
from syncd.journal.codec import encode
from syncd.journal.pg_base import Connected, signed
from syncd.journal.states import State
from syncd.journal.store import Row

Db = psycopg.Connection[DictRow]

_FILE_COLUMNS = (
    "id, path, service, state, version, dev, inode, size, mtime_ns, sha256, attempts, due,"
    " error, error_at, progress, result, duplicate_of, uploaded_at, updated_at,"
    " uploaded_sha256, queued_at, priority, rank"
)
_NEXT_ID = "nextval(pg_get_serial_sequence('files', 'id'))"
_NEW_DELIVERY = (
    "WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE event_id=%(event_id)s AND target=%(target)s)"
)
"""A delivery is one event to one receiver: carried once, however often the copy runs."""


class Adopting(Connected):
    """Mixed into PostgresStore."""

    def adopt(self, rows: Iterable[Row], carried: Carried, adoption: Adoption) -> Adopted:
        """Each path not here yet is added as it stood, unclaimed, an upload in flight back
        to `hashed` (it resumes from its saved progress), in the queue where `place` puts it;
        then what `carried` holds (journal/carry.py)."""
        adopted = Adopted()
        with self._write() as db:
            new = []
            for row in rows:
                found = db.execute("SELECT id FROM files WHERE path=%s", (row.path,)).fetchone()
                if found is None:
                    new.append(row)
                else:
                    adopted.present += 1
                    adopted.known[row.id] = int(found["id"])
            taken = {
                int(r["id"])
                for r in db.execute(
                    "SELECT id FROM files WHERE id = ANY(%s)", ([r.id for r in new],)
                ).fetchall()
            }
            # Ids that are free first, then the sequence past them all, then the others.
            for keep in (True, False):
                if not keep:
                    db.execute(
                        "SELECT setval(pg_get_serial_sequence('files', 'id'),"
                        " (SELECT COALESCE(MAX(id), 0) + 1 FROM files), false)"
                    )
                for row in new:
                    if (row.id not in taken) is keep:
                        adopted.ids[row.id] = _insert_file(db, row, keep, adoption)
            adopted.copied = len(new)
            adopted.known.update(adopted.ids)
            adopted.again = adopted.present > 0 and not new
            if adopted.again:
                return adopted
            _carry_actions(db, carried["actions"], adopted)
            hooks = [
                {**r, "key": adoption.rekey_hook(r["key"], adopted.known)} for r in carried["hooks"]
            ]
            _insert(db, "hooks", hooks, adopted)
            _insert(db, "outbox", carried["outbox"], adopted, _NEW_DELIVERY)
            _insert(db, "outbox_once", carried["outbox_once"], adopted)
            _carry_cursor(db, carried["hook_cursor"])
            _carry_flow(db, carried["flow_state"], adopted, adoption)
        return adopted


def _insert_file(db: Db, row: Row, keep_id: bool, adoption: Adoption) -> int:
    priority, rank = adoption.place(row)
    state = State.HASHED if row.state == State.UPLOADING else row.state
    values: dict[str, Any] = {
        "id": row.id,
        "path": row.path,
        "service": row.service,
        "state": str(state),
        "version": row.version,
        "dev": signed(row.identity.dev),
        "inode": signed(row.identity.inode),
        "size": row.identity.size,
        "mtime_ns": row.identity.mtime_ns,
        "sha256": row.sha256,
        "attempts": row.attempts,
        "due": row.due,
        "error": row.error,
        "error_at": row.error_at,
        "progress": encode(row.progress) if row.progress else None,
        "result": None if row.result is None else encode(row.result),
        "duplicate_of": row.duplicate_of,
        "uploaded_at": row.uploaded_at,
        "updated_at": time.time(),
        "uploaded_sha256": row.uploaded_sha256,
        "queued_at": row.queued_at,
        "priority": priority,
        "rank": rules.queue_rank(rank),
    }
    placeholders = ", ".join(f"%({name})s" for name in _FILE_COLUMNS.replace(" ", "").split(","))
    if not keep_id:
        placeholders = placeholders.replace("%(id)s", _NEXT_ID, 1)
    inserted = db.execute(
        f"INSERT INTO files ({_FILE_COLUMNS}) VALUES ({placeholders}) RETURNING id",  # noqa: S608
        values,
    ).fetchone()
    assert inserted is not None
    return int(inserted["id"])


def _carry_actions(db: Db, actions: list[dict[str, Any]], adopted: Adopted) -> None:
    """An action follows its file; one of a file the fleet knew already is left behind."""
    mine = []
    for action in actions:
        file_id = adopted.ids.get(int(action["file_id"]))
        if file_id is None:
            adopted.left["actions"] = adopted.left.get("actions", 0) + 1
        else:
            mine.append({**action, "file_id": file_id})
    _insert(db, "actions", mine, adopted)


def _insert(
    db: Db, table: str, rows: list[dict[str, Any]], adopted: Adopted, unless: str = ""
) -> None:
    """Rows as they stood (unclaimed), but those here already: by a unique key, or as the
    condition `unless` (SQL) finds them."""
    columns = CARRIED[table][0]
    values = ", ".join(f"%({c})s" for c in columns)
    query = (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {values} {unless}"
        " ON CONFLICT DO NOTHING"
    )
    for row in rows:
        adopted.carried[table] = adopted.carried.get(table, 0) + db.execute(query, row).rowcount


def _carry_cursor(db: Db, cursor: list[dict[str, Any]]) -> None:
    """Failed files the host had not yet found for on_failed hooks are found by the fleet:
    its cursor goes back to the host's (not past the time a hook's key is kept, which keeps
    the fleet's own failures in that span from running their hooks again)."""
    if cursor:
        since = max(float(cursor[0]["failed_since"]), time.time() - HOOKS_KEPT / 2)
        db.execute("UPDATE hook_cursor SET failed_since=LEAST(failed_since, %s)", (since,))


def _carry_flow(db: Db, values: list[dict[str, Any]], adopted: Adopted, adoption: Adoption) -> None:
    """Pauses, holds and quota counts, merged with the fleet's (work/flow/ knows how)."""
    for entry in values:
        found = db.execute(
            "SELECT value FROM flow_state WHERE key=%s FOR UPDATE", (entry["key"],)
        ).fetchone()
        fleet = json.loads(found["value"]) if found else None
        kept = adoption.merge_flow(entry["key"], fleet, json.loads(entry["value"]), adopted.known)
        db.execute(
            "INSERT INTO flow_state (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            (entry["key"], json.dumps(kept)),
        )
        adopted.carried["flow_state"] = adopted.carried.get("flow_state", 0) + 1
