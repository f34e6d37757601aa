"""This host's claims in a fleet, renewed while it works, and its heartbeat.

A thread renews every claim the host holds every third of the lease and writes the host's
heartbeat (what `syncd status` shows as the fleet; pg_hosts.py, which also finds out when
another process took this host_id over). A claim the renewal no longer finds
(another host took it over, its fence rose) is lost for good: nothing of this host writes
under it again. A host frozen (SIGSTOP, a paused VM) past its lease finds out on waking, at
the latest when its worker asks `PostgresStore.holds` before its next chunk or sidecar.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncd.journal.postgres import PostgresStore

log = logging.getLogger(__name__)

HEARTBEAT = 10.0
"""Seconds between heartbeats at most; with a lease, a third of it (renewals go along)."""


@dataclass(slots=True)
class _Claim:
    fence: int
    lost: bool = False


class Leases:
    def __init__(self, store: PostgresStore, lease: float | None) -> None:
        self._store = store
        self.interval = HEARTBEAT if lease is None else min(HEARTBEAT, lease / 3)
        self._lock = threading.Lock()
        self._claims: dict[int, _Claim] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the claims this host holds ----------------------------------------------------

    def hold(self, row_id: int, fence: int) -> None:
        with self._lock:
            self._claims[row_id] = _Claim(fence)

    def drop(self, row_id: int) -> int | None:
        """Forget a claim; its fence, unless it was lost (then there is nothing to release)."""
        with self._lock:
            claim = self._claims.pop(row_id, None)
        return None if claim is None or claim.lost else claim.fence

    def __contains__(self, row_id: int) -> bool:
        with self._lock:
            return row_id in self._claims

    def fence(self, row_id: int) -> int | None:
        with self._lock:
            claim = self._claims.get(row_id)
        return None if claim is None else claim.fence

    def lose(self, row_id: int) -> None:
        with self._lock:
            claim = self._claims.get(row_id)
            if claim is not None and not claim.lost:
                claim.lost = True
                log.warning("lost the claim on journal row %d to another host", row_id)

    def valid(self, row_id: int, fence: int) -> bool:
        """Held under `fence`, as far as this host knows without asking."""
        with self._lock:
            claim = self._claims.get(row_id)
            return claim is not None and not claim.lost and claim.fence == fence

    # -- the renewal thread ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="leases", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew()
                self._store.renew_tasks()
                self._store.seat.beat()
            except Exception as exc:
                log.warning("cannot renew this host's claims: %s", exc)

    def renew(self) -> None:
        """Every held claim renewed in one statement; those not found any more are lost."""
        with self._lock:
            held = {row_id: c.fence for row_id, c in self._claims.items() if not c.lost}
        if not held:
            return
        # The rows are locked in id order, as every multi-row write of the store takes them
        # (the sidecar committer's batches): in any other order two of them can deadlock.
        ids = sorted(held)
        found = self._store.execute(
            "WITH mine AS (SELECT files.id FROM files JOIN unnest(%(ids)s::bigint[],"
            " %(fences)s::bigint[]) AS held(id, fence) ON files.id=held.id"
            " AND files.claim_fence=held.fence WHERE files.claim_owner=%(owner)s"
            " ORDER BY files.id FOR UPDATE OF files)"
            " UPDATE files SET claim_expires=%(expires)s::float8 FROM mine"
            " WHERE files.id=mine.id RETURNING files.id",
            {
                "expires": self._store.expiry(time.time()),
                "ids": ids,
                "fences": [held[row_id] for row_id in ids],
                "owner": self._store.owner,
            },
        )
        renewed = {int(r["id"]) for r in found}
        with self._lock:
            for row_id in held:
                claim = self._claims.get(row_id)
                if claim is None or claim.fence != held[row_id]:
                    continue
                if row_id not in renewed and not claim.lost:
                    claim.lost = True
                    log.warning("lost the claim on journal row %d to another host", row_id)
