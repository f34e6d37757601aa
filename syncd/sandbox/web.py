"""HTTP primitives the emulators are written with: the request, its streamed body, replies, routes.

A service module never touches sockets: it gets an `Exchange`, reads the body in 1 MiB
pieces (so multi-GiB uploads keep memory flat), and returns a `Reply` or raises `HttpError`.
A body that ends early, or that a fault cuts, raises `ConnectionDropped`; the server then
resets the connection, as a real server would see a dead client.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.utils import format_datetime, formatdate, parsedate_to_datetime
from io import BufferedIOBase
from typing import BinaryIO
from urllib.parse import parse_qsl, urlsplit

PIECE = 1 << 20
"""Bodies are read and written in pieces of at most 1 MiB."""
ARRIVAL_PIECE = 64 * 1024
"""Body bytes are read off the socket in pieces this small, so that `on_received` sees
them nearly when they arrive (rate measurements need finer steps than PIECE)."""
FORM_MAX = 1 << 20
"""Form and JSON bodies are small; anything larger is refused with 413."""
FORM_TYPE = "application/x-www-form-urlencoded"
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


class ConnectionDropped(Exception):
    """The body ended before its declared end, or a fault cut it: reset the connection."""


@dataclass(slots=True)
class Reply:
    """One response. `stream` (with `length`) serves a file without loading it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: BinaryIO | None = None
    length: int = 0
    close: bool = False
    """Close the connection after replying (the request's framing cannot be trusted)."""
    raw: bytes | None = None
    """Written verbatim as the whole answer, instead of the above (a fault playing a broken
    server); the connection is closed after it."""
    trickle_ms: int | None = None
    """Write the answer one byte every this many milliseconds (a fault), then close."""

    @property
    def content_length(self) -> int:
        return self.length if self.stream is not None else len(self.body)


class HttpError(Exception):
    """Raised by a handler to answer with `reply` at once."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def json_reply(status: int, obj: object) -> Reply:
    return Reply(status, dict(JSON_HEADERS), json.dumps(obj, separators=(",", ":")).encode())


def twitter_error(status: int, code: int, message: str) -> HttpError:
    """Twitter's error shape `{"errors":[{"code":N,"message":"..."}]}` (protocols.md 7)."""
    return HttpError(json_reply(status, {"errors": [{"code": code, "message": message}]}))


def error(status: int, message: str) -> HttpError:
    """An error the vendor documents no code for: `{"errors":[{"message":"..."}]}` [INF]."""
    return HttpError(json_reply(status, {"errors": [{"message": message}]}))


def error_reply(status: int, message: str, path: str) -> Reply:
    """`error` as an `ErrorShape`: the shape of routes that name none."""
    return error(status, message).reply


def control_error(message: str, status: int = 400) -> HttpError:
    """The control API's own error shape, distinct from any emulated service's."""
    return HttpError(json_reply(status, {"error": message}))


def http_date(epoch: float) -> str:
    """RFC 1123 date in GMT, as X-TON-Expires and Expires use (protocols.md 2.6)."""
    return formatdate(epoch, usegmt=True)


def mail_date(epoch: float) -> str:
    """RFC 2822 date with a numeric zone, `Wed, 05 May 2010 16:11:48 +0000`, as TwitPic's
    `timestamp` and OneAll's `date` fields show it (protocols.md 4, 6.1)."""
    return format_datetime(datetime.fromtimestamp(epoch, UTC))


