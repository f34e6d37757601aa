"""HTTP for the service modules: one transport per service, and what a reply means.

Hygiene from protocols.md ("syncd's choices"): redirects are never followed (a client
that treats TON's 308 with a Location as one re-sends the chunk elsewhere), no
library-level retries (they would re-send a signed request's nonce), one total deadline
per exchange that holds through connect, send, headers and every read (`deadline`), and
reply bodies read streamed and capped with `Accept-Encoding: identity`. Everything read
from a reply is parsed totally: any status, header or body gives a reply or an error with
a readable reason, never an exception of another kind. Loopback endpoints never go through
a proxy. Whether and when to try again is decided in one place, `retry_delay`. Flow
control meters every request here (services/metering.py).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import IO, Any

import urllib3

from syncd.errors import PermanentError, RateLimited, RetryableError
from syncd.services.base import MAX_RETRY_AFTER as MAX_RETRY_AFTER
from syncd.services.base import REQUEST_TIMEOUT as REQUEST_TIMEOUT
from syncd.services.base import HttpLimits as HttpLimits
from syncd.services.base import RequestObserver as RequestObserver
from syncd.services.base import Sign
from syncd.services.deadline import exchange_within
from syncd.services.metering import current_meter, length_of, paced_body
from syncd.services.transport import InvalidHeader, Transport, UnsupportedUrl

MAX_REPLY = 1024 * 1024
"""A reply body larger than this is cut: a broken or hostile server cannot exhaust memory."""
FLOOR_RATE = 8 * 1024
"""Bytes a second a request body is allowed at the slowest: an 8 MiB chunk adds 1024 s."""
TEXT_MAX = 200
"""A reason taken from a reply is cut to this many characters."""
_DIGITS = re.compile(r"[0-9]+")

BACKOFF_FIRST = 1.0
BACKOFF_FACTOR = 1.5
BACKOFF_CAP = 300.0
"""A daemon outlives outages: retry for ever, but no more often than every 5 minutes."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    """Case-insensitive, as HTTP's header names are."""
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None: any bytes, any nesting, any encoding."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None


def dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]... through JSON objects only; None where the path does not exist."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def text_of(value: Any, limit: int = TEXT_MAX) -> str | None:
    """An id, URL or name as a service sent it (a string or an integer), or None for
    anything else: never the text of a nested structure, never control characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value and len(value) <= limit and value.isprintable():
        return value
    return None


_LAYOUT = str.maketrans("\n\r\t", "   ")


def prose_of(value: Any, limit: int = TEXT_MAX) -> str | None:
    """Text a service wrote for people (a post's tweet), or None: as `text_of`, but its line
    breaks and tabs kept (a note of several paragraphs); no other control character."""
    if isinstance(value, str) and value and len(value) <= limit:
        return value if value.translate(_LAYOUT).isprintable() else None
    return None


def one_line(text: str, limit: int = TEXT_MAX) -> str:
    """Text from outside made fit for an error message: printable, one line, bounded."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text[: limit * 4]).split())
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def retry_delay(attempts: int, retry_after: float | None) -> float:
    """Seconds until the next try: the server's wish, else backoff x1.5 with jitter."""
    if retry_after is not None:
        return max(0.0, retry_after) + random.uniform(0.0, 0.5)
    delay = min(BACKOFF_CAP, BACKOFF_FIRST * BACKOFF_FACTOR ** max(0, attempts - 1))
    return delay * random.uniform(0.75, 1.25)


def retry_after_of(
    headers: Mapping[str, str],
    rate_limited: bool,
    now: float | None = None,
    cap: float = MAX_RETRY_AFTER,
) -> float | None:
    """`Retry-After` (delta-seconds or an HTTP-date); for a 429 also Twitter's
    `x-rate-limit-reset` (epoch seconds). Parsed strictly (ASCII digits, a real date),
    at most `cap`; None when neither says anything usable.

    Twitter sends the rate-limit headers on every reply, so the reset time says when to
    come back only when the limit is what refused us.
    """
    now = time.time() if now is None else now
    value = (headers.get("Retry-After") or "").strip()
    wait: float | None = None
    if _DIGITS.fullmatch(value):
        wait = float(value) if len(value) < 16 else cap
    elif value:
        try:
            wait = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            wait = None
    reset = (headers.get("x-rate-limit-reset") or "").strip()
    if wait is None and rate_limited and _DIGITS.fullmatch(reset):
        wait = float(reset) - now if len(reset) < 16 else cap
    return None if wait is None else min(max(0.0, wait), cap)


def error_text(reply: Reply) -> str:
    """The reason a service gave, in the shapes Twitter, TwitLonger and OneAll use."""
    data = reply.json()
    errors = dig(data, "errors")
    first = errors[0] if isinstance(errors, list) and errors else None
    message, code = dig(first, "message"), dig(first, "code")
    if isinstance(message, str) and one_line(message):
        shown = text_of(code, 12) if isinstance(code, int) else None
        return f"{one_line(message)} (code {shown or '?'})"
    info = dig(data, "response", "request", "status", "info")
    if isinstance(info, str) and one_line(info):
        return one_line(info)
    return one_line(reply.body[: TEXT_MAX * 4].decode("utf-8", "replace")) or "no reason given"


Explain = Callable[[Reply], str | None]
"""A service's own reading of an error reply (TwitLonger's codes); None falls back."""
NO_REPLY = "none"
"""The code of an exchange that got no reply: a timeout or a failed connection."""


def raise_for(
    service: str,
    reply: Reply,
    explain: Explain | None = None,
    max_retry_after: float = MAX_RETRY_AFTER,
) -> None:
    """Turn an unexpected reply into the error that says what to do about it."""
    reason = (explain(reply) if explain else None) or error_text(reply)
    if reply.status == 429 and reply.headers.get("x-rate-limit-reset"):
        wait = retry_after_of(reply.headers, rate_limited=True, cap=max_retry_after)
        if wait is not None:
            raise RateLimited(f"{service}: HTTP 429: {reason}", wait)
    if reply.status in (408, 429) or reply.status >= 500:
        raise RetryableError(
            f"{service}: HTTP {reply.status}: {reason}",
            retry_after_of(reply.headers, rate_limited=reply.status == 429, cap=max_retry_after),
        )
    if reply.status == 401:
        failed = f"{service}: authentication failed (HTTP 401: {reason})"
        if "code 135" in reason:  # the clock is wrong, not the file: once NTP mends it, it goes
            raise RetryableError(f"{failed} (the clock is off: check NTP)")
        raise PermanentError(failed)
    raise PermanentError(f"{service}: HTTP {reply.status}: {reason}")


class ServiceHttp:
    """One service's connections, reused per host (services/transport.py)."""

    def __init__(
        self,
        service: str,
        explain: Explain | None = None,
        limits: HttpLimits | None = None,
        observe: RequestObserver | None = None,
    ) -> None:
        self.service = service
        self.explain = explain
        self.limits = limits or HttpLimits()
        self._observe = observe
        self._transport = Transport()

    def close(self) -> None:
        self._transport.close()

    def send(
        self,
        method: str,
        url: str,
        *,
        expect: Collection[int],
        auth: Sign | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | IO[bytes] | Mapping[str, str] | Any = None,
        json_body: Any = None,
    ) -> Reply:
        """One exchange within its deadline (`request_timeout` plus the body at FLOOR_RATE);
        a reply whose status is not in `expect` raises via `raise_for`."""
        meter = current_meter()
        if meter is not None:
            meter.before_request()
            data = paced_body(data, meter.pace)
        seconds = self.limits.request_timeout + _size_of(data) / FLOOR_RATE
        answered = False
        with exchange_within(seconds) as exchange:
            try:
                response = self._transport.open(method, url, headers, data, json_body, auth)
                answered = True
                self._observed(str(response.status))
                body = _read_capped(response)
            except BROKEN as exc:
                if not answered:
                    self._observed(NO_REPLY)
                if exchange.expired:
                    raise RetryableError(
                        f"{self.service}: no complete answer within {seconds:.0f} s"
                    ) from None
                raise self._error(exc) from None
        reply = Reply(response.status, response.headers, body)
        if reply.status not in expect:
            try:
                raise_for(self.service, reply, self.explain, self.limits.max_retry_after)
            except RateLimited as exc:
                if meter is not None:
                    meter.rate_limited(exc.retry_after)
                raise
        return reply

    def _observed(self, code: str) -> None:
        if self._observe is not None:
            self._observe(self.service, code)

    def _error(self, exc: BaseException) -> RetryableError | PermanentError:
        if isinstance(exc, TIMEOUTS) and not isinstance(exc, NOT_A_TIMEOUT):
            return RetryableError(f"{self.service}: timed out: {type(exc).__name__}")
        if _unsendable(exc):
            # http.client's and urllib3's messages about a bad header quote its value, and
            # the value can be a credential: say which kind of problem, never the text.
            return PermanentError(
                f"{self.service}: the request cannot be sent: a header or the URL holds a"
                f" character HTTP does not allow ({type(exc).__name__}); check the"
                " credentials and the endpoint"
            )
        if isinstance(exc, UnsupportedUrl):
            return PermanentError(f"{self.service}: {exc}")
        return RetryableError(f"{self.service}: connection failed: {_short(exc)}")


BROKEN = (
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    ValueError,
    UnicodeError,
)
"""What an exchange can end in besides a reply: the connection, the server or the request."""


TIMEOUTS = (urllib3.exceptions.TimeoutError, TimeoutError)
NOT_A_TIMEOUT = urllib3.exceptions.NewConnectionError
"""urllib3 counts a refused connection among its connect timeouts; it is not one."""


def _unsendable(exc: BaseException) -> bool:
    """Whether the request itself could not be built (a header value or the URL)."""
    if isinstance(exc, InvalidHeader | urllib3.exceptions.LocationValueError):
        return True
    if isinstance(exc, UnicodeEncodeError):
        return True
    return isinstance(exc, ValueError) and "header" in str(exc).lower()


def _size_of(data: Any) -> int:
    """The request body's length, when it has one."""
    if data is None or isinstance(data, Mapping):
        return 0
    try:
        return max(0, length_of(data) or 0)
    except (OSError, TypeError, ValueError, AttributeError):
        return 0


def _read_capped(response: urllib3.BaseHTTPResponse) -> bytes:
    """The reply's body, at most MAX_REPLY of it; its connection goes back to the pool only
    when the body was read to its end (else it is closed: the rest is never read)."""
    pieces: list[bytes] = []
    size = 0
    whole = False
    try:
        for piece in response.stream(64 * 1024, decode_content=True):
            pieces.append(piece)
            size += len(piece)
            if size >= MAX_REPLY:
                break
        else:
            whole = True
    finally:
        if not whole:
            response.close()
        response.release_conn()
    return b"".join(pieces)[:MAX_REPLY]


def _short(exc: BaseException) -> str:
    """The innermost reason, without the URL-laden chain urllib3 builds."""
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    text = one_line(str(exc), 80)
    if isinstance(exc, http.client.HTTPException):  # the answer is not HTTP: say so
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text or type(exc).__name__
