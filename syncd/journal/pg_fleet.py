"""What a fleet shares beside the files: its hosts, its secrets, and journals joining it.

Mixed into PostgresStore; kept apart so the store's own module stays about claims and rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from syncd.journal import rules
from syncd.journal.codec import encode
from syncd.journal.pg_base import Connected, signed
from syncd.journal.states import State
from syncd.journal.store import Row


class FleetTables(Connected):
    """The `hosts` and `secrets` tables, and copying rows in from another journal."""

    owner: str

    def shared_key(self, name: str, make: Callable[[], bytes]) -> bytes:
        """A secret every host uses (the media server's signing key): made once, by
        whichever host asks first."""
        with self._write() as db:
            db.execute(
                "INSERT INTO secrets (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (name, make()),
            )
            found = db.execute("SELECT value FROM secrets WHERE name=%s", (name,)).fetchone()
        assert found is not None
        return bytes(found["value"])

    def hosts(self) -> list[dict[str, Any]]:
        """Every host that ever joined: pid, heartbeat age (database clock), live claims."""
        return [
            dict(r)
            for r in self._read(
                "SELECT h.host_id AS host, h.pid, %(now)s - h.heartbeat_at AS heartbeat_age_s,"
                " (SELECT COUNT(*) FROM files f WHERE f.claim_owner=h.host_id"
                " AND (f.claim_expires IS NULL OR f.claim_expires >= %(now)s)) AS claims"
                " FROM hosts h ORDER BY h.host_id",
                {"now": time.time()},
            )
        ]

    def adopt(
        self, rows: Iterable[Row], place: Callable[[Row], tuple[int, int | bytes | None]]
    ) -> tuple[int, int]:
        """Rows of another journal (`syncd journal copy`): each path not here yet is added as
        it stood, unclaimed, an upload in flight back to `hashed` (it resumes from its saved
        progress), in the queue where `place` puts it (priority, rank); ids are this
        database's own. (copied, already here)."""
        copied = skipped = 0
        with self._write() as db:
            for row in rows:
                priority, rank = place(row)
                state = State.HASHED if row.state == State.UPLOADING else row.state
                done = db.execute(
                    "INSERT INTO files (path, service, state, version, dev, inode, size,"
                    " mtime_ns, sha256, attempts, due, error, error_at, progress, result,"
                    " duplicate_of, uploaded_at, updated_at, uploaded_sha256, queued_at, priority,"
                    " rank)"
                    " VALUES (%(path)s, %(service)s, %(state)s, %(version)s, %(dev)s, %(inode)s,"
                    " %(size)s,"
                    " %(mtime_ns)s, %(sha256)s, %(attempts)s, %(due)s, %(error)s, %(error_at)s,"
                    " %(progress)s, %(result)s, %(duplicate_of)s, %(uploaded_at)s,"
                    " %(now)s, %(uploaded_sha256)s, %(queued_at)s, %(priority)s, %(rank)s)"
                    " ON CONFLICT (path) DO NOTHING",
                    {
                        "path": row.path,
                        "service": row.service,
                        "state": str(state),
                        "version": row.version,
                        "dev": signed(row.identity.dev),
                        "inode": signed(row.identity.inode),
                        "size": row.identity.size,
                        "mtime_ns": row.identity.mtime_ns,
                        "sha256": row.sha256,
                        "attempts": row.attempts,
                        "due": row.due,
                        "error": row.error,
                        "error_at": row.error_at,
                        "progress": encode(row.progress) if row.progress else None,
                        "result": None if row.result is None else encode(row.result),
                        "duplicate_of": row.duplicate_of,
                        "uploaded_at": row.uploaded_at,
                        "uploaded_sha256": row.uploaded_sha256,
                        "queued_at": row.queued_at,
                        "priority": priority,
                        "rank": rules.queue_rank(rank),
                        "now": time.time(),
                    },
                ).rowcount
                copied += done
                skipped += 1 - done
        return copied, skipped
