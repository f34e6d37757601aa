"""PostgreSQL's side of the after-upload tables (journal/after.py): actions and hooks, claimed.

Every host of a fleet runs the actions thread and the hooks runner over the same tables, so
an action or a hook is claimed as a file row is: `due_actions` and `pending_hooks` take what
they return with `FOR UPDATE SKIP LOCKED` for this host (what it already holds comes again),
bounded by its lease and renewed with its file claims (leases.py); a dead host's run out and
another host takes them. An action's intent is fenced by the claim: a host that lost it
(frozen past its lease) gets `ActionTaken` and moves nothing, so each file is archived or
trashed by one host. What follows the intent is idempotent (work/moves.py), so a host that
took over a `moving` action finishes it. A hook runs at least once: a host dying while one
runs leaves it to another host.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import DictRow

from syncd.files import Identity
from syncd.journal.after import (
    FINISHED,
    HOOKS_KEPT,
    IN_TRASH,
    UNFINISHED,
    Action,
    ActionTaken,
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
from syncd.journal.pg_base import Connected, Params, signed
from syncd.journal.pg_hosts import OTHER_INSTANCES, SEATED, Seat
from syncd.journal.states import State, allowed

CLAIMED_AT_ONCE = 10
"""Actions a host claims in one go: enough to keep its thread busy, few enough to share."""
_FREE = f"(claim_owner IS NULL OR claim_owner=%(owner)s OR claim_expires < %(now)s) AND {SEATED}"
"""Free, this process's, or held by one whose claim ran out; while this process holds its
host_id."""
_OURS = f"(claim_owner IS NULL OR claim_owner=%(owner)s) AND {SEATED}"
"""Nobody else's: a process that took this over has its name there."""
_LET_GO = "claim_owner=NULL, claim_expires=NULL"
_CLAIMED = ("actions", "hooks", "outbox")
"""The tables whose rows this mixin's claims hold beside `files`."""


