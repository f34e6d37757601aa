"""The SQLite store: the journal of one host, in `state_dir/journal.sqlite`.

One connection, guarded by a lock, so every write is serialised; each state change is
one `BEGIN IMMEDIATE` transaction (a deferred one that upgrades gets SQLITE_BUSY without
the busy handler), or part of the one transaction of a `batch()` (group commit). WAL with
synchronous=NORMAL survives kill -9 at any moment (and the steps services save, with
synchronous=FULL, a power cut too); paths are stored as bytes so that names which are not
UTF-8 survive. Claims live in the rows (`claim_owner`, `claim_expires`, `claim_fence`),
taken in one `UPDATE … RETURNING`, so two stores opened on one file never hand out the
same row.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar, cast

from syncd.errors import SyncdError
from syncd.files import Identity
from syncd.journal import rules
from syncd.journal.codec import decode, encode
from syncd.journal.migrations import MIGRATIONS
from syncd.journal.outbox import SqliteOutbox
from syncd.journal.sqlite_after import SqliteAfterUpload
from syncd.journal.sqlite_base import BUSY_SECONDS
from syncd.journal.sqlite_claims import SqliteClaims
from syncd.journal.sqlite_flow import SqliteFlow
from syncd.journal.sqlite_reads import SqliteReads
from syncd.journal.states import CLAIMABLE, IN_FLIGHT, State, allowed, check_move
from syncd.journal.store import Decision, Row

T = TypeVar("T")
KNOWN_IN = (
    "SELECT path, dev, inode, size, mtime_ns FROM files WHERE path > :folder AND path < :past"
    " AND instr(substr(path, :name), X'2F') = 0"
)
"""The identities of one folder's files, for a scan: from the `files_identity` index alone
(migration 9), its range of paths below the folder, the subfolders' skipped there."""
DROP_CLAIMS = "UPDATE files SET claim_owner=NULL, claim_expires=NULL WHERE claim_owner IS NOT NULL"
"""A start's: through the `files_claims` index of claimed rows alone (migration 10)."""
_CLAIMABLE = ", ".join(f"'{s}'" for s in sorted(CLAIMABLE))
_IN_FLIGHT_OR_UPLOADED = ", ".join(
    f"'{s}'" for s in sorted({*IN_FLIGHT, State.UPLOADED, State.DONE})
)
_SOURCES = {
    target: ", ".join(f"'{s}'" for s in sorted(State) if allowed(s, target)) for target in State
}
"""For each state, the states a row may move to it from, as SQL."""


