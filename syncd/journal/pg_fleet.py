"""What a fleet shares beside the files: its hosts and its secrets.

Mixed into PostgresStore; kept apart so the store's own module stays about claims and rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from syncd.journal.pg_base import Connected
from syncd.journal.pg_hosts import Seat


class FleetTables(Connected):
    """The `hosts` and `secrets` tables."""

    owner: str
    seat: Seat

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
                " (SELECT COUNT(*) FROM files f WHERE f.claim_owner=h.host_id || '#' || h.instance"
                " AND (f.claim_expires IS NULL OR f.claim_expires >= %(now)s)) AS claims"
                " FROM hosts h ORDER BY h.host_id",
                {"now": time.time()},
            )
        ]

    def watch_host_id(self, changed: Callable[[str | None], None]) -> None:
        self.seat.listen(changed)
