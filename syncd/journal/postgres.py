"""The PostgreSQL journal: fleet mode's store, shared by every host over one database.

It keeps the SQLite store's rows and rules (see store.py) and adds what several hosts need:

- A claim is taken with `SELECT … FOR UPDATE SKIP LOCKED` in one `UPDATE … RETURNING`,
  owned by this process (`HOST_ID#TOKEN`: one live process per host_id, pg_hosts.py),
  bounded by a lease and renewed while the host works (leases.py); one that ran out is
  taken over, and the fence rises with every claim. Leases are compared on the hosts'
  clocks (`now` as the workers give it), which NTP keeps within far less than one.
  A row a dead host left `uploading` goes back to `hashed` as it is taken over, so the work
  continues from its saved progress; an `uploaded` row whose sidecar is missing is claimed
  like any other, so exactly one host writes it.
- Every write naming a row is fenced: it changes the row only while its `claim_fence` is the
  one the row was read under, so a host cut off mid-upload changes nothing once another took
  over. State changes also name the state they start from.
- Two hosts finding copies of one content take a transaction-scoped advisory lock on it, so
  exactly one uploads (the SQLite store gets the same from its single writer).
- A path is inserted once however many hosts find it (`INSERT … ON CONFLICT DO NOTHING`),
  and a file's identity is compared without its st_dev, which differs between the hosts
  that mount one shared folder.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from syncd.files import Identity
from syncd.journal import rules
from syncd.journal.codec import decode, encode
from syncd.journal.leases import HEARTBEAT, Leases
from syncd.journal.pg_adopt import Adopting
from syncd.journal.pg_after import PostgresAfterUpload
from syncd.journal.pg_base import signed, unsigned
from syncd.journal.pg_claims import CLAIMABLE_NAMES, Claims
from syncd.journal.pg_fleet import FleetTables
from syncd.journal.pg_flow import PostgresFlow
from syncd.journal.pg_hosts import OTHER_INSTANCES, Seat
from syncd.journal.pg_outbox import PostgresOutbox
from syncd.journal.pg_pool import Pooled
from syncd.journal.pg_reads import Reads
from syncd.journal.pg_schema import connect_error, migrate
from syncd.journal.states import State, check_move
from syncd.journal.store import Decision, JournalUnavailable, Row

log = logging.getLogger(__name__)


_FENCED = "id=%(id)s AND version=%(version)s AND claim_fence=%(fence)s"
"""A write under the claim the row was read under; every claim raises the fence."""


class PostgresStore(
    Pooled, Claims, Reads, FleetTables, Adopting, PostgresFlow, PostgresAfterUpload
):
    """Durable state of every file the fleet knows; safe to share between threads."""

    def __init__(
        self, url: str, password: str, owner: str, lease: float | None, connections: int = 8
    ) -> None:
        self.url = url
        self.seat = Seat(self, owner, HEARTBEAT * 3 if lease is None else lease)
        self.owner = self.seat.owner
        self.lease = lease
        self.changes = 0
        self._outage = False
        self._batch = threading.local()
        """`db`: the connection of the batch this thread has open, if any."""
        params: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "connect_timeout": 10,
            "application_name": f"syncd {owner}"[:63],
            # A database cut off without a word (a partition, a firewall dropping packets):
            # an idle connection is known dead after 10 + 3 x 5 s, one waiting for its
            # request to be acknowledged after 20 s, not TCP's ~15 minutes, so callers
            # ride the outage out (pg_pool.py) instead of hanging, the main loop included.
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 20_000,
        }
        if password:
            params["password"] = password
        try:
            # A first connection on its own: its error (refused, bad password, no database)
            # is clearer than the pool's timeout.
            with psycopg.connect(url, **params) as first:
                self.schema = migrate(first, url)
        except psycopg.Error as exc:
            raise connect_error(url, exc) from None
        self._pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url,
            kwargs=params,
            min_size=1,
            max_size=max(2, connections),
            timeout=30,
            name="journal",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=30)
        except PoolTimeout as exc:
            raise connect_error(url, exc) from None
        self.leases = Leases(self, lease)
        self.outbox = PostgresOutbox(self._write, self._read, self.owner, self.expiry)

    def expiry(self, now: float) -> float | None:
        """When a claim taken or renewed at `now` runs out; None: held until released."""
        return None if self.lease is None else now + self.lease

    def close(self) -> None:
        self.leases.stop()
        with contextlib.suppress(JournalUnavailable):
            self.seat.leave()
        self._pool.close()

    # -- start, health -----------------------------------------------------------------

    def recover(self) -> int:
        """At start: this process becomes its host_id's one live daemon (pg_hosts.py), and
        the claims of the processes it followed are a crash's. Their uploads go back to
        `hashed` (they resume from their saved progress), their claims are dropped and
        fenced off."""
        if not self.seat.joined:
            self.seat.join()
        values = self.seat.values(now=time.time())
        with self._write() as db:
            resumed = db.execute(
                "UPDATE files SET state='hashed', updated_at=%(now)s"
                f" WHERE {OTHER_INSTANCES} AND state='uploading'",
                values,
            ).rowcount
            db.execute(
                "UPDATE files SET claim_owner=NULL, claim_expires=NULL,"
                f" claim_fence=claim_fence+1 WHERE {OTHER_INSTANCES}",
                values,
            )
        self.drop_tasks()
        self.leases.start()
        return resumed

    def ping(self) -> bool:
        return bool(self._read("SELECT 1 AS one") == [{"one": 1}])

    # -- intake's side -----------------------------------------------------------------

    def known_in(self, folder: bytes) -> dict[bytes, tuple[int, int, int, int]]:
        rows = self._read(
            "SELECT path, dev, inode, size, mtime_ns FROM files WHERE path > %(folder)s"
            " AND path < %(past)s"
            " AND position('\\x2f'::bytea IN substring(path FROM %(name)s)) = 0",
            rules.below(folder),
        )
        return {
            bytes(r["path"]): (unsigned(r["dev"]), unsigned(r["inode"]), r["size"], r["mtime_ns"])
            for r in rows
        }

    def record_seen(
        self,
        path: bytes,
        service: str,
        identity: Identity,
        priority: int = 0,
        rank: int | bytes | None = None,
    ) -> bool:
        values = {
            "path": path,
            "service": service,
            "dev": signed(identity.dev),
            "inode": signed(identity.inode),
            "size": identity.size,
            "mtime_ns": identity.mtime_ns,
            "now": time.time(),
            "priority": priority,
            "rank": rules.queue_rank(rank),
        }
        with self._write() as db:
            inserted = db.execute(
                "INSERT INTO files (path, service, state, dev, inode, size, mtime_ns, due,"
                " updated_at, queued_at, priority, rank) VALUES (%(path)s, %(service)s, 'seen',"
                " %(dev)s, %(inode)s, %(size)s, %(mtime_ns)s, 0, %(now)s, %(now)s, %(priority)s,"
                " %(rank)s)"
                " ON CONFLICT (path) DO NOTHING",
                values,
            ).rowcount
            if inserted:
                return True
            row = db.execute(
                "SELECT state, inode, size, mtime_ns, service FROM files WHERE path=%(path)s"
                " FOR UPDATE",
                values,
            ).fetchone()
            if row is None:
                return False
            same = (row["inode"], row["size"], row["mtime_ns"], row["service"]) == (
                values["inode"],
                identity.size,
                identity.mtime_ns,
                service,
            )
            if same:
                return False
            check_move(State(row["state"]), State.SEEN)
            db.execute(
                "UPDATE files SET service=%(service)s, state='seen', version=version+1,"
                " dev=%(dev)s, inode=%(inode)s, size=%(size)s, mtime_ns=%(mtime_ns)s,"
                " sha256=NULL, attempts=0, due=0, error=NULL, error_at=NULL, updated_at=%(now)s,"
                " queued_at=%(now)s, priority=%(priority)s, rank=%(rank)s,"
                " result=CASE WHEN service=%(service)s THEN result END,"
                " uploaded_sha256=CASE WHEN service=%(service)s THEN uploaded_sha256 END"
                " WHERE path=%(path)s",
                values,
            )
            return True

    def forget_missing(self, path: bytes) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM files WHERE path=%s AND state = ANY(%s)",
                (path, [*CLAIMABLE_NAMES, str(State.HELD)]),
            )

    # -- fenced writes -------------------------------------------------------------------

    def _fence(self, row: Row) -> dict[str, Any]:
        return {"id": row.id, "version": row.version, "fence": row.fence, "owner": self.owner}

    def _move(
        self,
        db: psycopg.Connection[DictRow],
        row: Row,
        target: State | None,
        assignments: str,
        **values: Any,
    ) -> bool:
        """One fenced write; a state change is checked against the table and against the
        state the row is in (another host may have moved it)."""
        condition = _FENCED
        if target is not None:
            check_move(row.state, target)
            condition += " AND state=%(from_state)s"
            values["from_state"] = str(row.state)
        changed = db.execute(
            f"UPDATE files SET {assignments}, updated_at=%(now)s WHERE {condition} RETURNING id",
            {**self._fence(row), "now": time.time(), **values},
        ).fetchall()
        return bool(changed)

    def _update(self, row: Row, target: State | None, assignments: str, **values: Any) -> bool:
        with self._write() as db:
            return self._move(db, row, target, assignments, **values)

    def mark_hashed(self, row: Row, sha256: str, identity: Identity) -> Row | None:
        changed = self._update(
            row,
            State.HASHED,
            "state='hashed', sha256=%(sha)s, dev=%(dev)s, inode=%(inode)s, size=%(size)s,"
            " mtime_ns=%(mtime_ns)s",
            sha=sha256,
            dev=signed(identity.dev),
            inode=signed(identity.inode),
            size=identity.size,
            mtime_ns=identity.mtime_ns,
        )
        return rules.as_hashed(row, sha256, identity) if changed else None

    def mark_changed(self, row: Row) -> bool:
        return self._update(row, State.SEEN, "state='seen', sha256=NULL, version=version+1, due=0")

    def begin_upload(
        self, row: Row, still_valid: Callable[[dict[str, Any]], bool]
    ) -> tuple[Decision, Row] | None:
        now = time.time()
        if rules.reusable(row, still_valid):
            if not self._update(row, State.UPLOADED, "state='uploaded', error=NULL"):
                return None
            return Decision.UNCHANGED, rules.as_unchanged(row)
        fence = self._fence(row)
        with self._write() as db:
            # One content, one uploader across the fleet: copies of it wait for this lock.
            db.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"{row.service}/{row.sha256}",),
            )
            current = db.execute(
                f"SELECT state FROM files WHERE {_FENCED} FOR UPDATE",
                fence,
            ).fetchone()
            if current is None or State(current["state"]) != row.state:
                return None
            others = db.execute(
                "SELECT path, state, result, duplicate_of FROM files WHERE service=%(service)s"
                " AND sha256=%(sha)s AND id<>%(id)s AND (state IN ('uploading',"
                " 'awaiting_callback', 'uploaded', 'done') OR (state='retry_wait' AND id<%(id)s))"
                " ORDER BY id",
                {"service": row.service, "sha": row.sha256, "id": row.id},
            ).fetchall()
            decision, other = rules.choose(others, still_valid)
            if other is not None and decision is Decision.DUPLICATE:
                check_move(row.state, State.UPLOADED)
                original = rules.original_of(other)
                db.execute(
                    "UPDATE files SET state='uploaded', result=%(result)s,"
                    " duplicate_of=%(original)s, uploaded_at=%(now)s, uploaded_sha256=sha256,"
                    " error=NULL, updated_at=%(now)s WHERE id=%(id)s",
                    {**fence, "result": other["result"], "original": original, "now": now},
                )
                return decision, rules.as_uploaded(row, decode(other["result"]), now, original)
            if decision is Decision.WAIT:
                db.execute(
                    "UPDATE files SET due=%(due)s, updated_at=%(now)s WHERE id=%(id)s",
                    {**fence, "due": now + rules.WAIT, "now": now},
                )
                return decision, rules.as_waiting(row, now)
            check_move(row.state, State.UPLOADING)
            db.execute(
                "UPDATE files SET state='uploading', attempts=attempts+1, updated_at=%(now)s"
                " WHERE id=%(id)s",
                {**fence, "now": now},
            )
            return decision, rules.as_uploading(row)

    def save_progress(self, row: Row, progress: dict[str, Any]) -> bool:
        """Saved only under this host's claim, which it renews (renewal on progress)."""
        return self._update(
            row,
            None,
            "progress=%(progress)s, claim_expires=CASE WHEN claim_owner IS NULL THEN NULL"
            " ELSE %(expires)s::float8 END",
            progress=encode(progress),
            expires=self.expiry(time.time()),
        )

    def mark_uploaded(self, row: Row, result: dict[str, Any]) -> Row | None:
        now = time.time()
        changed = self._update(
            row,
            State.UPLOADED,
            "state='uploaded', result=%(result)s, uploaded_at=%(at)s, uploaded_sha256=sha256,"
            " duplicate_of=NULL, error=NULL",
            result=encode(result),
            at=now,
        )
        return rules.as_uploaded(row, result, now) if changed else None

    def mark_awaiting(self, row: Row, deadline: float) -> bool:
        return self._update(
            row, State.AWAITING_CALLBACK, "state='awaiting_callback', due=%(due)s", due=deadline
        )

    def mark_done(self, row_id: int) -> bool:
        """Fenced by this host's claim on the row when it holds one; a done row is nobody's."""
        fence = self.leases.fence(row_id)
        now = time.time()
        with self._write() as db:
            done = db.execute(
                "UPDATE files SET state='done', updated_at=%(now)s, claim_owner=NULL,"
                " claim_expires=NULL WHERE id=%(id)s"
                " AND state='uploaded' AND (claim_owner IS NULL OR claim_owner=%(owner)s)"
                " AND (%(fence)s::bigint IS NULL OR claim_fence=%(fence)s)",
                {"id": row_id, "owner": self.owner, "fence": fence, "now": now},
            ).rowcount
            if done:
                self.outbox.record(db, State.DONE, row_id, now)
        return bool(done)

    def mark_retry(self, row: Row, error: str, due: float) -> bool:
        return self._update(
            row,
            State.RETRY_WAIT,
            "state='retry_wait', error=%(error)s, error_at=%(now)s, due=%(due)s",
            error=error,
            due=due,
        )

    def mark_failed(self, row: Row, error: str) -> bool:
        now = time.time()
        with self._write() as db:
            failed = self._move(
                db,
                row,
                State.FAILED,
                "state='failed', error=%(error)s, error_at=%(now)s",
                now=now,
                error=error,
            )
            if failed:
                self.outbox.record(db, State.FAILED, row.id, now)
            return failed