class SqliteStore(SqliteClaims, SqliteReads, SqliteFlow, SqliteAfterUpload):
    """Durable state of every file syncd knows; safe to share between threads.

    `owner` names this store's claims; `lease` bounds a claim, None holds it until released.
    """

    def __init__(self, path: Path, owner: str | None = None, lease: float | None = None) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # 0600 before SQLite opens it (its -wal and -shm files take the same mode):
            # results and errors are nobody else's.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")  # the first read: a file not SQLite's
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise SyncdError(f"{path}: cannot open the journal: {reason}") from None
        self._db.row_factory = sqlite3.Row
        self._path = path
        # Reentrant: a batch holds it while the calls inside take it again. Typed as the
        # Lock its sharers (outbox, mixins) take it as: they only enter it.
        self._lock = cast(threading.Lock, threading.RLock())
        self._owner = owner or socket.gethostname()
        self._lease = lease
        self.changes = 0
        """Counts committed state changes (status line recomputed only when it can differ)."""
        self._counted = self._durable = False
        """Whether the open transaction holds a counted change, a durable one."""
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000:.0f}")
        self._db.execute("PRAGMA foreign_keys=ON")
        try:
            self._migrate()
        except SyncdError:
            self._db.close()
            raise
        self.outbox = SqliteOutbox(self._read, lambda: self._write(counted=False))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self, counted: bool = True, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction, or a part of the `batch()` this thread has open. `durable`
        commits it with synchronous=FULL: what it records cannot be taken back (a post, a
        tweet, a session, a move on disk that follows), so it must outlive a power cut, not
        only a killed process. `counted` ones tell `changes`. A full disk, an I/O error or
        another process's lock held past BUSY_SECONDS raises StorageFault, after a rollback
        that never hides it (SQLite may have rolled back by itself already)."""
        with self._lock:
            if self._db.in_transaction:
                self._counted = self._counted or counted
                self._durable = self._durable or durable
                yield self._db
                return
            self._counted, self._durable = counted, durable
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._commit(durable)
                except BaseException:
                    if self._db.in_transaction:
                        with suppress(sqlite3.Error):
                            self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise self._fault(exc) from None
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")
            if self._counted:
                self.changes += 1

    def _commit(self, synchronous_full: bool) -> None:
        """COMMIT. A batch learns that a write inside is durable only once it is open, when
        synchronous can no longer change: its WAL is fsync'd here, as FULL would have."""
        self._db.execute("COMMIT")
        if self._durable and not synchronous_full:
            fd = os.open(f"{self._path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def batch(self, work: Callable[[], T]) -> T:
        with self._write(counted=False):
            return work()

    def _read(self, query: str, *values: object) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(query, values).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._fault(exc) from None

    def _migrate(self) -> None:
        with self._write() as db:
            current = db.execute("PRAGMA user_version").fetchone()[0]
            if current > len(MIGRATIONS):  # an older syncd would misread it, or write it wrong
                raise SyncdError(
                    f"{self._path}: the journal's schema is version {current}, newer than this"
                    f" syncd knows ({len(MIGRATIONS)}): upgrade syncd on this host"
                )
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")

    def recover(self) -> int:
        """Drops every claim: one daemon per state_dir (its lock), so any claim left is a dead
        one's, whatever host name it was taken under (a container's changes at each start)."""
        check_move(State.UPLOADING, State.HASHED)
        with self._write() as db:
            db.execute(DROP_CLAIMS)
            return db.execute(
                "UPDATE files SET state=?, updated_at=? WHERE state=?",
                (State.HASHED, time.time(), State.UPLOADING),
            ).rowcount

    def ping(self) -> bool:
        return bool(self._read("SELECT 1 AS one")[0]["one"] == 1)

    # -- intake's side -----------------------------------------------------------------

    def known_in(self, folder: bytes) -> dict[bytes, tuple[int, int, int, int]]:
        with self._lock:
            # Plain tuples, fast: a scan builds one for each file it meets.
            cursor = self._db.cursor()
            cursor.row_factory = None
            try:
                return {r[0]: r[1:] for r in cursor.execute(KNOWN_IN, rules.below(folder))}
            except sqlite3.DatabaseError as exc:
                raise self._fault(exc) from None

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
            "now": time.time(),
            "priority": priority,
            "rank": rank,
            **identity._asdict(),
        }
        with self._write() as db:
            # A new file (a burst of them, one commit a settle round) is one statement.
            if db.execute(
                "INSERT INTO files (path, service, state, dev, inode, size, mtime_ns,"
                " due, updated_at, queued_at, priority, rank) VALUES (:path, :service,"
                " 'seen', :dev, :inode, :size, :mtime_ns, 0, :now, :now, :priority, :rank)"
                " ON CONFLICT (path) DO NOTHING",
                values,
            ).rowcount:
                return True
            row = db.execute(
                "SELECT state, dev, inode, size, mtime_ns, service FROM files WHERE path=?",
                (path,),
            ).fetchone()
            known = Identity(row["dev"], row["inode"], row["size"], row["mtime_ns"])
            if known == identity and row["service"] == service:
                return False
            check_move(State(row["state"]), State.SEEN)
            # The progress stays: a resumable session is kept only if the content's hash
            # turns out the same (the service checks). So does the last result, for the
            # same reason (see begin_upload), unless the file now goes to another service.
            # (SQLite reads the old `service` on the right-hand sides.)
            db.execute(
                "UPDATE files SET service=:service, state='seen', version=version+1, dev=:dev,"
                " inode=:inode, size=:size, mtime_ns=:mtime_ns, sha256=NULL, attempts=0, due=0,"
                " error=NULL, error_at=NULL, updated_at=:now, queued_at=:now,"
                " priority=:priority, rank=:rank,"
                " result=CASE WHEN service=:service THEN result END,"
                " uploaded_sha256=CASE WHEN service=:service THEN uploaded_sha256 END"
                " WHERE path=:path",
                values,
            )
            return True

    def forget_missing(self, path: bytes) -> None:
        with self._write() as db:
            db.execute(
                f"DELETE FROM files WHERE path=? AND state IN ({_CLAIMABLE}, 'held')",  # noqa: S608
                (path,),
            )

    # -- the workers' side -------------------------------------------------------------

    @staticmethod
    def _move(
        db: sqlite3.Connection, row: Row, target: State | None, assignments: str, *values: object
    ) -> bool:
        """One write to `row` (and to `target` if given, checked against the table), unless
        the row is stale: the file changed, or a newer claim holds it."""
        current = "id=? AND version=? AND claim_fence=?"
        where = current
        if target is not None:
            assignments = f"state='{target}', {assignments}"
            where += f" AND state IN ({_SOURCES[target]})"
        keys = (row.id, row.version, row.fence)
        query = f"UPDATE files SET {assignments}, updated_at=? WHERE {where}"  # noqa: S608
        if db.execute(query, (*values, time.time(), *keys)).rowcount:
            return True
        if target is not None:
            # Not written: stale (nothing to say), or current, and then the move is illegal.
            found = db.execute(f"SELECT state FROM files WHERE {current}", keys).fetchone()  # noqa: S608
            if found is not None:
                check_move(State(found["state"]), target)
        return False

    def _update(
        self,
        row: Row,
        target: State | None,
        assignments: str,
        *values: object,
        durable: bool = False,
    ) -> bool:
        with self._write(durable=durable) as db:
            return self._move(db, row, target, assignments, *values)

    def mark_hashed(self, row: Row, sha256: str, identity: Identity) -> Row | None:
        changed = self._update(
            row,
            State.HASHED,
            "sha256=?, dev=?, inode=?, size=?, mtime_ns=?",
            sha256,
            *identity,
        )
        return rules.as_hashed(row, sha256, identity) if changed else None

    def mark_changed(self, row: Row) -> bool:
        return self._update(row, State.SEEN, "sha256=NULL, version=version+1, due=0")

    def begin_upload(
        self, row: Row, still_valid: Callable[[dict[str, Any]], bool]
    ) -> tuple[Decision, Row] | None:
        now = time.time()
        if rules.reusable(row, still_valid):
            if not self._update(row, State.UPLOADED, "error=NULL"):
                return None
            return Decision.UNCHANGED, rules.as_unchanged(row)
        with self._write() as db:
            # A copy waiting to retry holds the content too, but only for rows after it:
            # two copies both in retry_wait must not wait for each other.
            others = db.execute(
                "SELECT path, state, result, duplicate_of FROM files WHERE service=?"  # noqa: S608
                f" AND sha256=? AND id<>? AND (state IN ({_IN_FLIGHT_OR_UPLOADED})"
                " OR (state='retry_wait' AND id<?)) ORDER BY id",
                (row.service, row.sha256, row.id, row.id),
            ).fetchall()
            decision, other = rules.choose(others, still_valid)
            if other is not None and decision is Decision.DUPLICATE:
                original = rules.original_of(other)
                if not self._move(
                    db,
                    row,
                    State.UPLOADED,
                    "result=?, duplicate_of=?, uploaded_at=?, uploaded_sha256=sha256, error=NULL",
                    other["result"],
                    original,
                    now,
                ):
                    return None
                return decision, rules.as_uploaded(row, decode(other["result"]), now, original)
            if decision is Decision.WAIT:
                if not self._move(db, row, None, "due=?", now + rules.WAIT):
                    return None
                return decision, rules.as_waiting(row, now)
            if not self._move(db, row, State.UPLOADING, "attempts=attempts+1"):
                return None
            return decision, rules.as_uploading(row)

    def save_progress(self, row: Row, progress: dict[str, Any]) -> bool:
        """Each step a service saves cannot be taken back: committed durably (see _write)."""
        return self._update(row, None, "progress=?", encode(progress), durable=True)

    def mark_uploaded(self, row: Row, result: dict[str, Any]) -> Row | None:
        now = time.time()
        changed = self._update(
            row,
            State.UPLOADED,
            "result=?, uploaded_at=?, uploaded_sha256=sha256, duplicate_of=NULL, error=NULL",
            encode(result),
            now,
        )
        return rules.as_uploaded(row, result, now) if changed else None

    def mark_awaiting(self, row: Row, deadline: float) -> bool:
        return self._update(row, State.AWAITING_CALLBACK, "due=?", deadline)

    def mark_done(self, row_id: int) -> bool:
        check_move(State.UPLOADED, State.DONE)
        now = time.time()
        with self._write() as db:
            done = db.execute(
                "UPDATE files SET state=?, updated_at=? WHERE id=? AND state=?",
                (State.DONE, now, row_id, State.UPLOADED),
            ).rowcount
            if done:
                self.outbox.record(db, State.DONE, row_id, now)
        return bool(done)

    def mark_retry(self, row: Row, error: str, due: float) -> bool:
        now = time.time()
        return self._update(row, State.RETRY_WAIT, "error=?, error_at=?, due=?", error, now, due)

    def mark_failed(self, row: Row, error: str) -> bool:
        now = time.time()
        with self._write() as db:
            failed = self._move(db, row, State.FAILED, "error=?, error_at=?", error, now)
            if failed:
                self.outbox.record(db, State.FAILED, row.id, now)
            return failed
