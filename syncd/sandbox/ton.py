"""The TON (Twitter Object Nest) emulator: single POST, resumable upload, download.

Behaviour follows protocols.md section 2 and the "TON emulator" notes of section 8; where
the real service is undocumented the choice is a setting (`POST /_sandbox/settings
{"ton": {...}}`), so the daemon can be tested against each plausible variant.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import secrets
import shutil
import string
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit
from uuid import uuid4

from syncd.sandbox.context import Context
from syncd.sandbox.credentials import (
    TON_BUCKETS,
    TON_BUCKETS_REQUIRING_EXPIRES,
    TwitterUser,
)
from syncd.sandbox.oauth_check import TIMESTAMP_WINDOW
from syncd.sandbox.web import (
    FORM_TYPE,
    PIECE,
    ConnectionDropped,
    Exchange,
    HttpError,
    RateGroup,
    Reply,
    Route,
    control_error,
    error,
    http_date,
    json_reply,
    parse_http_date,
    route,
)

MiB = 1 << 20
MAX_EXPIRES_AHEAD = 7 * 86400.0
"""X-TON-Expires may be at most 7 days ahead (protocols.md 2.6)."""
KEY_ALPHABET = string.ascii_letters + string.digits
CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+)")
UPLOAD_PATH = r"/1\.1/ton/bucket/(?P<bucket>[^/]+)"
OBJECT_PATHS = (
    r"/1\.1/ton/bucket/(?P<bucket>[^/]+)/[^/]+",
    r"/1\.1/ton/data/(?P<bucket>[^/]+)/[^/]+/[^/]+",
)
"""Objects and sessions live under either Location shape (protocols.md 2.3)."""


@dataclass(frozen=True, slots=True)
class TonSettings:
    """The variants the real TON leaves open (protocols.md 8, 9)."""

    min_chunk: int = MiB
    """X-TON-Min-Chunk-Size: every chunk but the last is a whole multiple of it."""
    max_chunk: int = 64 * MiB - 1
    """X-TON-Max-Chunk-Size."""
    session_ttl: float = 3600.0
    """Seconds a resumable session lives (the init's Expires)."""
    single_max: int = 64 * MiB
    """A single POST of this many bytes or more is refused with 413."""
    range_prefix: bool = True
    """308 Range as `bytes=0-N` (true) or bare `0-N` (false)."""
    status_query: bool = True
    """Answer `Content-Range: bytes */TOTAL`; false: 405, as a server without it would."""
    expired_status: int = 410
    """Status for an expired session: 410, or 404 as for an unknown one."""
    strict_offsets: bool = True
    """A chunk at the wrong offset: 400 with Range (true) or 308 with Range (false)."""
    partial_chunk: str = "none"
    """What a chunk cut mid-body leaves: "none", or "aligned" (whole min_chunk multiples)."""
    location_shape: str = "bucket"
    """Locations as /1.1/ton/bucket/{b}/{key} or /1.1/ton/data/{b}/{uid}/{key}."""
    clamp_expires: bool = False
    """An X-TON-Expires over 7 days ahead: 400 (false) or clamped to 7 days (true)."""
    rate_limit: int = 100_000
    """Requests per 15-minute window. The real limit is unknown; this one stays out of the
    way of large uploads unless a test lowers it."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_chunk <= self.max_chunk:
            raise ValueError("need 1 <= min_chunk <= max_chunk")
        if self.session_ttl <= 0 or self.single_max < 1 or self.rate_limit < 1:
            raise ValueError("session_ttl, single_max and rate_limit must be positive")
        if self.expired_status not in (404, 410):
            raise ValueError("expired_status must be 404 or 410")
        if self.partial_chunk not in ("none", "aligned"):
            raise ValueError('partial_chunk must be "none" or "aligned"')
        if self.location_shape not in ("bucket", "data"):
            raise ValueError('location_shape must be "bucket" or "data"')


@dataclass(slots=True)
class TonObject:
    bucket: str
    location: str
    file: Path
    size: int
    sha256: str
    content_type: str
    expires: float | None
    """The X-TON-Expires sent with the upload; None: never (buckets other than ta_partner)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "location": self.location,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "expires": self.expires,
        }


