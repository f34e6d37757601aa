"""HTTP for the service modules: one session per service, and what a reply means.

Hygiene from protocols.md ("syncd's choices"): redirects are never followed (requests
treats TON's 308 with a Location as one and would re-send the chunk elsewhere), no
library-level retries (they would re-send a signed request's nonce), timeouts on every
call plus a total deadline on reading the reply, and reply bodies read streamed and
capped with `Accept-Encoding: identity`. Whether and when to try again is decided in one
place, `retry_delay`.

Every request leaves through `ServiceHttp.send`, so that is where flow control meters it:
the worker running an upload sets a `Meter` (`metered`); a held service sends nothing, each
piece of a body waits its turn, and a rate limit holds the service at once. The service
modules know nothing of it.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies, super_len

from syncd import __version__
from syncd.errors import PermanentError, RateLimited, RetryableError

MAX_REPLY = 1024 * 1024
"""A reply body larger than this is cut: a broken or hostile server cannot exhaust memory."""
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
"""Between two socket operations, sending included: a chunk that stalls this long fails."""
REPLY_DEADLINE = 300.0
"""The whole reply, once the request is sent, must arrive within this."""

PACE_PIECE = 64 * 1024
"""A metered body is read off in pieces this big, each let through on its own."""

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
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def retry_delay(attempts: int, retry_after: float | None) -> float:
    """Seconds until the next try: the server's wish, else backoff x1.5 with jitter."""
    if retry_after is not None:
        return max(0.0, retry_after) + random.uniform(0.0, 0.5)
    delay = min(BACKOFF_CAP, BACKOFF_FIRST * BACKOFF_FACTOR ** max(0, attempts - 1))
    return delay * random.uniform(0.75, 1.25)


def retry_after_of(
    headers: Mapping[str, str], rate_limited: bool, now: float | None = None
) -> float | None:
    """`Retry-After` (seconds or an HTTP-date); for a 429 also Twitter's `x-rate-limit-reset`.

    Twitter sends the rate-limit headers on every reply, so the reset time says when to
    come back only when the limit is what refused us.
    """
    now = time.time() if now is None else now
    value = headers.get("Retry-After")
    if value:
        if value.strip().isdigit():
            return float(value)
        try:
            return email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            pass
    reset = headers.get("x-rate-limit-reset")
    if rate_limited and reset and reset.strip().isdigit():
        return max(0.0, float(reset) - now)
    return None


def error_text(reply: Reply) -> str:
    """The reason a service gave, in the shapes Twitter, TwitLonger and OneAll use."""
    data = reply.json()
    if isinstance(data, dict):
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            return f"{first.get('message', '')} (code {first.get('code', '?')})".strip()
        status = data.get("response", {}).get("request", {}).get("status", {})
        if isinstance(status, dict) and status.get("info"):
            return str(status["info"])
    text = reply.body[:200].decode("utf-8", "replace").strip()
    return text or "no reason given"


Explain = Callable[[Reply], str | None]
"""A service's own reading of an error reply (TwitLonger's codes); None falls back."""


def raise_for(service: str, reply: Reply, explain: Explain | None = None) -> None:
    """Turn an unexpected reply into the error that says what to do about it."""
    reason = (explain(reply) if explain else None) or error_text(reply)
    if reply.status == 429 and reply.headers.get("x-rate-limit-reset"):
        wait = retry_after_of(reply.headers, rate_limited=True)
        if wait is not None:
            raise RateLimited(f"{service}: HTTP 429: {reason}", wait)
    if reply.status in (408, 429) or reply.status >= 500:
        raise RetryableError(
            f"{service}: HTTP {reply.status}: {reason}",
            retry_after_of(reply.headers, rate_limited=reply.status == 429),
        )
    if reply.status == 401:
        hint = " (the clock is off: check NTP)" if "code 135" in reason else ""
        raise PermanentError(f"{service}: authentication failed (HTTP 401: {reason}){hint}")
    raise PermanentError(f"{service}: HTTP {reply.status}: {reason}")


Pace = Callable[[int], None]
"""Blocks until that many more bytes may be sent."""


class Meter(Protocol):
    """Flow control as the HTTP layer sees it, for the upload the current thread runs."""

    def pace(self, amount: int) -> None:
        """Block until `amount` more bytes of the body may leave."""

    def before_request(self) -> None:
        """Raise RateLimited when the service may not be asked anything now."""

    def rate_limited(self, retry_after: float) -> None:
        """The service refused with a rate limit that resets in `retry_after` seconds."""


_metering = threading.local()


@contextmanager
def metered(meter: Meter) -> Iterator[None]:
    """Requests this thread sends inside the block go through `meter`."""
    _metering.meter = meter
    try:
        yield
    finally:
        _metering.meter = None


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


def _metered(data: Any, pace: Pace) -> Any:
    """`data` as a paced body when it is bytes or a stream."""
    if not (isinstance(data, bytes | bytearray | memoryview) or hasattr(data, "read")):
        return data
    length = int(super_len(data))  # type: ignore[no-untyped-call]
    return PacedBody(data, length, pace) if length else data


class ServiceHttp:
    """One requests.Session per service, so connections are reused per host."""

    def __init__(self, service: str, explain: Explain | None = None) -> None:
        self.service = service
        self.explain = explain
        self._session = requests.Session()
        self._session.headers.update(
            {"User-Agent": f"syncd/{__version__}", "Accept-Encoding": "identity"}
        )
        adapter = HTTPAdapter(max_retries=0, pool_maxsize=16)
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
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._proxies:
            self._proxies[origin] = get_environ_proxies(origin)
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
        """One exchange; a reply whose status is not in `expect` raises via `raise_for`."""
        meter: Meter | None = getattr(_metering, "meter", None)
        if meter is not None:
            meter.before_request()
            data = _metered(data, meter.pace)
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
        except requests.Timeout as exc:
            raise RetryableError(f"{self.service}: timed out: {type(exc).__name__}") from None
        except requests.ConnectionError as exc:
            raise RetryableError(f"{self.service}: connection failed: {_short(exc)}") from None
        except requests.RequestException as exc:
            raise PermanentError(f"{self.service}: {_short(exc)}") from None
        with response:
            try:
                body = _read_capped(response)
            except (requests.RequestException, OSError) as exc:
                raise RetryableError(f"{self.service}: reply broken off: {_short(exc)}") from None
        reply = Reply(response.status_code, response.headers, body)
        if reply.status not in expect:
            try:
                raise_for(self.service, reply, self.explain)
            except RateLimited as exc:
                if meter is not None:
                    meter.rate_limited(exc.retry_after)
                raise
        return reply


def _read_capped(response: requests.Response) -> bytes:
    deadline = time.monotonic() + REPLY_DEADLINE
    pieces: list[bytes] = []
    size = 0
    for piece in response.iter_content(64 * 1024):
        pieces.append(piece)
        size += len(piece)
        if size >= MAX_REPLY or time.monotonic() > deadline:
            break
    return b"".join(pieces)[:MAX_REPLY]


def _short(exc: BaseException) -> str:
    """The innermost reason, without the URL-laden chain requests builds."""
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."
