"""SQLite's side of the after-upload tables (journal/after.py): the SQL of actions and hooks."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable

from syncd.files import Identity
from syncd.journal.after import (
    FINISHED,
    HOOKS_KEPT,
    IN_TRASH,
    UNFINISHED,
    Action,
    HookEvent,
    HookRow,
)
from syncd.journal.codec import (
    ACTION_COLUMNS,
    HOOK_COLUMNS,
    action_from,
    encode,
    hook_from,
    hook_values,
)
from syncd.journal.sqlite_base import SqlitePart
from syncd.journal.states import State, allowed


def _enqueue(db: sqlite3.Connection, hook: HookEvent | None) -> None:
    if hook is None:
        return
    db.execute(
        "INSERT OR IGNORE INTO hooks (key, event, path, argv, env, timeout, state, at)"
        " VALUES (:key, :event, :path, :argv, :env, :timeout, 'pending', :at)",
        hook_values(hook, time.time()),
    )


class SqliteAfterUpload(SqlitePart):
    """Mixed into SqliteStore: its connection, lock and transactions."""

    # -- actions -----------------------------------------------------------------------

    def schedule_action(
        self, file_id: int, version: int, kind: str, source: bytes, root: bytes, due: float
    ) -> None:
        """Once per version of a file: its sha256 and result are copied from its row."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO actions (file_id, version, kind, state, source, root,"
                " sha256, result, due, updated_at) SELECT id, version, ?, 'pending', ?, ?,"
                " sha256, result, ?, ? FROM files WHERE id=? AND version=? AND sha256 IS NOT NULL",
                (kind, source, root, due, time.time(), file_id, version),
            )

    def due_actions(self, now: float) -> list[Action]:
        """Unfinished moves first (a crash cut them short), then pending ones that are due."""
        found = self._read(
            f"SELECT {ACTION_COLUMNS} FROM actions WHERE {UNFINISHED} AND due <= ?"  # noqa: S608
            " ORDER BY state='pending', due, id LIMIT 100",
            now,
        )
        return [action_from(r) for r in found]

    def next_action_due(self) -> float | None:
        found = self._read("SELECT MIN(due) FROM actions WHERE state='pending'")
        return None if found[0][0] is None else float(found[0][0])

    def action_intent(self, action: Action, target: bytes) -> None:
        """The target chosen, durably, before anything on disk moves."""
        with self._write(durable=True) as db:
            db.execute(
                "UPDATE actions SET state='moving', target=?, error=NULL, updated_at=? WHERE id=?",
                (target, time.time(), action.id),
            )

    def action_moved(self, action: Action, hook: HookEvent | None) -> None:
        """Done; for a delete, `updated_at` is from now on when it went into the trash."""
        with self._write() as db:
            db.execute(
                "UPDATE actions SET state='moved', error=NULL, updated_at=? WHERE id=?",
                (time.time(), action.id),
            )
            _enqueue(db, hook)

    def action_skipped(self, action: Action, reason: str, hook: HookEvent | None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE actions SET state='skipped', error=?, updated_at=? WHERE id=?",
                (reason, time.time(), action.id),
            )
            _enqueue(db, hook)

    def action_later(self, action: Action, error: str | None, due: float) -> None:
        """An error worth another try (a full disk, a folder not writable yet)."""
        with self._write() as db:
            db.execute(
                "UPDATE actions SET error=?, due=?, updated_at=? WHERE id=?",
                (error, due, time.time(), action.id),
            )

    def trashed(self, path: bytes) -> Action | None:
        """The latest file in the trash that came from `path` (or lies at `path` in it)."""
        found = self._read(
            f"SELECT {ACTION_COLUMNS} FROM actions WHERE {IN_TRASH}"  # noqa: S608
            " AND (source=? OR target=?) ORDER BY updated_at DESC, id DESC LIMIT 1",
            path,
            path,
        )
        return action_from(found[0]) if found else None

    def restore_intent(self, action: Action, identity: Identity) -> str | None:
        values = {
            "path": action.source,
            "sha256": action.sha256,
            "result": encode(action.result) if action.result is not None else None,
            "now": time.time(),
            **identity._asdict(),
        }
        with self._write(durable=True) as db:
            found = db.execute("SELECT state FROM files WHERE path=?", (action.source,)).fetchone()
            if found is None or not allowed(State(found["state"]), State.DONE):
                return "not in the journal" if found is None else f"{found['state']} in the journal"
            file_id, version = db.execute(
                "UPDATE files SET state='done', version=version+1, dev=:dev, inode=:inode,"
                " size=:size, mtime_ns=:mtime_ns, sha256=:sha256, uploaded_sha256=:sha256,"
                " result=COALESCE(:result, result), error=NULL, error_at=NULL, due=0,"
                " updated_at=:now WHERE path=:path RETURNING id, version",
                values,
            ).fetchone()
            db.execute(
                "UPDATE actions SET state='restoring', file_id=?, version=?, updated_at=?"
                " WHERE id=?",
                (file_id, version, values["now"], action.id),
            )
        return None

    def action_restored(self, action: Action) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE actions SET state='restored', updated_at=? WHERE id=?",
                (time.time(), action.id),
            )

    def purgeable(self, trash: bytes, trashed_before: float) -> list[Action]:
        found = self._read(
            f"SELECT {ACTION_COLUMNS} FROM actions WHERE {IN_TRASH}"  # noqa: S608
            " AND root=? AND updated_at <= ? LIMIT 1000",
            trash,
            trashed_before,
        )
        return [action_from(r) for r in found]

    def trash_ages(self) -> dict[bytes, float]:
        found = self._read(
            f"SELECT root, MIN(updated_at) AS oldest FROM actions WHERE {IN_TRASH}"  # noqa: S608
            " GROUP BY root"
        )
        return {r["root"]: float(r["oldest"]) for r in found}

    def action_purged(self, action: Action) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE actions SET state='purged', updated_at=? WHERE id=?",
                (time.time(), action.id),
            )

    def action_counts(self) -> dict[str, int]:
        pending = self._read(
            f"SELECT COUNT(*) AS n FROM actions WHERE {UNFINISHED}"  # noqa: S608
        )
        trash = self._read(
            f"SELECT COUNT(*) AS n FROM actions WHERE {IN_TRASH}"  # noqa: S608
        )
        return {"pending": int(pending[0]["n"]), "trash": int(trash[0]["n"])}

    def forget_actions(self, finished_before: float) -> None:
        with self._write(counted=False) as db:
            db.execute(
                f"DELETE FROM actions WHERE updated_at < ? AND {FINISHED}",  # noqa: S608
                (finished_before,),
            )

    def actions_with_error(self, limit: int) -> list[Action]:
        found = self._read(
            f"SELECT {ACTION_COLUMNS} FROM actions WHERE {UNFINISHED}"  # noqa: S608
            " AND error IS NOT NULL"
            " ORDER BY updated_at DESC LIMIT ?",
            limit,
        )
        return [action_from(r) for r in found]

    # -- hooks -------------------------------------------------------------------------

    def enqueue_hook(self, hook: HookEvent) -> None:
        with self._write() as db:
            _enqueue(db, hook)

    def pending_hooks(self, exclude: Iterable[int], limit: int) -> list[HookRow]:
        held = ",".join(str(int(i)) for i in exclude) or "-1"
        found = self._read(
            f"SELECT {HOOK_COLUMNS} FROM hooks WHERE state='pending'"  # noqa: S608
            f" AND id NOT IN ({held}) ORDER BY id LIMIT ?",
            limit,
        )
        return [hook_from(r) for r in found]

    def hook_finished(self, hook_id: int, error: str | None) -> None:
        now = time.time()
        with self._write() as db:
            db.execute(
                "UPDATE hooks SET state=?, error=?, at=? WHERE id=?",
                ("ok" if error is None else "failed", error, now, hook_id),
            )
            db.execute("DELETE FROM hooks WHERE state<>'pending' AND at < ?", (now - HOOKS_KEPT,))

    def failing_hooks(self, limit: int) -> list[HookRow]:
        found = self._read(
            f"SELECT {HOOK_COLUMNS} FROM hooks WHERE state='failed'"  # noqa: S608
            " ORDER BY at DESC LIMIT ?",
            limit,
        )
        return [hook_from(r) for r in found]

    def failures_since_cursor(self) -> list[tuple[int, float]]:
        """The failed files (id, error_at) since the cursor; the caller enqueues their
        hooks and moves the cursor on."""
        with self._lock:
            ((cursor,),) = self._read("SELECT failed_since FROM hook_cursor")
            return [
                (row[0], row[1])
                for row in self._read(
                    "SELECT id, error_at FROM files WHERE state='failed' AND error_at > ?"
                    " ORDER BY error_at",
                    cursor,
                )
            ]

    def failures_enqueued(self, hooks: list[HookEvent], cursor: float) -> None:
        with self._write() as db:
            for hook in hooks:
                _enqueue(db, hook)
            db.execute("UPDATE hook_cursor SET failed_since=MAX(failed_since, ?)", (cursor,))