@dataclass(slots=True)
class Session:
    """A resumable upload: chunks are written in place into `file` as they are accepted."""

    resume_id: str
    bucket: str
    path: str
    """The object's Location: the init Location without its query."""
    total: int
    content_type: str
    expires: float
    object_expires: float | None
    file: Path
    received: int = 0
    """Bytes persisted, always a prefix of the object."""
    bytes_received: int = 0
    """Every body byte requests to this session carried, including re-sent and refused ones."""
    chunks: list[int] = field(default_factory=list)
    """Lengths of the chunks acknowledged (a partially kept chunk is not one)."""
    last_chunk: tuple[int, int] | None = None
    complete: bool = False
    sha: Any = field(default_factory=hashlib.sha256)
    """sha256 of the persisted prefix, extended chunk by chunk."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def location(self) -> str:
        return f"{self.path}?resumable=true&resumeId={self.resume_id}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "total": self.total,
            "received": self.received,
            "bytes_received": self.bytes_received,
            "chunks": list(self.chunks),
            "expires": self.expires,
            "complete": self.complete,
            "content_type": self.content_type,
        }


class TonService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._settings = ctx.settings.register("ton", TonSettings())
        self._dir = ctx.data_dir / "ton"
        self._objects: dict[str, TonObject] = {}
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.reset()

    def routes(self) -> Iterable[Route]:
        rate = RateGroup("ton", lambda: self._settings.current.rate_limit)
        yield route("POST", UPLOAD_PATH, self.upload, rate)
        for pattern in OBJECT_PATHS:
            yield route("PUT", pattern, self.chunk, rate)
            yield route("GET", pattern, self.download, rate)
        yield route("GET", "/_sandbox/ton/objects", self.list_objects)
        yield route("GET", "/_sandbox/ton/sessions", self.list_sessions)
        yield route("POST", "/_sandbox/ton/forget", self.forget)

    def reset(self) -> None:
        """Forget every object and session, files included (also a previous run's)."""
        with self._lock:
            self._objects.clear()
            self._sessions.clear()
            shutil.rmtree(self._dir, ignore_errors=True)
            for sub in ("objects", "sessions"):
                (self._dir / sub).mkdir(parents=True)

    # -- service endpoints ------------------------------------------------------------

    def upload(self, ex: Exchange) -> Reply:
        """POST to a bucket: a single upload, or with `?resumable=true` a session init."""
        bucket = ex.group("bucket")
        user = self._authorize(ex, bucket)
        media = ex.content_type
        if not media or media == FORM_TYPE:
            raise error(400, "Content-Type must be a media type, not a form.")
        expires = self._object_expires(ex, bucket)
        if ex.query.get("resumable") == "true":
            return self._init(ex, bucket, user, expires)
        return self._single(ex, bucket, user, expires)

    def chunk(self, ex: Exchange) -> Reply:
        """PUT to a session Location: a chunk, or a status query (`bytes */TOTAL`)."""
        self._authorize(ex, ex.group("bucket"))
        settings = self._settings.current
        first, last, total = self._content_range(ex)
        if first is None and not settings.status_query:
            raise error(405, "Status queries are not supported.")
        session = self._session(ex, settings)
        with session.lock, _tallied(ex, session):
            if total != session.total:
                raise error(400, f"Content-Range total {total} is not {session.total}.")
            if first is None:
                if not _empty(ex):
                    raise error(400, "A status query has an empty body (Content-Length: 0).")
                return self._ack(session, settings)
            assert last is not None
            return self._accept(ex, session, first, last, settings)

    def download(self, ex: Exchange) -> Reply:
        """GET an object's Location: its bytes, until its X-TON-Expires (protocols.md 2.6)."""
        self._authorize(ex, ex.group("bucket"))
        obj = self._objects.get(ex.path)
        if obj is None or (obj.expires is not None and self._ctx.clock.now() >= obj.expires):
            raise error(404, "No such object.")
        try:
            stream: BinaryIO = obj.file.open("rb")
        except FileNotFoundError:  # removed by a concurrent reset
            raise error(404, "No such object.") from None
        return Reply(200, {"Content-Type": obj.content_type}, stream=stream, length=obj.size)

    # -- control endpoints ------------------------------------------------------------

    def list_objects(self, ex: Exchange) -> Reply:
        with self._lock:
            return json_reply(200, [obj.as_dict() for obj in self._objects.values()])

    def list_sessions(self, ex: Exchange) -> Reply:
        with self._lock:
            return json_reply(200, [s.as_dict() for s in self._sessions.values()])

    def forget(self, ex: Exchange) -> Reply:
        """Drop sessions as if the server lost them: requests to them get 404 afterwards."""
        spec = ex.json()
        location = spec.get("location") if isinstance(spec, dict) else None
        if location is not None:
            parts = urlsplit(str(location))  # also accept the Location joined to the URL
            location = parts.path + (f"?{parts.query}" if parts.query else "")
        with self._lock:
            doomed = [
                s
                for s in self._sessions.values()
                if location is None or location in (s.location, s.path)
            ]
            if location is not None and not doomed:
                raise control_error(f"no session at {location}", 404)
            for session in doomed:
                del self._sessions[session.resume_id]
                if not session.complete:
                    session.file.unlink(missing_ok=True)
        return json_reply(200, {"forgotten": len(doomed)})

    # -- the checks every TON request passes --------------------------------------------

    def _authorize(self, ex: Exchange, bucket: str) -> TwitterUser:
        """401 before bucket checks: "401 means a bad OAuth request; 403 means the request
        is valid but not permitted" (Twitter staff, protocols.md 2.7)."""
        user = self._ctx.oauth.authenticate(ex)
        whitelisted = TON_BUCKETS.get(bucket)
        if whitelisted is None:
            raise error(400, f"Unknown bucket {bucket!r}.")
        if not whitelisted:
            raise HttpError(Reply(403))
        return user

    def _object_expires(self, ex: Exchange, bucket: str) -> float | None:
        value = ex.header("X-TON-Expires")
        if value is None:
            if bucket in TON_BUCKETS_REQUIRING_EXPIRES:
                raise HttpError(Reply(403))  # empty body, as seen in the wild (protocols.md 2.7)
            return None
        when = parse_http_date(value)
        if when is None:
            raise error(400, "X-TON-Expires is not an HTTP-date.")
        now = self._ctx.clock.now()
        # A client that sends exactly "now + 7 days" is allowed the OAuth clock skew.
        if when > now + MAX_EXPIRES_AHEAD + TIMESTAMP_WINDOW:
            if not self._settings.current.clamp_expires:
                raise error(400, "X-TON-Expires is more than 7 days ahead.")
            when = now + MAX_EXPIRES_AHEAD
        return when

    # -- single upload and init ---------------------------------------------------------

    def _single(self, ex: Exchange, bucket: str, user: TwitterUser, expires: float | None) -> Reply:
        limit = self._settings.current.single_max
        if ex.body.declared is not None and ex.body.declared >= limit:
            raise error(413, f"A single upload must be under {limit} bytes; use resumable.")
        file = self._dir / "objects" / uuid4().hex
        try:
            with file.open("wb") as out:
                for piece in ex.body.pieces():
                    if ex.body.received >= limit:
                        raise error(413, f"A single upload must be under {limit} bytes.")
                    out.write(piece)
        except BaseException:
            file.unlink(missing_ok=True)
            raise
        obj = TonObject(
            bucket=bucket,
            location=self._new_path(bucket, user, ex.content_type),
            file=file,
            size=ex.body.received,
            sha256=ex.body.sha256,
            content_type=ex.content_type,
            expires=expires,
        )
        with self._lock:
            self._objects[obj.location] = obj
        return Reply(201, {"Location": obj.location})

    def _init(self, ex: Exchange, bucket: str, user: TwitterUser, expires: float | None) -> Reply:
        if not _empty(ex):
            raise error(400, "An init request has no body (Content-Length: 0).")
        declared_type = (ex.header("X-TON-Content-Type") or "").strip().lower()
        if declared_type != (ex.header("Content-Type") or "").strip().lower():
            raise error(400, "X-TON-Content-Type must equal Content-Type.")
        total = (ex.header("X-TON-Content-Length") or "").strip()
        if not total.isdigit() or int(total) == 0:
            raise error(400, "X-TON-Content-Length must be a positive integer.")
        settings = self._settings.current
        with self._lock:
            resume_id = str(secrets.randbelow(9 * 10**8) + 10**8)
            while resume_id in self._sessions:
                resume_id = str(secrets.randbelow(9 * 10**8) + 10**8)
            session = Session(
                resume_id=resume_id,
                bucket=bucket,
                path=self._new_path(bucket, user, ex.content_type),
                total=int(total),
                content_type=ex.content_type,
                expires=self._ctx.clock.now() + settings.session_ttl,
                object_expires=expires,
                file=self._dir / "sessions" / resume_id,
            )
            session.file.touch()
            self._sessions[resume_id] = session
        return Reply(
            201,
            {
                "Location": session.location,
                "X-TON-Min-Chunk-Size": str(settings.min_chunk),
                "X-TON-Max-Chunk-Size": str(settings.max_chunk),
                "Expires": http_date(session.expires),
            },
        )

    def _new_path(self, bucket: str, user: TwitterUser, media: str) -> str:
        """A fresh Location; the extension follows the media type, as in every example [INF]."""
        key = "".join(secrets.choice(KEY_ALPHABET) for _ in range(15))
        key += mimetypes.guess_extension(media) or ".bin"
        if self._settings.current.location_shape == "data":
            return f"/1.1/ton/data/{bucket}/{user.id}/{key}"
        return f"/1.1/ton/bucket/{bucket}/{key}"

    # -- chunks -------------------------------------------------------------------------

    @staticmethod
    def _content_range(ex: Exchange) -> tuple[int | None, int | None, int]:
        """(first, last, total) of `bytes a-b/total`; first is None for `bytes */total`."""
        match = CONTENT_RANGE.fullmatch((ex.header("Content-Range") or "").strip())
        if match is None:
            raise error(400, "Content-Range must be `bytes FIRST-LAST/TOTAL`.")
        total = int(match[3])
        if match[1] is None:
            return None, None, total
        first, last = int(match[1]), int(match[2])
        if first > last or last >= total:
            raise error(400, "Content-Range is not a range within the total.")
        return first, last, total

    def _session(self, ex: Exchange, settings: TonSettings) -> Session:
        resume_id = ex.query.get("resumeId", "")
        with self._lock:
            session = self._sessions.get(resume_id)
        if session is None or session.path != ex.path or ex.query.get("resumable") != "true":
            raise error(404, "No such upload session.")
        if self._ctx.clock.now() >= session.expires:
            raise error(settings.expired_status, "The upload session has expired.")
        return session

    def _accept(
        self, ex: Exchange, session: Session, first: int, last: int, settings: TonSettings
    ) -> Reply:
        length = last - first + 1
        if ex.body.declared is not None and ex.body.declared != length:
            raise error(400, f"The body is {ex.body.declared} bytes, Content-Range says {length}.")
        if ex.content_type != session.content_type:
            raise error(400, f"Content-Type must be {session.content_type}, as at init.")
        if (first, last) == session.last_chunk:
            return self._ack(session, settings)  # a client retry: a no-op (protocols.md 8)
        if first != session.received:
            if settings.strict_offsets:
                reply = error(400, f"Expected the chunk at offset {session.received}.").reply
                reply.headers.update(self._range(session, settings))
                raise HttpError(reply)
            return Reply(308, self._range(session, settings))
        final = last == session.total - 1
        if length > settings.max_chunk or (not final and length % settings.min_chunk):
            raise error(
                400,
                f"A chunk is a multiple of {settings.min_chunk} bytes (except the last) "
                f"and at most {settings.max_chunk}.",
            )
        self._write(ex, session, first, length, settings)
        session.last_chunk = (first, last)
        session.chunks.append(length)
        if final:
            self._complete(session)
        return self._ack(session, settings)

    def _write(
        self, ex: Exchange, session: Session, first: int, length: int, settings: TonSettings
    ) -> None:
        """Stream the chunk into place; a drop mid-body keeps what `partial_chunk` says."""
        sha = session.sha.copy()
        written = 0
        with session.file.open("r+b") as out:
            out.seek(first)
            try:
                for piece in ex.body.pieces():
                    written += len(piece)
                    if written > length:
                        raise error(400, "The body is longer than Content-Range says.")
                    out.write(piece)
                    sha.update(piece)
            except ConnectionDropped:
                kept = written - written % settings.min_chunk
                if settings.partial_chunk == "aligned" and kept:
                    _extend_hash(session.sha, out, first, kept)
                    session.received += kept
                out.truncate(session.received)
                if session.received == session.total:
                    # The whole last chunk arrived; only the reply was lost. A status
                    # query will answer 201, as Google's protocol does (protocols.md 2.5).
                    self._complete(session)
                raise
            except HttpError:
                out.truncate(first)
                raise
            if written != length:
                out.truncate(first)
                raise error(400, "The body is shorter than Content-Range says.")
        session.sha = sha
        session.received += length

    def _complete(self, session: Session) -> None:
        file = self._dir / "objects" / uuid4().hex
        session.file.rename(file)
        session.file = file
        session.complete = True
        obj = TonObject(
            bucket=session.bucket,
            location=session.path,
            file=file,
            size=session.total,
            sha256=session.sha.hexdigest(),
            content_type=session.content_type,
            expires=session.object_expires,
        )
        with self._lock:
            self._objects[obj.location] = obj

    def _ack(self, session: Session, settings: TonSettings) -> Reply:
        """201 with the object's Location once complete, else 308 with what is persisted."""
        if session.complete:
            return Reply(201, {"Location": session.path})
        return Reply(308, self._range(session, settings))

    @staticmethod
    def _range(session: Session, settings: TonSettings) -> dict[str, str]:
        """The Range header for the persisted prefix; none when nothing is persisted."""
        if not session.received:
            return {}
        prefix = "bytes=" if settings.range_prefix else ""
        return {"Range": f"{prefix}0-{session.received - 1}"}


def _empty(ex: Exchange) -> bool:
    """`Content-Length: 0` said outright, as an init and a status query must (protocols.md
    2.3, 2.5, 8): a missing header is not taken for it."""
    return not ex.body.chunked and ex.header("Content-Length") is not None and not ex.body.declared


@contextmanager
def _tallied(ex: Exchange, session: Session) -> Iterator[None]:
    """Count every body byte a session request carries, however the handler ends (re-sent
    and refused bytes too: tests measure re-sent bytes with `bytes_received`)."""
    try:
        yield
    finally:
        try:
            ex.body.drain()
        finally:
            session.bytes_received += ex.body.received


def _extend_hash(sha: Any, file: BinaryIO, start: int, size: int) -> None:
    """Feed `size` bytes of `file` from `start` into `sha`, a piece at a time."""
    file.seek(start)
    while size:
        piece = file.read(min(PIECE, size))
        if not piece:
            raise OSError("session file shorter than its persisted prefix")
        sha.update(piece)
        size -= len(piece)
