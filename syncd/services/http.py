"""HTTP for the service modules: one session per service, and what a reply means.

Hygiene from protocols.md ("syncd's choices"): redirects are never followed (requests
treats TON's 308 with a Location as one and would re-send the chunk elsewhere), no
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
import os
import random
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.auth import AuthBase
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies

from syncd import __version__
from syncd.config.values import is_loopback
from syncd.errors import PermanentError, RateLimited, RetryableError
from syncd.services.base import MAX_RETRY_AFTER as MAX_RETRY_AFTER
from syncd.services.base import REQUEST_TIMEOUT as REQUEST_TIMEOUT
from syncd.services.base import HttpLimits as HttpLimits
from syncd.services.base import RequestObserver as RequestObserver
from syncd.services.deadline import DeadlineAdapter, exchange_within
from syncd.services.metering import current_meter, paced_body

MAX_REPLY = 1024 * 1024
"""A reply body larger than this is cut: a broken or hostile server cannot exhaust memory."""
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
"""Between two socket operations, sending included: a chunk that stalls this long fails."""
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
    headers: CaseInsensitiveDict[str]
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
    """One requests.Session per service, so connections are reused per host."""

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
        self._session = requests.Session()
        self._session.headers.update(
            {"User-Agent": f"syncd/{__version__}", "Accept-Encoding": "identity"}
        )
        adapter = DeadlineAdapter(max_retries=0, pool_maxsize=16)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        # requests re-reads the proxy variables on every request (a scan of os.environ,
        # a good part of a small upload's cost); the environment of a daemon does not change,
        # so read it once per origin. A CA bundle named in the environment still counts.
        self._session.trust_env = False
        self._verify: bool | str = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self._proxies: dict[str, dict[str, str]] = {}

    def close(self) -> None:
        self._session.close()

    def _proxies_for(self, url: str) -> dict[str, str]:
        """The environment's proxies for `url`'s origin; none for loopback, whatever
        NO_PROXY says, so that neither requests nor credentials for it leave the host."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._proxies:
            local = is_loopback(parts.hostname or "")
            self._proxies[origin] = {} if local else get_environ_proxies(origin)
        return self._proxies[origin]

    def send(
        self,
        method: str,
        url: str,
        *,
        expect: Collection[int],
        auth: AuthBase | None = None,
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
                response = self._session.request(
                    method,
                    url,
                    auth=auth,
                    headers=dict(headers or {}),
                    data=data,
                    json=json_body,
                    timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                    allow_redirects=False,
                    stream=True,
                    verify=self._verify,
                    proxies=self._proxies_for(url),
                )
                answered = True
                self._observed(str(response.status_code))
                with response:
                    body = _read_capped(response)
            except BROKEN as exc:
                if not answered:
                    self._observed(NO_REPLY)
                if exchange.expired:
                    raise RetryableError(
                        f"{self.service}: no complete answer within {seconds:.0f} s"
                    ) from None
                raise self._error(exc) from None
        reply = Reply(response.status_code, response.headers, body)
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
        if isinstance(exc, requests.Timeout):
            return RetryableError(f"{self.service}: timed out: {type(exc).__name__}")
        if _unsendable(exc):
            # requests' and http.client's messages about a bad header quote its value, and
            # the value can be a credential: say which kind of problem, never the text.
            return PermanentError(
                f"{self.service}: the request cannot be sent: a header or the URL holds a"
                f" character HTTP does not allow ({type(exc).__name__}); check the"
                " credentials and the endpoint"
            )
        if isinstance(exc, requests.exceptions.InvalidSchema | requests.exceptions.MissingSchema):
            return PermanentError(f"{self.service}: {_short(exc)}")
        return RetryableError(f"{self.service}: connection failed: {_short(exc)}")


BROKEN = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    ValueError,
    UnicodeError,
)
"""What an exchange can end in besides a reply: the connection, the server or the request."""


def _unsendable(exc: BaseException) -> bool:
    """Whether the request itself could not be built (a header value or the URL)."""
    if isinstance(exc, requests.exceptions.InvalidHeader | requests.exceptions.InvalidURL):
        return True
    if isinstance(exc, UnicodeEncodeError):
        return True
    return isinstance(exc, ValueError) and "header" in str(exc).lower()


def _size_of(data: Any) -> int:
    """The request body's length, when it has one."""
    if data is None or isinstance(data, Mapping):
        return 0
    try:
        return max(0, int(requests.utils.super_len(data)))  # type: ignore[no-untyped-call]
    except (OSError, TypeError, ValueError, AttributeError):
        return 0


def _read_capped(response: requests.Response) -> bytes:
    pieces: list[bytes] = []
    size = 0
    for piece in response.iter_content(64 * 1024):
        pieces.append(piece)
        size += len(piece)
        if size >= MAX_REPLY:
            break
    return b"".join(pieces)[:MAX_REPLY]


def _short(exc: BaseException) -> str:
    """The innermost reason, without the URL-laden chain requests builds."""
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    text = one_line(str(exc), 80)
    if isinstance(exc, http.client.HTTPException):  # the answer is not HTTP: say so
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text or type(exc).__name__
