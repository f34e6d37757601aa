"""The PostgreSQL store's claims on file rows: taken with `FOR UPDATE SKIP LOCKED`, bounded
by the lease, renewed by leases.py, fenced. Mixed into PostgresStore (see its docstring)."""

from __future__ import annotations

import time

from syncd.journal.leases import Leases
from syncd.journal.pg_base import Connected, row_of
from syncd.journal.pg_hosts import SEATED, Seat
from syncd.journal.states import CLAIMABLE
from syncd.journal.store import Row

CLAIMABLE_NAMES = [str(s) for s in CLAIMABLE]
_FREE = "(claim_owner IS NULL OR claim_expires < %(now)s)"
"""Unclaimed, or its holder's lease ran out (a NULL expiry holds until released)."""
_NOT_SKIPPED = "service <> ALL(%(skip)s::text[])"
"""Not of a service flow control skips (at its `max_parallel`)."""


class Claims(Connected):
    owner: str
    leases: Leases
    seat: Seat

    def expiry(self, now: float) -> float | None:
        raise NotImplementedError

    def claim(self, now: float, skip: frozenset[str] = frozenset()) -> Row | None:
        """The next due row nobody holds (or whose holder's lease ran out), of a service not
        in `skip`, by priority and rank (as SQLite's); now this process's. None while
        another process holds this host_id (pg_hosts.py)."""
        found = self.execute(
            "UPDATE files SET claim_owner=%(owner)s, claim_expires=%(expires)s::float8,"
            " claim_fence=claim_fence+1,"
            " state=CASE WHEN state='uploading' THEN 'hashed' ELSE state END"
            " WHERE id=(SELECT id FROM files WHERE"
            " ((state = ANY(%(claimable)s) AND due <= %(now)s)"
            " OR state IN ('uploading', 'uploaded'))"
            f" AND {_FREE} AND {_NOT_SKIPPED} AND {SEATED}"
            " ORDER BY priority DESC, rank, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *",
            self.seat.values(
                expires=self.expiry(now),
                claimable=CLAIMABLE_NAMES,
                now=now,
                skip=sorted(skip),
            ),
        )
        if not found:
            return None
        row = row_of(found[0])
        self.leases.hold(row.id, row.fence)
        return row

    def release(self, row_id: int) -> None:
        fence = self.leases.drop(row_id)
        if fence is not None:
            self.execute(
                "UPDATE files SET claim_owner=NULL, claim_expires=NULL"
                " WHERE id=%s AND claim_owner=%s AND claim_fence=%s",
                (row_id, self.owner, fence),
            )

    def holds(self, row: Row) -> bool:
        """Asked of the database, renewing the claim there (an unclaimed row, such as one a
        callback completed, becomes this host's, keeping its fence)."""
        if row.id in self.leases and not self.leases.valid(row.id, row.fence):
            return False
        taken = self.execute(
            "UPDATE files SET claim_owner=%(owner)s, claim_expires=%(expires)s::float8"
            " WHERE id=%(id)s AND claim_fence=%(fence)s AND state<>'done'"  # done: another's
            f" AND (claim_owner IS NULL OR claim_owner=%(owner)s) AND {SEATED} RETURNING id",
            self.seat.values(expires=self.expiry(time.time()), id=row.id, fence=row.fence),
        )
        if not taken:
            self.leases.lose(row.id)
        return bool(taken)

    def next_due(self, skip: frozenset[str] = frozenset()) -> float | None:
        found = self._read(
            "SELECT MIN(due) AS due FROM files WHERE state = ANY(%(claimable)s)"
            f" AND {_FREE} AND {_NOT_SKIPPED}",
            {"claimable": CLAIMABLE_NAMES, "now": time.time(), "skip": sorted(skip)},
        )
        return None if found[0]["due"] is None else float(found[0]["due"])
