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
)
