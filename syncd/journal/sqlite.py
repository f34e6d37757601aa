"""The SQLite journal: every file's state, and the only SQL in syncd.

One connection, guarded by a lock, so every write is serialised; each state change is
one `BEGIN IMMEDIATE` transaction (a deferred one that upgrades gets SQLITE_BUSY without
the busy handler). WAL with synchronous=NORMAL survives kill -9 at any moment; paths are
stored as bytes so that names which are not UTF-8 survive.

A row's `version` rises whenever the watcher sees the file change; a worker's writes name
the version it started from and do nothing once it is stale, so a file that changes
mid-upload is never recorded with the old content's hash or result.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from syncd.errors import SyncdError
from syncd.files import Identity

STATES = (
    "seen",
    "hashed",
    "uploading",
    "retry_wait",
    "uploaded",
    "awaiting_callback",
    "done",
    "failed",
    "held",
)
CLAIMABLE = ("seen", "hashed", "retry_wait")
IN_FLIGHT = ("uploading", "awaiting_callback")

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        path BLOB NOT NULL UNIQUE,
        service TEXT NOT NULL,
        state TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        dev INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        due REAL NOT NULL DEFAULT 0,
        error TEXT,
        error_at REAL,
        progress TEXT,
        result TEXT,
        duplicate_of BLOB,
        uploaded_at REAL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX files_due ON files(state, due);
    CREATE INDEX files_content ON files(service, sha256);
    """,
    # 2: the hash of the content `result` stands for, so that a file touched or rewritten
    # with the same bytes is not uploaded again.
    "ALTER TABLE files ADD COLUMN uploaded_sha256 TEXT",
    # 3: flow control. Waiting rows are taken by priority, then rank (the watch's `order`:
    # an integer, or the path for "name"); small named values keep pauses, service-wide
    # holds and quota counts across restarts.
    """
    ALTER TABLE files ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN rank;
    CREATE INDEX files_queue ON files(priority DESC, rank, id)
        WHERE state IN ('seen', 'hashed', 'retry_wait');
    CREATE TABLE flow_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)
    """,
)


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    path: bytes
    service: str
    state: str
    version: int
    identity: Identity
    sha256: str | None
    attempts: int
    due: float
    error: str | None
    error_at: float | None
    progress: dict[str, Any]
    result: dict[str, Any] | None
    duplicate_of: bytes | None
    uploaded_at: float | None
    uploaded_sha256: str | None


WAIT = "wait"
"""begin_upload's answer while another row with the same content is in flight."""
UPLOAD = "upload"
"""begin_upload's answer when this row is the one to upload."""
DUPLICATE = "duplicate"
"""begin_upload's answer when the content was uploaded already: its result is reused."""
UNCHANGED = "unchanged"
"""begin_upload's answer when this very path was uploaded with this content before."""


def _encode(value: Any) -> str:
    def default(obj: object) -> object:
        if isinstance(obj, datetime):
            return {"$datetime": obj.isoformat()}
        raise TypeError(f"cannot journal {type(obj).__name__}")

    return json.dumps(value, default=default)


def _decode(text: str | None) -> Any:
    if text is None:
        return None

    def hook(obj: dict[str, Any]) -> Any:
        if obj.keys() == {"$datetime"}:
            return datetime.fromisoformat(obj["$datetime"])
        return obj

    return json.loads(text, object_hook=hook)


