"""The webhook outbox of the PostgreSQL store (table `outbox`, migration 2).

As in the SQLite store (outbox.py), an event is written as one row per receiver in the
transaction of the state change it reports. In a fleet every host runs a sender over the
one outbox, so a delivery is claimed like a file row: `due` takes the rows it returns with
`FOR UPDATE SKIP LOCKED` for this host until they are delivered or fail (renewed with the
host's file claims; a dead host's run out and another host sends them). A delivery is then
sent by one host at a time; a host that dies between the POST and `delivered` leaves it to
be sent again, with the same event id, which is what receivers dedup on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager

import psycopg
from psycopg.rows import DictRow

from syncd.journal.codec import delivery_from
from syncd.journal.pg_base import Params
from syncd.journal.rules import by_event
from syncd.journal.states import State
from syncd.journal.store import Delivery

_MINE = "(claim_owner IS NULL OR claim_owner=%(owner)s OR claim_expires < %(now)s)"
"""Free, this host's, or held by a host whose claim ran out."""


Write = Callable[[], AbstractContextManager[psycopg.Connection[DictRow]]]
Read = Callable[[str, Params], list[DictRow]]


class PostgresOutbox:
    """Uses the store's connections; `owner` and `expiry` are those of the store's claims."""

    def __init__(
        self, write: Write, read: Read, owner: str, expiry: Callable[[float], float | None]
    ) -> None:
        self._write = write
        self._read = read
        self._owner = owner
        self._expiry = expiry
        self._subscribers: dict[str, tuple[str, ...]] = {}

    def record(
        self, db: psycopg.Connection[DictRow], event: State, file_id: int, now: float
    ) -> None:
        """Inside the store's transaction: the event of file `file_id` as it now stands."""
        targets = list(self._subscribers.get(event, ()))
        if not targets:
            return
        db.execute(
            "INSERT INTO outbox (event_id, target, event, at, path, service, sha256, size,"
            " result, error) SELECT %(id)s, target, %(event)s, %(now)s, path, service, sha256,"
            " size, CASE WHEN %(event)s='failed' THEN NULL ELSE result END,"
            " CASE WHEN %(event)s='failed' THEN error END"
            " FROM files, unnest(%(targets)s::text[]) WITH ORDINALITY AS t(target, n)"
            " WHERE id=%(file)s ORDER BY n",
            {
                "id": str(uuid.uuid4()),
                "event": str(event),
                "now": now,
                "targets": targets,
                "file": file_id,
            },
        )

    def subscribe(self, targets: Mapping[str, tuple[str, ...]]) -> int:
        self._subscribers = by_event(targets)
        with self._write() as db:
            return db.execute(
                "DELETE FROM outbox WHERE NOT (target = ANY(%s))", (list(targets),)
            ).rowcount

    def due(self, now: float, limit: int) -> list[Delivery]:
        """Claimed for this host, which sends them (the ones it holds come again)."""
        with self._write() as db:
            found = db.execute(
                "UPDATE outbox SET claim_owner=%(owner)s, claim_expires=%(expires)s::float8"
                " WHERE seq IN (SELECT seq FROM outbox WHERE due <= %(due)s"
                f" AND {_MINE} ORDER BY due, seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
                " RETURNING *",
                {
                    "owner": self._owner,
                    "expires": self._expiry(time.time()),
                    "due": now,
                    "now": time.time(),
                    "limit": limit,
                },
            ).fetchall()
        deliveries = [delivery_from(r) for r in found]
        return sorted(deliveries, key=lambda d: (d.due, d.seq))

    def failing(self, limit: int) -> list[Delivery]:
        found = self._read(
            "SELECT * FROM outbox WHERE attempts > 0 ORDER BY seq LIMIT %s", (limit,)
        )
        return [delivery_from(r) for r in found]

    def backlog(self) -> tuple[int, int]:
        found = self._read(
            "SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE attempts > 0) AS failing FROM outbox",
            None,
        )
        return int(found[0]["n"]), int(found[0]["failing"])

    def delivered(self, seq: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM outbox WHERE seq=%s", (seq,))

    def failed(self, seq: int, error: str, due: float) -> None:
        """The receiver's other deliveries wait too, and this host lets go of them."""
        with self._write() as db:
            db.execute(
                "UPDATE outbox SET attempts=attempts+1, last_error=%s WHERE seq=%s", (error, seq)
            )
            db.execute(
                "UPDATE outbox SET due=GREATEST(due, %(due)s), claim_owner=CASE WHEN"
                " claim_owner=%(owner)s THEN NULL ELSE claim_owner END, claim_expires=CASE"
                " WHEN claim_owner=%(owner)s THEN NULL ELSE claim_expires END"
                " WHERE target=(SELECT target FROM outbox WHERE seq=%(seq)s)",
                {"due": due, "seq": seq, "owner": self._owner},
            )
