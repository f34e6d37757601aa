"""Flow control as the HTTP layer sees it: the `Meter` of the upload the current thread runs.

Every request leaves through `ServiceHttp.send`, which asks the thread's meter first (a
held service sends nothing), hands the body out piece by piece through it (bandwidth), and
tells it of a rate limit at once. The worker sets the meter (`metered`) around a service's
`upload`; the service modules know nothing of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol

from syncd.services.loading import load

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

    Iterable, so that requests streams it piece by piece (with its Content-Length) instead
    of reading it in urllib3's 16 KiB blocks: bytes bodies go out as zero-copy slices.
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
    length = int(load("requests.utils").super_len(data))  # requests is loaded by now
    return PacedBody(data, length, pace) if length else data