class Journal:
    """Durable state of every file syncd knows; safe to share between threads."""

    def __init__(self, path: Path) -> None:
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
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise SyncdError(f"{path}: cannot open the journal: {reason}") from None
        self._lock = threading.Lock()
        self._claimed: set[int] = set()
        self.changes = 0
        """Counts committed writes, so the status line is recomputed only when it can differ."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.changes += 1

    def _migrate(self) -> None:
        with self._write() as db:
            current = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")

    def recover(self) -> int:
        """After a crash nothing is in flight: uploads resume from their saved progress."""
        with self._write() as db:
            return db.execute(
                "UPDATE files SET state='hashed', updated_at=? WHERE state='uploading'",
                (time.time(),),
            ).rowcount

    # -- the watcher's side ------------------------------------------------------------

    def known(self) -> dict[bytes, tuple[int, int, int, int]]:
        """Every path's identity (dev, inode, size, mtime_ns), for the reconciliation scans:
        plain tuples, which an Identity compares equal to, as a rescan builds tens of
        thousands of them."""
        with self._lock:
            rows = self._db.execute("SELECT path, dev, inode, size, mtime_ns FROM files").fetchall()
        return {r[0]: r[1:] for r in rows}

    def record_seen(
        self,
        path: bytes,
        service: str,
        identity: Identity,
        priority: int = 0,
        rank: int | bytes | None = None,
    ) -> bool:
        """A complete file: new, or changed since we last saw it. True when there is work.

        `priority` and `rank` place it in the queue (work/flow/order.py)."""
        now = time.time()
        with self._write() as db:
            row = db.execute(
                "SELECT dev, inode, size, mtime_ns, service FROM files WHERE path=?", (path,)
            ).fetchone()
            values = {
                "path": path,
                "service": service,
                "now": now,
                "priority": priority,
                "rank": rank,
                **identity._asdict(),
            }
            if row is None:
                db.execute(
                    "INSERT INTO files (path, service, state, dev, inode, size, mtime_ns,"
                    " due, updated_at, priority, rank) VALUES (:path, :service, 'seen', :dev,"
                    " :inode, :size, :mtime_ns, 0, :now, :priority, :rank)",
                    values,
                )
                return True
            if Identity(*row[:4]) == identity and row[4] == service:
                return False
            # The progress stays: a resumable session is kept only if the content's hash
            # turns out the same (the service checks). So does the last result, for the
            # same reason (see begin_upload), unless the file now goes to another service.
            # (SQLite reads the old `service` on the right-hand sides.)
            db.execute(
                "UPDATE files SET service=:service, state='seen', version=version+1, dev=:dev,"
                " inode=:inode, size=:size, mtime_ns=:mtime_ns, sha256=NULL, attempts=0, due=0,"
                " error=NULL, error_at=NULL, updated_at=:now, priority=:priority, rank=:rank,"
                " result=CASE WHEN service=:service THEN result END,"
                " uploaded_sha256=CASE WHEN service=:service THEN uploaded_sha256 END"
                " WHERE path=:path",
                values,
            )
            return True

    def forget_missing(self, path: bytes) -> None:
        """A file that vanished before it was uploaded: nothing left to do for it."""
        with self._write() as db:
            db.execute(
                "DELETE FROM files WHERE path=? AND state IN ('seen', 'hashed', 'retry_wait',"
                " 'held')",
                (path,),
            )

    # -- the workers' side -------------------------------------------------------------

    def claim(self, now: float, skip: frozenset[str] = frozenset()) -> Row | None:
        """The first due row no worker holds, by priority and rank, of a service not in
        `skip`; held until `release`."""
        with self._lock:
            found = self._db.execute(
                # The planner, without statistics, prefers files_due and sorts every
                # waiting row; walking the queue's own index finds the first at once.
                f"SELECT * FROM files INDEXED BY files_queue WHERE {self._waiting(skip)}"  # noqa: S608
                " AND due <= ? ORDER BY priority DESC, rank, id LIMIT 1",
                (*skip, now),
            ).fetchone()
            if found is None:
                return None
            self._claimed.add(found[0])
            return self._row(found)

    def _waiting(self, skip: frozenset[str]) -> str:
        """SQL for rows waiting for a worker; ids are integers we hold, never user input,
        and `skip` gets one placeholder per service."""
        held = ",".join(str(i) for i in self._claimed) or "-1"
        services = ",".join("?" * len(skip))
        return f"state IN {CLAIMABLE} AND id NOT IN ({held}) AND service NOT IN ({services})"

    def release(self, row_id: int) -> None:
        with self._lock:
            self._claimed.discard(row_id)

    def next_due(self, skip: frozenset[str] = frozenset()) -> float | None:
        """When the earliest waiting row becomes due, so idle workers sleep exactly that long."""
        with self._lock:
            found = self._db.execute(
                f"SELECT MIN(due) FROM files WHERE {self._waiting(skip)}",  # noqa: S608
                tuple(skip),
            ).fetchone()
        return None if found[0] is None else float(found[0])

    def get(self, row_id: int) -> Row | None:
        with self._lock:
            found = self._db.execute("SELECT * FROM files WHERE id=?", (row_id,)).fetchone()
        return None if found is None else self._row(found)

    def _update(self, row: Row, assignments: str, *values: object) -> bool:
        with self._write() as db:
            return (
                db.execute(
                    f"UPDATE files SET {assignments}, updated_at=? WHERE id=? AND version=?",  # noqa: S608
                    (*values, time.time(), row.id, row.version),
                ).rowcount
                == 1
            )

    def mark_hashed(self, row: Row, sha256: str, identity: Identity) -> Row | None:
        """The row as it now stands, or None when the file changed meanwhile."""
        changed = self._update(
            row,
            "state='hashed', sha256=?, dev=?, inode=?, size=?, mtime_ns=?",
            sha256,
            identity.dev,
            identity.inode,
            identity.size,
            identity.mtime_ns,
        )
        return replace(row, state="hashed", sha256=sha256, identity=identity) if changed else None

    def mark_changed(self, row: Row) -> bool:
        """The file changed under a worker: hash it again before anything else."""
        return self._update(row, "state='seen', sha256=NULL, version=version+1, due=0")

    def begin_upload(
        self, row: Row, still_valid: Callable[[dict[str, Any]], bool]
    ) -> tuple[str, Row] | None:
        """Decide, atomically, whether this row uploads, reuses an upload, or waits.

        Two copies of one content arriving at once both get here; the transaction makes
        exactly one of them the uploader. The answer is UPLOAD, DUPLICATE or WAIT with the
        row as it now stands; None means the row changed meanwhile.
        """
        now = time.time()
        if row.result is not None and row.uploaded_sha256 == row.sha256 and still_valid(row.result):
            if not self._update(row, "state='uploaded', error=NULL"):
                return None
            return UNCHANGED, replace(row, state="uploaded", error=None)
        with self._write() as db:
            # A copy waiting to retry holds the content too, but only for rows after it:
            # two copies both in retry_wait must not wait for each other.
            others = db.execute(
                "SELECT path, state, result, duplicate_of FROM files WHERE service=?"
                " AND sha256=? AND id<>? AND (state IN ('uploading', 'awaiting_callback',"
                " 'uploaded', 'done') OR (state='retry_wait' AND id<?))",
                (row.service, row.sha256, row.id, row.id),
            ).fetchall()
            for path, state, result, duplicate_of in others:
                decoded = _decode(result)
                if decoded is not None and still_valid(decoded):
                    original = duplicate_of or path
                    changed = db.execute(
                        "UPDATE files SET state='uploaded', result=?, duplicate_of=?,"
                        " uploaded_at=?, uploaded_sha256=sha256, error=NULL, updated_at=?"
                        " WHERE id=? AND version=?",
                        (result, original, now, now, row.id, row.version),
                    ).rowcount
                    if not changed:
                        return None
                    return DUPLICATE, replace(
                        row,
                        state="uploaded",
                        result=decoded,
                        duplicate_of=original,
                        uploaded_at=now,
                        uploaded_sha256=row.sha256,
                        error=None,
                    )
                if state in (*IN_FLIGHT, "retry_wait"):
                    changed = db.execute(
                        "UPDATE files SET due=?, updated_at=? WHERE id=? AND version=?",
                        (now + 1.0, now, row.id, row.version),
                    ).rowcount
                    return (WAIT, replace(row, due=now + 1.0)) if changed else None
            changed = db.execute(
                "UPDATE files SET state='uploading', attempts=attempts+1, updated_at=?"
                " WHERE id=? AND version=?",
                (now, row.id, row.version),
            ).rowcount
            if not changed:
                return None
            return UPLOAD, replace(row, state="uploading", attempts=row.attempts + 1)

    def save_progress(self, row: Row, progress: dict[str, Any]) -> bool:
        """A stepwise service's durable state (TON session, TwitLonger's post id, ...)."""
        return self._update(row, "progress=?", _encode(progress))

    def load_progress(self, row: Row) -> dict[str, Any]:
        with self._lock:
            found = self._db.execute("SELECT progress FROM files WHERE id=?", (row.id,)).fetchone()
        return (_decode(found[0]) if found else None) or {}

    def mark_uploaded(self, row: Row, result: dict[str, Any]) -> Row | None:
        """The row as it now stands, or None when the file changed meanwhile."""
        now = time.time()
        changed = self._update(
            row,
            "state='uploaded', result=?, uploaded_at=?, uploaded_sha256=sha256, duplicate_of=NULL,"
            " error=NULL",
            _encode(result),
            now,
        )
        if not changed:
            return None
        return replace(
            row,
            state="uploaded",
            result=result,
            uploaded_at=now,
            uploaded_sha256=row.sha256,
            duplicate_of=None,
            error=None,
        )

    def mark_awaiting(self, row: Row, deadline: float) -> bool:
        """Waiting for a service's callback; `due` holds the deadline."""
        return self._update(row, "state='awaiting_callback', due=?", deadline)

    def mark_done(self, row_id: int) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE files SET state='done', updated_at=? WHERE id=? AND state='uploaded'",
                (time.time(), row_id),
            )

    def mark_retry(self, row: Row, error: str, due: float) -> bool:
        now = time.time()
        return self._update(row, "state='retry_wait', error=?, error_at=?, due=?", error, now, due)

    def mark_failed(self, row: Row, error: str) -> bool:
        return self._update(row, "state='failed', error=?, error_at=?", error, time.time())

    def overdue_callbacks(self, now: float) -> list[Row]:
        """Rows whose callback deadline (kept in `due`) has passed."""
        with self._lock:
            found = self._db.execute(
                "SELECT * FROM files WHERE state='awaiting_callback' AND due <= ?", (now,)
            ).fetchall()
        return [self._row(r) for r in found]

    def ping(self) -> bool:
        """The watchdog's proof that the journal still answers."""
        with self._lock:
            return bool(self._db.execute("SELECT 1").fetchone() == (1,))

    def in_state(self, state: str) -> list[Row]:
        with self._lock:
            found = self._db.execute("SELECT * FROM files WHERE state=?", (state,)).fetchall()
        return [self._row(r) for r in found]

    # -- flow control's side ------------------------------------------------------------

    def mark_held(self, row: Row, reason: str, until: float | None) -> bool:
        """Held by a pause, a quota or a rate limit: `error` says why, `due` until when."""
        return self._update(
            row, "state='held', error=?, error_at=?, due=?", reason, time.time(), until or 0
        )

    def hold_waiting(self, service: str, reason: str, until: float | None) -> int:
        """Every row of `service` waiting for a worker (and not claimed) becomes held."""
        with self._write() as db:
            return db.execute(
                f"UPDATE files SET state='held', error=?, error_at=?, due=?, updated_at=?"  # noqa: S608
                f" WHERE service=? AND {self._waiting(frozenset())}",
                (reason, time.time(), until or 0, time.time(), service),
            ).rowcount

    def release_held(self, service: str) -> int:
        """Held rows of `service` wait for a worker again (hashed ones skip the hashing)."""
        with self._write() as db:
            return db.execute(
                "UPDATE files SET state=CASE WHEN sha256 IS NULL THEN 'seen' ELSE 'hashed' END,"
                " due=0, error=NULL, error_at=NULL, updated_at=? WHERE state='held' AND service=?",
                (time.time(), service),
            ).rowcount

    def flow_state(self, key: str) -> Any:
        with self._lock:
            found = self._db.execute("SELECT value FROM flow_state WHERE key=?", (key,)).fetchone()
        return None if found is None else json.loads(found[0])

    def save_flow_state(self, key: str, value: Any) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO flow_state (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, json.dumps(value)),
            )

    def once_outcome(self, retries: int) -> tuple[int, int]:
        """For `run --once`: rows still to work, and rows failed (a retryable error tried
        more than `retries` times counts as failed)."""
        with self._lock:
            found = self._db.execute(
                "SELECT SUM(state IN ('seen', 'hashed', 'uploading', 'uploaded')"
                "  OR (state='retry_wait' AND attempts <= :n)),"
                " SUM(state='failed' OR (state='retry_wait' AND attempts > :n)) FROM files",
                {"n": retries},
            ).fetchone()
        return int(found[0] or 0), int(found[1] or 0)

    def held(self, limit: int) -> list[Row]:
        """Held rows, those released soonest first."""
        with self._lock:
            found = self._db.execute(
                "SELECT * FROM files WHERE state='held' ORDER BY due, id LIMIT ?", (limit,)
            ).fetchall()
        return [self._row(r) for r in found]

    # -- the status socket's side ------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self._lock:
            found = dict(
                self._db.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall()
            )
        return {state: int(found.get(state, 0)) for state in STATES}

    def with_error(self, state: str, limit: int) -> list[Row]:
        """The latest rows in `state` that carry an error, newest first."""
        with self._lock:
            found = self._db.execute(
                "SELECT * FROM files WHERE state=? AND error IS NOT NULL"
                " ORDER BY error_at DESC LIMIT ?",
                (state, limit),
            ).fetchall()
        return [self._row(r) for r in found]

    def retry(self, paths: Iterable[bytes] | None) -> int:
        """Failed rows (all of them with None) go back to the queue, counted afresh."""
        with self._write() as db:
            query = (
                "UPDATE files SET state=CASE WHEN sha256 IS NULL THEN 'seen' ELSE 'hashed' END,"
                " attempts=0, due=0, error=NULL, error_at=NULL, updated_at=?"
                " WHERE state IN ('failed', 'retry_wait')"
            )
            if paths is None:
                return db.execute(query, (time.time(),)).rowcount
            return sum(db.execute(query + " AND path=?", (time.time(), p)).rowcount for p in paths)

    @staticmethod
    def _row(r: tuple[Any, ...]) -> Row:
        return Row(
            id=r[0],
            path=r[1],
            service=r[2],
            state=r[3],
            version=r[4],
            identity=Identity(r[5], r[6], r[7], r[8]),
            sha256=r[9],
            attempts=r[10],
            due=r[11],
            error=r[12],
            error_at=r[13],
            progress=_decode(r[14]) or {},
            result=_decode(r[15]),
            duplicate_of=r[16],
            uploaded_at=r[17],
            uploaded_sha256=r[19],
        )


