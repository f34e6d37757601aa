"""What every store decides alike, whatever its SQL: which copy of a content uploads, and
what a row looks like after each write (the stores return the row as it now stands)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from syncd.files import Identity
from syncd.journal.codec import decode
from syncd.journal.states import IN_FLIGHT, State, check_moves
from syncd.journal.store import Decision, Row

WAIT = 1.0
"""Seconds a copy waits before asking again while another copy of its content is in flight."""
Valid = Callable[[dict[str, Any]], bool]


def reusable(row: Row, still_valid: Valid) -> bool:
    """This very path was uploaded with this content, and the result still stands."""
    return row.result is not None and row.uploaded_sha256 == row.sha256 and still_valid(row.result)


def choose(
    others: Iterable[Mapping[str, Any]], still_valid: Valid
) -> tuple[Decision, Mapping[str, Any] | None]:
    """Given the other rows with the same content (path, state, result, duplicate_of), in
    id order: DUPLICATE of the first whose result still stands, else WAIT for one in flight
    (or waiting to retry ahead of this row), else UPLOAD."""
    for other in others:
        result = decode(other["result"])
        if result is not None and still_valid(result):
            return Decision.DUPLICATE, other
        if other["state"] in (*IN_FLIGHT, State.RETRY_WAIT):
            return Decision.WAIT, other
    return Decision.UPLOAD, None


def original_of(other: Mapping[str, Any]) -> bytes:
    """The first path of a content: a duplicate's own original, else the other row's path."""
    return bytes(other["duplicate_of"] or other["path"])


def as_hashed(row: Row, sha256: str, identity: Identity) -> Row:
    return replace(row, state=State.HASHED, sha256=sha256, identity=identity)


def as_unchanged(row: Row) -> Row:
    return replace(row, state=State.UPLOADED, error=None)


def as_waiting(row: Row, now: float) -> Row:
    return replace(row, due=now + WAIT)


def as_uploading(row: Row) -> Row:
    return replace(row, state=State.UPLOADING, attempts=row.attempts + 1)


def as_uploaded(
    row: Row, result: dict[str, Any], now: float, duplicate_of: bytes | None = None
) -> Row:
    return replace(
        row,
        state=State.UPLOADED,
        result=result,
        uploaded_at=now,
        uploaded_sha256=row.sha256,
        duplicate_of=duplicate_of,
        error=None,
    )


def by_event(targets: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Receiver URL -> its events, turned into event name -> the receivers that want it
    (what an outbox looks up as it records an event)."""
    subscribers: dict[str, tuple[str, ...]] = {}
    for target, events in targets.items():
        for event in events:
            subscribers[event] = (*subscribers.get(event, ()), target)
    return subscribers


# -- flow control (work/flow/): the same in every store ---------------------------------

RELEASED = "CASE WHEN sha256 IS NULL THEN 'seen' ELSE 'hashed' END"
"""SQL: the state a held row goes back to, where it was before it was held."""


def check_release() -> None:
    """The moves RELEASED makes are allowed (states.py's table)."""
    check_moves((State.HELD,), State.SEEN)
    check_moves((State.HELD,), State.HASHED)


PENDING = "(" + ", ".join(f"'{s}'" for s in State if s not in (State.DONE, State.FAILED)) + ")"
"""SQL: the states of a file not yet done or failed, as a list (`state IN PENDING`), which
the (state, due) index serves: `NOT IN ('done', 'failed')` read every row of a journal that
is mostly done files (120 ms a scrape over a million rows)."""
ONCE = "('seen', 'hashed', 'uploading', 'uploaded', 'retry_wait', 'failed')"
"""SQL: the states of the rows `once_unfinished` and `once_failed` find, for the same index:
`run --once`'s check each second read every row (390 ms over a million)."""


def last_success(index: str) -> str:
    """SQL: (service, when it last had a file done) of every service, by a skip-scan of the
    `files_success` index (`index`: how the store names it, if it must): a few lookups a
    service, where a GROUP BY read every done row (360 ms a scrape over a million)."""
    done = f"files {index} WHERE state='done'"
    return (
        "WITH RECURSIVE s(service) AS ("  # noqa: S608 - constants only
        f" SELECT MIN(service) FROM {done}"
        f" UNION ALL SELECT (SELECT MIN(service) FROM {done} AND service > s.service)"
        " FROM s WHERE s.service IS NOT NULL)"
        " SELECT service, at FROM (SELECT service,"
        f" (SELECT MAX(uploaded_at) FROM {done} AND service=s.service) AS at"
        " FROM s WHERE service IS NOT NULL) AS latest WHERE at IS NOT NULL"
    )


def once_unfinished(retries: str) -> str:
    """SQL: a row `run --once` still waits for; `retries` is the store's parameter."""
    return (
        "(state IN ('seen', 'hashed', 'uploading', 'uploaded')"
        f" OR (state='retry_wait' AND attempts <= {retries}))"
    )


def once_failed(retries: str) -> str:
    """SQL: a row `run --once` counts as failed (a retryable error tried too often)."""
    return f"(state='failed' OR (state='retry_wait' AND attempts > {retries}))"


def queue_rank(rank: int | bytes | None) -> bytes:
    """A rank (work/flow/order.py) as bytes that sort as SQLite sorts its untyped rank
    column: none first, then integers by value, then paths by their bytes."""
    if rank is None:
        return b""
    if isinstance(rank, int):
        return b"\x01" + (rank + (1 << 63)).to_bytes(8, "big")
    return b"\x02" + rank


def below(folder: bytes) -> dict[str, bytes | int]:
    """The parameters of a query for the files directly in `folder` (a path ending in "/"):
    paths after it and before the first that does not start with it (the byte after "/" is
    "0"), whose part after it (from byte `name`, 1-based) holds no "/". A range of the path
    index, so that a scan holds one folder's identities at a time, not the journal's."""
    return {"folder": folder, "past": folder[:-1] + b"0", "name": len(folder) + 1}