def parse_http_date(value: str) -> float | None:
    """Epoch seconds of an HTTP-date, or None when it does not parse."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # A zone of -0000 parses as naive; HTTP-dates are always GMT.
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class Body:
    """A request body read once, streamed, hashed as it goes (for the journal).

    Framing is Content-Length or `Transfer-Encoding: chunked`; no header means no body.
    `drop_after` (set by a fault) cuts the body after that many bytes. `rate` (bytes/s, 0 for
    none) paces the reading, as a link of that speed would: the client's sends block.
    """

    def __init__(self, rfile: BufferedIOBase, headers: Message, rate: int = 0) -> None:
        self._rfile = rfile
        self._rate = rate
        self._paced = 0
        self._started = time.monotonic()
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self.declared: int | None = None
        if not self.chunked:
            value = (headers.get("Content-Length") or "0").strip()
            if not value.isdigit():
                bad = error(400, "Content-Length is not a number.")
                bad.reply.close = True
                raise bad
            self.declared = int(value)
        self.drop_after: int | None = None
        self.on_received: Callable[[int], None] | None = None
        """Told of every piece read off the socket, as it arrives."""
        self.received = 0
        self._sha = hashlib.sha256()
        self._pieces = self._counted()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def pieces(self) -> Iterator[bytes]:
        """The rest of the body, at most PIECE bytes at a time."""
        return self._pieces

    def read_all(self, cap: int) -> bytes:
        """The whole body; 413 when it is over `cap` bytes."""
        if self.declared is not None and self.declared > cap:
            raise error(413, f"The body is over {cap} bytes.")
        data = bytearray()
        for piece in self._pieces:
            data += piece
            if len(data) > cap:
                raise error(413, f"The body is over {cap} bytes.")
        return bytes(data)

    def drain(self) -> None:
        """Read and discard what is left, so the connection can carry the next request."""
        for _ in self._pieces:
            pass

    def _counted(self) -> Iterator[bytes]:
        for piece in self._raw():
            if self.drop_after is not None and self.received + len(piece) >= self.drop_after:
                piece = piece[: self.drop_after - self.received]
                self._count(piece)
                if piece:
                    yield piece
                raise ConnectionDropped
            self._count(piece)
            yield piece
        if self.drop_after is not None:
            # The whole body arrived before the fault's byte count: still no reply.
            raise ConnectionDropped

    def _read(self, want: int) -> bytes:
        """Up to `want` bytes (fewer only at the end of the stream), in arrival pieces."""
        if self.on_received is None:
            return self._rfile.read(want)
        parts = []
        got = 0
        while got < want:
            part = self._rfile.read(min(ARRIVAL_PIECE, want - got))
            if not part:
                break
            self.on_received(len(part))
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _count(self, piece: bytes) -> None:
        self.received += len(piece)
        self._sha.update(piece)

    def _raw(self) -> Iterator[bytes]:
        if not self.chunked:
            yield from self._exactly(self.declared or 0)
            return
        while True:
            line = self._line()
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise ConnectionDropped from None
            if size == 0:
                while self._line().strip():  # trailer fields, then the blank line
                    pass
                return
            yield from self._exactly(size)
            if self._line().strip():
                raise ConnectionDropped

    def _exactly(self, size: int) -> Iterator[bytes]:
        while size:
            want = min(PIECE, size)
            try:
                piece = self._read(want)
            except OSError:  # includes the socket timeout
                raise ConnectionDropped from None
            if len(piece) < want:
                self._count(piece)  # a client cut off mid-body did send these bytes
                raise ConnectionDropped
            size -= want
            self._pace(len(piece))
            yield piece

    def _pace(self, length: int) -> None:
        if self._rate > 0:
            self._paced += length
            behind = self._paced / self._rate - (time.monotonic() - self._started)
            if behind > 0:
                time.sleep(behind)

    def _line(self) -> bytes:
        try:
            line = self._rfile.readline(4096)
        except OSError:
            raise ConnectionDropped from None
        if not line.endswith(b"\n"):
            raise ConnectionDropped
        return line


class Exchange:
    """One request as a handler sees it. `url` is rebuilt from the Host the client sent,
    because an OAuth signature covers scheme, host, port, path and query (protocols.md 1)."""

    def __init__(
        self, method: str, target: str, headers: Message, body: Body, default_host: str
    ) -> None:
        self.method = method
        self.headers = headers
        self.body = body
        parts = urlsplit(target)
        self.path = parts.path
        self.query_string = parts.query
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))
        host = parts.netloc or headers.get("Host") or default_host
        self.url = f"http://{host}{target}" if not parts.scheme else target
        self.match: re.Match[str] | None = None
        self._form_text: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def group(self, name: str) -> str:
        """A named group of the route pattern that matched this request."""
        assert self.match is not None
        return self.match.group(name)

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters; "" when absent."""
        return (self.header("Content-Type") or "").split(";", 1)[0].strip().lower()

    @property
    def is_form(self) -> bool:
        return self.content_type == FORM_TYPE

    def form_text(self) -> str:
        """The form-encoded body as text (read once); "" when the body is not a form."""
        if self._form_text is None:
            raw = self.body.read_all(FORM_MAX) if self.is_form else b""
            try:
                self._form_text = raw.decode()
            except UnicodeDecodeError:
                raise error(400, "The form body is not UTF-8.") from None
        return self._form_text

    def param(self, name: str) -> str | None:
        """A parameter from the form body, else the query, as Twitter reads both."""
        form = dict(parse_qsl(self.form_text(), keep_blank_values=True))
        return form.get(name, self.query.get(name))

    def json(self) -> object:
        """The body parsed as JSON; an empty body is `{}`. Bad JSON is a control API 400."""
        raw = self.body.read_all(FORM_MAX)
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise control_error(f"body is not JSON: {exc}") from None


Handler = Callable[[Exchange], Reply]
ErrorShape = Callable[[int, str, str], Reply]
"""`(status, message, path) -> Reply`: how one service words an error. Routing refusals
(405, an unknown endpoint), injected faults and sandbox bugs on its paths use it, so a
client sees the service's own error body whatever produced the status."""
ANY_METHOD = "*"


@dataclass(frozen=True, slots=True)
class RateGroup:
    """A bucket of Twitter-style rate limiting: responses carry its x-rate-limit-* headers."""

    name: str
    limit: Callable[[], int]
    """The current limit per window (read from the service's settings on every request)."""


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    rate: RateGroup | None = None
    shape: ErrorShape | None = None
    """The service's error shape; None: Twitter's (and `error`'s for statuses without a code)."""


def route(
    method: str,
    pattern: str,
    handler: Handler,
    rate: RateGroup | None = None,
    shape: ErrorShape | None = None,
) -> Route:
    """A route whose `pattern` must match the whole path. Method `ANY_METHOD` makes it a
    fallback: any method, tried only when no other route matches the path (how an API
    answers "no such endpoint" under its prefix)."""
    return Route(method, re.compile(pattern), handler, rate, shape)


class Router:
    """The route table every service module adds its routes to."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, routes: Iterable[Route]) -> None:
        self._routes.extend(routes)

    def resolve(self, method: str, path: str) -> tuple[Route, re.Match[str]]:
        """The route for a request: 405 for a wrong method (in the shape of the path's
        service), else a fallback route, else 404."""
        allowed: list[Route] = []
        for candidate in self._routes:
            match = candidate.pattern.fullmatch(path)
            if match is None or candidate.method == ANY_METHOD:
                continue
            if candidate.method == method:
                return candidate, match
            allowed.append(candidate)
        if allowed:
            shape = allowed[0].shape or error_reply
            reply = shape(405, f"{method} is not allowed here.", path)
            reply.headers["Allow"] = ", ".join(sorted({r.method for r in allowed}))
            raise HttpError(reply)
        for candidate in self._routes:
            match = candidate.pattern.fullmatch(path)
            if match is not None and candidate.method == ANY_METHOD:
                return candidate, match
        raise twitter_error(404, 34, "Sorry, that page does not exist.")
