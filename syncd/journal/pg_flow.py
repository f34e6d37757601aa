"""The PostgreSQL store's part for flow control: held rows, and the small values (pauses,
service-wide holds, quota counts) kept in `flow_state`. Mixed into PostgresStore.

In a fleet these live in the shared database, so a pause, a hold or a day's quota count is
the whole fleet's; each host's work/flow/ reads them again on every tick.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from syncd.journal import rules
from syncd.journal.pg_base import Connected, row_of
from syncd.journal.pg_claims import CLAIMABLE_NAMES
from syncd.journal.states import CLAIMABLE, State, check_moves
from syncd.journal.store import Row


class PostgresFlow(Connected):
    def _update(self, row: Row, target: State | None, assignments: str, **values: Any) -> bool:
        raise NotImplementedError

    def mark_held(self, row: Row, reason: str, until: float | None) -> bool:
        return self._update(
            row,
            State.HELD,
            "state='held', error=%(error)s, error_at=%(now)s, due=%(due)s",
            error=reason,
            due=until or 0,
        )

    def hold_waiting(self, service: str, reason: str, until: float | None) -> int:
        check_moves(CLAIMABLE, State.HELD)
        now = time.time()
        with self._write() as db:
            return db.execute(
                "UPDATE files SET state='held', error=%(error)s, error_at=%(now)s, due=%(due)s,"
                " updated_at=%(now)s WHERE service=%(service)s AND state = ANY(%(claimable)s)"
                " AND (claim_owner IS NULL OR claim_expires < %(now)s)",
                {
                    "error": reason,
                    "now": now,
                    "due": until or 0,
                    "service": service,
                    "claimable": CLAIMABLE_NAMES,
                },
            ).rowcount

    def release_held(self, service: str) -> int:
        rules.check_release()
        with self._write() as db:
            return db.execute(
                f"UPDATE files SET state={rules.RELEASED}, due=0, error=NULL, error_at=NULL,"  # noqa: S608
                " updated_at=%s WHERE state='held' AND service=%s",
                (time.time(), service),
            ).rowcount

    def shift_retries(self, seconds: float) -> int:
        with self._write() as db:
            return db.execute(
                "UPDATE files SET due=due+%s WHERE state='retry_wait'", (seconds,)
            ).rowcount

    def release_routed(self, reason: str, routes: Callable[[bytes, str], bool]) -> int:
        rules.check_release()
        with self._write() as db:
            found = db.execute(
                "SELECT id, path, service FROM files WHERE state='held' AND error=%s"
                " FOR UPDATE SKIP LOCKED",
                (reason,),
            ).fetchall()
            routed = [r["id"] for r in found if routes(bytes(r["path"]), r["service"])]
            db.execute(
                f"UPDATE files SET state={rules.RELEASED}, due=0, error=NULL, error_at=NULL,"  # noqa: S608
                " updated_at=%s WHERE id = ANY(%s)",
                (time.time(), routed),
            )
            return len(routed)

    def held(self, limit: int) -> list[Row]:
        found = self._read(
            "SELECT * FROM files WHERE state='held' ORDER BY due, id LIMIT %s", (limit,)
        )
        return [row_of(r) for r in found]

    def flow_state(self, key: str) -> Any:
        found = self._read("SELECT value FROM flow_state WHERE key=%s", (key,))
        return json.loads(found[0]["value"]) if found else None

    def save_flow_state(self, key: str, value: Any) -> None:
        self.execute(
            "INSERT INTO flow_state (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value)),
        )

    def change_flow_state(self, key: str, change: Callable[[Any], Any]) -> None:
        """The row locked meanwhile: two hosts counting against one quota take turns."""
        with self._write() as db:
            db.execute(
                "INSERT INTO flow_state (key, value) VALUES (%s, 'null') ON CONFLICT DO NOTHING",
                (key,),
            )
            found = db.execute(
                "SELECT value FROM flow_state WHERE key=%s FOR UPDATE", (key,)
            ).fetchone()
            assert found is not None
            db.execute(
                "UPDATE flow_state SET value=%s WHERE key=%s",
                (json.dumps(change(json.loads(found["value"]))), key),
            )

    def not_done(self, ids: list[int]) -> set[int]:
        found = self._read(
            "SELECT id FROM files WHERE state<>%s AND id = ANY(%s)", (State.DONE, ids)
        )
        return {int(r["id"]) for r in found}

    def once_outcome(self, retries: int) -> tuple[int, int]:
        unfinished = rules.once_unfinished("%(retries)s")
        failed = rules.once_failed("%(retries)s")
        found = self._read(
            f"SELECT COUNT(*) FILTER (WHERE {unfinished}) AS unfinished,"  # noqa: S608
            f" COUNT(*) FILTER (WHERE {failed}) AS failed FROM files WHERE state IN {rules.ONCE}",
            {"retries": retries},
        )
        return int(found[0]["unfinished"]), int(found[0]["failed"])