class PostgresAfterUpload(Connected):
    """Mixed into PostgresStore: its connections, its host name and its claims' expiry."""

    owner: str
    seat: Seat

    def expiry(self, now: float) -> float | None:
        raise NotImplementedError

    def _claim_values(self, **values: Any) -> dict[str, Any]:
        now = time.time()
        return self.seat.values(now=now, expires=self.expiry(now), **values)

    def _change(self, query: str, values: Params) -> int:
        """One statement in a transaction of its own; the rows it changed."""
        with self._write() as db:
            return db.execute(query, values).rowcount

    # -- claims beside the files' ----------------------------------------------------------

    def renew_tasks(self) -> None:
        """This host's claims on actions, hooks and deliveries last as long as it lives."""
        for table in _CLAIMED:
            self._change(
                f"UPDATE {table} SET claim_expires=%(expires)s::float8 WHERE claim_owner=%(owner)s",
                self._claim_values(),
            )

    def drop_tasks(self) -> None:
        """At start: what this host_id's earlier processes held is a crash's, free for any
        host again."""
        for table in _CLAIMED:
            self._change(
                f"UPDATE {table} SET {_LET_GO} WHERE {OTHER_INSTANCES}", self.seat.values()
            )

    # -- actions -----------------------------------------------------------------------

    def schedule_action(
        self, file_id: int, version: int, kind: str, source: bytes, root: bytes, due: float
    ) -> None:
        self._change(
            "INSERT INTO actions (file_id, version, kind, state, source, root, sha256, result,"
            " due, updated_at) SELECT id, version, %(kind)s, 'pending', %(source)s, %(root)s,"
            " sha256, result, %(due)s, %(now)s FROM files WHERE id=%(id)s"
            " AND version=%(version)s AND sha256 IS NOT NULL ON CONFLICT DO NOTHING",
            self._claim_values(
                kind=kind, source=source, root=root, due=due, id=file_id, version=version
            ),
        )

    def due_actions(self, now: float) -> list[Action]:
        """Claimed for this host: moves cut short first, then pending ones that are due."""
        with self._write() as db:
            found = db.execute(
                f"UPDATE actions SET claim_owner=%(owner)s, claim_expires=%(expires)s::float8"
                f" WHERE id IN (SELECT id FROM actions WHERE {UNFINISHED} AND due <= %(due)s"
                f" AND {_FREE} ORDER BY state='pending', due, id LIMIT {CLAIMED_AT_ONCE}"
                f" FOR UPDATE SKIP LOCKED) RETURNING {ACTION_COLUMNS}",
                self._claim_values(due=now),
            ).fetchall()
        actions = [action_from(r) for r in found]
        return sorted(actions, key=lambda a: (a.state == "pending", a.due, a.id))

    def next_action_due(self) -> float | None:
        found = self._read(
            f"SELECT MIN(due) AS due FROM actions WHERE state='pending' AND {_FREE}",
            self._claim_values(),
        )
        return None if found[0]["due"] is None else float(found[0]["due"])

    def action_intent(self, action: Action, target: bytes) -> None:
        """Only under this host's claim: another host that took the action over moves it."""
        if not self._change(
            "UPDATE actions SET state='moving', target=%(target)s, error=NULL,"
            f" updated_at=%(now)s, claim_owner=%(owner)s, claim_expires=%(expires)s::float8"
            f" WHERE id=%(id)s AND {_OURS}",
            self._claim_values(target=target, id=action.id),
        ):
            raise ActionTaken(f"action {action.id} was taken over by another host")

    def _finish(
        self, action: Action, assignments: str, hook: HookEvent | None = None, **values: Any
    ) -> None:
        """A step that lets go of the action (nothing, if another host took it over), with
        the hook it enqueues in the same transaction."""
        with self._write() as db:
            db.execute(
                f"UPDATE actions SET {assignments}, updated_at=%(now)s, {_LET_GO}"
                f" WHERE id=%(id)s AND {_OURS}",
                self._claim_values(id=action.id, **values),
            )
            _enqueue(db, hook)

    def action_moved(self, action: Action, hook: HookEvent | None) -> None:
        self._finish(action, "state='moved', error=NULL", hook)

    def action_skipped(self, action: Action, reason: str, hook: HookEvent | None) -> None:
        self._finish(action, "state='skipped', error=%(error)s", hook, error=reason)

    def action_later(self, action: Action, error: str | None, due: float) -> None:
        self._finish(action, "error=%(error)s, due=%(due)s", error=error, due=due)

    def trashed(self, path: bytes) -> Action | None:
        found = self._read(
            f"SELECT {ACTION_COLUMNS} FROM actions WHERE {IN_TRASH}"
            " AND (source=%(path)s OR target=%(path)s) ORDER BY updated_at DESC, id DESC LIMIT 1",
            {"path": path},
        )
        return action_from(found[0]) if found else None

    def restore_intent(self, action: Action, identity: Identity) -> str | None:
        """The action becomes this host's, which puts the file back."""
        values = self._claim_values(
            path=action.source,
            sha256=action.sha256,
            result=encode(action.result) if action.result is not None else None,
            dev=signed(identity.dev),
            inode=signed(identity.inode),
            size=identity.size,
            mtime_ns=identity.mtime_ns,
            action=action.id,
        )
        with self._write() as db:
            found = db.execute(
                "SELECT state FROM files WHERE path=%(path)s FOR UPDATE", values
            ).fetchone()
            if found is None or not allowed(State(found["state"]), State.DONE):
                return "not in the journal" if found is None else f"{found['state']} in the journal"
            db.execute(
                "WITH restored AS (UPDATE files SET state='done', version=version+1, dev=%(dev)s,"
                " inode=%(inode)s, size=%(size)s, mtime_ns=%(mtime_ns)s, sha256=%(sha256)s,"
                " uploaded_sha256=%(sha256)s, result=COALESCE(%(result)s, result), error=NULL,"
                " error_at=NULL, due=0, updated_at=%(now)s WHERE path=%(path)s"
                " RETURNING id, version) UPDATE actions SET state='restoring',"
                " file_id=restored.id, version=restored.version, updated_at=%(now)s,"
                " claim_owner=%(owner)s, claim_expires=%(expires)s::float8 FROM restored"
                " WHERE actions.id=%(action)s",
                values,
            )
        return None

    def action_restored(self, action: Action) -> None:
        self._finish(action, "state='restored'")

    def purgeable(self, trash: bytes, trashed_before: float) -> list[Action]:
        found = self._read(
            f"SELECT {ACTION_COLUMNS} FROM actions WHERE {IN_TRASH}"
            " AND root=%s AND updated_at <= %s LIMIT 1000",
            (trash, trashed_before),
        )
        return [action_from(r) for r in found]

    def trash_ages(self) -> dict[bytes, float]:
        found = self._read(
            f"SELECT root, MIN(updated_at) AS oldest FROM actions WHERE {IN_TRASH} GROUP BY root"
        )
        return {bytes(r["root"]): float(r["oldest"]) for r in found}

    def action_purged(self, action: Action) -> None:
        self._finish(action, "state='purged'")

    def action_counts(self) -> dict[str, int]:
        found = self._read(
            f"SELECT COUNT(*) FILTER (WHERE {UNFINISHED}) AS pending, COUNT(*) FILTER"
            f" (WHERE {IN_TRASH}) AS trash FROM actions"
        )
        return {"pending": int(found[0]["pending"]), "trash": int(found[0]["trash"])}

    def forget_actions(self, finished_before: float) -> None:
        with self._write() as db:
            db.execute(
                f"DELETE FROM actions WHERE updated_at < %s AND {FINISHED}",
                (finished_before,),
            )

    def actions_with_error(self, limit: int) -> list[Action]:
        found = self._read(
            f"SELECT {ACTION_COLUMNS} FROM actions WHERE {UNFINISHED} AND error IS NOT NULL"
            " ORDER BY updated_at DESC LIMIT %s",
            (limit,),
        )
        return [action_from(r) for r in found]

    # -- hooks -------------------------------------------------------------------------

    def enqueue_hook(self, hook: HookEvent) -> None:
        with self._write() as db:
            _enqueue(db, hook)

    def pending_hooks(self, exclude: Iterable[int], limit: int) -> list[HookRow]:
        """Claimed for this host, which runs them (those it holds but `exclude` come again)."""
        with self._write() as db:
            found = db.execute(
                "UPDATE hooks SET claim_owner=%(owner)s, claim_expires=%(expires)s::float8"
                " WHERE id IN (SELECT id FROM hooks WHERE state='pending'"
                f" AND NOT (id = ANY(%(exclude)s)) AND {_FREE} ORDER BY id LIMIT %(limit)s"
                f" FOR UPDATE SKIP LOCKED) RETURNING {HOOK_COLUMNS}",
                self._claim_values(exclude=[int(i) for i in exclude], limit=limit),
            ).fetchall()
        return sorted((hook_from(r) for r in found), key=lambda h: h.id)

    def hook_finished(self, hook_id: int, error: str | None) -> None:
        values = self._claim_values(
            id=hook_id, state="ok" if error is None else "failed", error=error
        )
        with self._write() as db:
            db.execute(
                f"UPDATE hooks SET state=%(state)s, error=%(error)s, at=%(now)s, {_LET_GO}"
                " WHERE id=%(id)s",
                values,
            )
            db.execute(
                "DELETE FROM hooks WHERE state<>'pending' AND at < %s",
                (values["now"] - HOOKS_KEPT,),
            )

    def failing_hooks(self, limit: int) -> list[HookRow]:
        found = self._read(
            f"SELECT {HOOK_COLUMNS} FROM hooks WHERE state='failed' ORDER BY at DESC LIMIT %s",
            (limit,),
        )
        return [hook_from(r) for r in found]

    def failures_since_cursor(self) -> list[tuple[int, float]]:
        """Several hosts may find the same failures: their hooks' keys make them one."""
        found = self._read(
            "SELECT id, error_at FROM files WHERE state='failed'"
            " AND error_at > (SELECT failed_since FROM hook_cursor) ORDER BY error_at"
        )
        return [(int(r["id"]), float(r["error_at"])) for r in found]

    def failures_enqueued(self, hooks: list[HookEvent], cursor: float) -> None:
        with self._write() as db:
            for hook in hooks:
                _enqueue(db, hook)
            db.execute("UPDATE hook_cursor SET failed_since=GREATEST(failed_since, %s)", (cursor,))


def _enqueue(db: psycopg.Connection[DictRow], hook: HookEvent | None) -> None:
    if hook is not None:
        db.execute(
            "INSERT INTO hooks (key, event, path, argv, env, timeout, state, at) VALUES"
            " (%(key)s, %(event)s, %(path)s, %(argv)s, %(env)s, %(timeout)s, 'pending', %(at)s)"
            " ON CONFLICT (key) DO NOTHING",
            hook_values(hook, time.time()),
        )
