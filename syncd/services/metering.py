"""Flow control as the HTTP layer sees it: the `Meter` of the upload the current thread runs.

Every request leaves through `ServiceHttp.send`, which asks the thread's meter first (a
held service sends nothing), hands the body out piece by piece through it (bandwidth), and
tells it of a rate limit at once. The worker sets the meter (`metered`) around a service's
`upload`; the service modules know nothing of it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol

PACE_PIECE = 64 * 1024
"""A metered body is handed out in pieces this big, each let through on its own."""

Pace = Callable[[int], None]
"""Blocks until that many more bytes may be sent."""


class Meter(Protocol):
    def pace(self, amount: int) -> None:
        """Block until `amount` more bytes of the body may leave."""

    def before_request(self) -> None:
        """Raise RateLimited when the service may not be asked anything now."""

    def rate_limited(self, retry_after: float) -> None:
        """The service refused with a rate limit that resets in `retry_after` seconds."""


_current = threading.local()


@contextmanager
def metered(meter: Meter) -> Iterator[None]:
    """Requests this thread sends inside the block go through `meter`."""
    _current.meter = meter
    try:
        yield
    finally:
        _current.meter = None


def current_meter() -> Meter | None:
    meter: Meter | None = getattr(_current, "meter", None)
    return meter


class PacedBody:
    """A request body handed out in pieces, each let through by the pace first.

    Iterable, so that urllib3 sends it piece by piece (with its Content-Length) instead
    of reading it in its 16 KiB blocks: bytes bodies go out as zero-copy slices.
    """

    def __init__(self, body: bytes | memoryview | IO[bytes], length: int, pace: Pace) -> None:
        self._body = body
        self._length = length
        self._pace = pace

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes | memoryview]:
        if isinstance(self._body, bytes | bytearray | memoryview):
            view = memoryview(self._body)
            for offset in range(0, len(view), PACE_PIECE):
                piece: bytes | memoryview = view[offset : offset + PACE_PIECE]
                self._pace(len(piece))
                yield piece
            return
        while piece := self._body.read(PACE_PIECE):
            self._pace(len(piece))
            yield piece


def paced_body(data: Any, pace: Pace) -> Any:
    """`data` as a paced body when it is bytes or a stream (forms and JSON are small)."""
    if not (isinstance(data, bytes | bytearray | memoryview) or hasattr(data, "read")):
        return data
    length = length_of(data)
    return PacedBody(data, length, pace) if length else data


def length_of(body: Any) -> int | None:
    """The bytes a request body has left to send, or None when that cannot be known: its
    length, a multipart encoder's `len`, or a file's size past its position."""
    if hasattr(body, "__len__"):
        return len(body)
    if hasattr(body, "len"):
        return int(body.len)
    try:
        position = body.tell()
        end = body.seek(0, os.SEEK_END)
        body.seek(position)
    except (AttributeError, OSError, ValueError):
        return None
    return max(0, int(end) - int(position))
