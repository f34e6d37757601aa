"""The request journal behind `GET /_sandbox/requests`: what reached the emulators, in order.

Tests read it to assert what a client sent (headers, Content-Range, body hashes) without
trusting the client's own account. Secrets are redacted; control API calls are not recorded.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from syncd.sandbox.web import Exchange

REDACTED_HEADERS = frozenset({"authorization", "x-verify-credentials-authorization"})
"""Header values replaced by "<redacted>": they carry signatures (or Basic credentials)."""
MAX_ENTRIES = 10_000
"""Older entries are dropped beyond this, so a long demo cannot grow memory without bound."""
SLOT = 0.1
"""Arrivals are summed per tenth of a second of the sandbox clock."""


@dataclass(slots=True)
class Entry:
    seq: int
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    content_range: str | None
    started: float
    """Sandbox-clock epoch seconds, like every time the control API shows."""
    body_len: int = 0
    body_sha256: str | None = None
    status: int | None = None
    """None while in flight, and when the connection was reset instead of answered."""
    fault: int | None = None
    """The id of the fault applied to this request, if any."""
    finished: float | None = None


class Journal:
    def __init__(self) -> None:
        self._entries: deque[Entry] = deque(maxlen=MAX_ENTRIES)
        self._arrivals: dict[int, dict[int, int]] = {}
        """seq -> {slot: body bytes that arrived in it}, behind `GET /_sandbox/arrivals`."""
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    def begin(self, ex: Exchange, now: float) -> Entry:
        headers: dict[str, str] = {}
        for name, value in ex.headers.items():
            shown = "<redacted>" if name.lower() in REDACTED_HEADERS else value
            headers[name] = f"{headers[name]}, {shown}" if name in headers else shown
        with self._lock:
            entry = Entry(
                seq=next(self._seq),
                method=ex.method,
                path=ex.path,
                query=ex.query,
                headers=headers,
                content_range=ex.header("Content-Range"),
                started=now,
            )
            if len(self._entries) == MAX_ENTRIES:
                self._arrivals.pop(self._entries[0].seq, None)
            self._entries.append(entry)
        return entry

    def arrived(self, entry: Entry, amount: int, now: float) -> None:
        """Body bytes of `entry` read off the socket at `now`: for rate measurements."""
        slot = int(now / SLOT)
        with self._lock:
            slots = self._arrivals.setdefault(entry.seq, {})
            slots[slot] = slots.get(slot, 0) + amount

    def arrivals(self) -> list[dict[str, Any]]:
        """Per request with a body: when its bytes arrived, in SLOT-long steps."""
        with self._lock:
            return [
                {
                    "seq": e.seq,
                    "method": e.method,
                    "path": e.path,
                    "slots": [
                        [slot * SLOT, n] for slot, n in sorted(self._arrivals[e.seq].items())
                    ],
                }
                for e in self._entries
                if e.seq in self._arrivals
            ]

    @staticmethod
    def finish(entry: Entry, ex: Exchange, status: int | None, now: float) -> None:
        entry.body_len = ex.body.received
        entry.body_sha256 = ex.body.sha256
        entry.status = status
        entry.finished = now

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(entry) for entry in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._arrivals.clear()