class JournalReader:
    """The journal opened read-only (`run --once --dry-run`): nothing is created, migrated
    or written, and a journal that does not exist yet simply knows nothing."""

    def __init__(self, path: Path) -> None:
        self._db: sqlite3.Connection | None = None
        if path.exists():
            # Without a -wal beside it the journal was closed cleanly and nobody writes to
            # it: `immutable` reads it without creating -wal and -shm, as `mode=ro` would.
            live = path.with_name(path.name + "-wal").exists()
            mode = "mode=ro" if live else "immutable=1"
            try:
                self._db = sqlite3.connect(f"{path.absolute().as_uri()}?{mode}", uri=True)
            except sqlite3.Error as exc:
                raise SyncdError(f"{path}: cannot read the journal: {exc}") from None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def _rows(self, where: str, *values: object) -> list[Row]:
        if self._db is None:
            return []
        try:
            found = self._db.execute(f"SELECT * FROM files WHERE {where}", values).fetchall()  # noqa: S608
        except sqlite3.Error as exc:
            raise SyncdError(f"cannot read the journal: {exc}") from None
        return [Journal._row(r) for r in found]

    def row(self, path: bytes) -> Row | None:
        rows = self._rows("path=?", path)
        return rows[0] if rows else None

    def uploaded(self, service: str, sha256: str) -> list[Row]:
        """Rows whose upload of this content through `service` another copy could reuse."""
        return self._rows(
            "service=? AND sha256=? AND state IN ('uploaded', 'done') ORDER BY id", service, sha256
        )
