"""The SQLite journal's schema, as numbered migrations applied forward at start.

Each runs in the same transaction as the `user_version` it sets, so a crash mid-migration
leaves the journal at the previous version. Statements are split on `;`.
"""

from __future__ import annotations

_FIRST_COLUMNS = """\
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
        updated_at REAL NOT NULL"""
"""The columns of version 1 after `id`; version 3 rebuilds the table with them."""

MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
{_FIRST_COLUMNS}
    );
    CREATE INDEX files_due ON files(state, due);
    CREATE INDEX files_content ON files(service, sha256);
    """,
    # 2: the hash of the content `result` stands for, so that a file touched or rewritten
    # with the same bytes is not uploaded again.
    "ALTER TABLE files ADD COLUMN uploaded_sha256 TEXT",
    # 3: ids never reused (a OneAll media URL or callback names a row by id, and must not
    # reach another file after a delete), which takes AUTOINCREMENT and so a rebuild; and
    # claims held in the database: owner, expiry (NULL: until released) and a fence that
    # rises with every claim.
    f"""
    CREATE TABLE files_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
{_FIRST_COLUMNS},
        uploaded_sha256 TEXT,
        claim_owner TEXT,
        claim_expires REAL,
        claim_fence INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO files_new (
        id, path, service, state, version, dev, inode, size, mtime_ns, sha256, attempts,
        due, error, error_at, progress, result, duplicate_of, uploaded_at, updated_at,
        uploaded_sha256
    ) SELECT
        id, path, service, state, version, dev, inode, size, mtime_ns, sha256, attempts,
        due, error, error_at, progress, result, duplicate_of, uploaded_at, updated_at,
        uploaded_sha256
    FROM files;
    DROP TABLE files;
    ALTER TABLE files_new RENAME TO files;
    CREATE INDEX files_due ON files(state, due);
    CREATE INDEX files_content ON files(service, sha256);
    """,  # noqa: S608 (no input: a constant)
    # 4: since when a file has been waiting to be done (metrics: the oldest pending file,
    # the time from drop to sidecar).
    "ALTER TABLE files ADD COLUMN queued_at REAL; UPDATE files SET queued_at=updated_at",
    # 5: the webhook outbox: one row per event and receiver, written in the transaction of
    # the state change it reports (journal/outbox.py).
    """
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        target TEXT NOT NULL,
        event TEXT NOT NULL,
        at REAL NOT NULL,
        path BLOB NOT NULL,
        service TEXT NOT NULL,
        sha256 TEXT,
        size INTEGER NOT NULL,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        due REAL NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox(due, seq)
    """,
    # 6: after-upload actions (intent -> act -> done for each archive / delete / restore),
    # the hooks' queue, and the cursor that finds failed files for on_failed hooks. The
    # cursor starts at the upgrade: failures from before it page nobody.
    """
    CREATE TABLE actions (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL,
        version INTEGER NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        source BLOB NOT NULL,
        target BLOB,
        root BLOB NOT NULL,
        sha256 TEXT NOT NULL,
        result TEXT,
        due REAL NOT NULL,
        error TEXT,
        updated_at REAL NOT NULL,
        UNIQUE (file_id, version)
    );
    CREATE INDEX actions_state ON actions(state, due);
    CREATE INDEX actions_kind ON actions(kind, state);
    CREATE TABLE hooks (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        path BLOB NOT NULL,
        argv TEXT NOT NULL,
        env TEXT NOT NULL,
        timeout REAL NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        at REAL NOT NULL
    );
    CREATE INDEX hooks_state ON hooks(state, at);
    CREATE TABLE hook_cursor (failed_since REAL NOT NULL);
    INSERT INTO hook_cursor VALUES (CAST(strftime('%s', 'now') AS REAL))
    """,
    # 7: flow control. Waiting rows are taken by priority, then rank (the watch's `order`:
    # an integer, or the path for "name"), along an index of waiting rows only; small named
    # values keep pauses, service-wide holds and quota counts across restarts.
    """
    ALTER TABLE files ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN rank;
    CREATE INDEX files_queue ON files(priority DESC, rank, id)
        WHERE state IN ('hashed', 'retry_wait', 'seen');
    CREATE TABLE flow_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)
    """,
    # 8: service-level webhook events (paused, resumed, quota_exhausted, degraded), which
    # name no file: their own fields in `detail` (JSON; path empty, size 0), and the keys of
    # the events that happen once (a used-up quota: once per service and quota day).
    """
    ALTER TABLE outbox ADD COLUMN detail TEXT;
    CREATE TABLE outbox_once (key TEXT PRIMARY KEY, at REAL NOT NULL)
    """,
    # 9: the identities a rescan compares against, in an index that holds them all: a
    # restart reads them from it (a few pages a thousand rows) instead of walking every
    # wide row of `files`; on 20,000 rows 20 ms instead of 50.
    """
    CREATE INDEX files_identity ON files(path, dev, inode, size, mtime_ns)
    """,
    # 10: the claims a start drops, in an index of the claimed rows alone (PostgreSQL's
    # schema has had it from the first): the start found them by reading every row of
    # `files`, ~15 ms of a restart over 20,000 done files and a second over a million.
    """
    CREATE INDEX files_claims ON files(claim_owner) WHERE claim_owner IS NOT NULL
    """,
    # 11: each service's last success (a metric, read at every scrape), from an index of the
    # done rows alone: the query read every done row, 360 ms a scrape over a million.
    """
    CREATE INDEX files_success ON files(service, uploaded_at) WHERE state='done'
    """,
)
