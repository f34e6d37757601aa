"""TON (Twitter Object Nest): one POST below the resumable threshold, chunks at and above.

Wire details and the choices where Twitter's documents are silent: protocols.md section 2
and "syncd's choices". The resumable session (Location, sizes, expiry, the offset the
server confirmed) is saved before the first chunk and after every 308, so that after a
crash, a reboot or a broken connection the upload goes on from what the server has, and
a confirmed byte is never sent twice while the session lives.
"""

from __future__ import annotations

import email.utils
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from io import BufferedReader
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from syncd.config import TON_MAX_SINGLE, TonService
from syncd.errors import PermanentError, RetryableError
from syncd.services.base import Interrupted, Job, Result
from syncd.services.http import (
    HttpLimits,
    Reply,
    RequestObserver,
    ServiceHttp,
    one_line,
    raise_for,
)
from syncd.services.oauth import user_auth

RESULT_MARGIN = 3600.0
"""A duplicate reuses an earlier TON object only while it has this long left to live."""
SMALL_BODY = 64 * 1024
"""A body up to this size is sent as bytes: headers and body go out in one write."""
STALLS = 3
"""Chunks in a row that the server answers without holding more: the upload is retried
later (from a status query) rather than send the same bytes round for ever."""
RANGE = re.compile(r"\s*(?:bytes=)?([0-9]{1,18})-([0-9]{1,18})\s*")


def chunk_length(wanted: int, minimum: int, maximum: int) -> int:
    """`wanted` rounded down to a multiple of the server's minimum, within its limits."""
    minimum = max(1, minimum)
    ceiling = min(maximum, TON_MAX_SINGLE - 1)
    length = max(minimum, wanted // minimum * minimum)
    if length > ceiling:
        length = max(minimum, ceiling // minimum * minimum)
    return min(length, ceiling)


def confirmed_end(reply: Reply) -> int | None:
    """Bytes the server holds, from `Range: bytes=0-N` or `Range: 0-N`; None without one."""
    found = RANGE.fullmatch(reply.headers.get("Range", ""))
    return int(found.group(2)) + 1 if found else None


def on_endpoint(endpoint: str, location: str) -> str:
    """A Location as a URL: an absolute one as it is; a path, as clients build it,
    the endpoint + Location (protocols.md 2.1), so an endpoint below a path prefix keeps
    it, unless the Location already starts with that prefix."""
    prefix = urlsplit(endpoint).path.rstrip("/")
    below = location == prefix or location.startswith(prefix + "/")
    if prefix and location.startswith("/") and not location.startswith("//") and not below:
        location = prefix + location
    return urljoin(endpoint + "/", location)


def http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


class TonUploader:
    def __init__(
        self,
        config: TonService,
        limits: HttpLimits | None = None,
        observe: RequestObserver | None = None,
    ) -> None:
        self.config = config
        self.http = ServiceHttp(config.name, limits=limits, observe=observe)
        self.auth = user_auth(config.account)
        self.bucket_url = f"{config.endpoint}/1.1/ton/bucket/{config.bucket}"

    def still_valid(self, result: Result) -> bool:
        expires = result.get("expires")
        return isinstance(expires, datetime) and expires.timestamp() > time.time() + RESULT_MARGIN

    def upload(self, job: Job) -> Result:
        if job.size >= self.config.resumable_threshold:
            return self._resumable(job)
        return self._single(job)

    def _result(self, location: str, expires_at: float) -> Result:
        try:
            url = on_endpoint(self.config.endpoint, location)
        except ValueError:
            raise PermanentError(
                f"{self.config.name}: TON answered with a Location that is not a URL"
            ) from None
        return {
            "location": location,
            "url": url,
            "expires": datetime.fromtimestamp(int(expires_at), UTC),
        }

    def _headers(self, job: Job, expires_at: float, **extra: str) -> dict[str, str]:
        return {"Content-Type": job.media_type, "X-TON-Expires": http_date(expires_at), **extra}

    def _single(self, job: Job) -> Result:
        expires_at = time.time() + self.config.expires
        job.file.seek(0)
        body: bytes | CountingReader
        if job.size <= SMALL_BODY:
            body = job.file.read(job.size)
            job.progress(len(body))
        else:
            body = CountingReader(job.file, job.size, job.progress)
        reply = self.http.send(
            "POST",
            self.bucket_url,
            expect=(201,),
            auth=self.auth,
            headers=self._headers(job, expires_at),
            data=body,
        )
        location = reply.headers.get("Location")
        if not location:
            raise PermanentError(f"{self.config.name}: TON answered 201 without a Location")
        return self._result(location, expires_at)

    # -- resumable ---------------------------------------------------------------------

    def _resumable(self, job: Job) -> Result:
        session = job.store.load()
        fresh_sessions = 0
        offset: int | None = None
        if self._resumable_session(job, session):
            found = self._query(job, session)
            if isinstance(found, dict):
                return found
            offset = found
        while True:
            if offset is None:
                if fresh_sessions:
                    raise RetryableError(f"{self.config.name}: TON lost the new session too")
                fresh_sessions += 1
                session = self._init(job)
                offset = 0
            finished = self._send_chunks(job, session, offset)
            if isinstance(finished, dict):
                return finished
            offset = None

    @staticmethod
    def _resumable_session(job: Job, session: dict[str, Any]) -> bool:
        """A saved session continues only for the same content, and only while it lives."""
        same = session.get("sha256") == job.sha256 and session.get("total") == job.size
        expires = session.get("expires")
        return same and (expires is None or expires > time.time())

    def _init(self, job: Job) -> dict[str, Any]:
        ton_expires = time.time() + self.config.expires
        reply = self.http.send(
            "POST",
            self.bucket_url + "?resumable=true",
            expect=(201,),
            auth=self.auth,
            headers=self._headers(
                job,
                ton_expires,
                **{"X-TON-Content-Type": job.media_type, "X-TON-Content-Length": str(job.size)},
            ),
            data=b"",
        )
        location = reply.headers.get("Location")
        try:
            minimum = int(reply.headers["X-TON-Min-Chunk-Size"])
            maximum = int(reply.headers["X-TON-Max-Chunk-Size"])
        except (KeyError, ValueError):
            raise PermanentError(
                f"{self.config.name}: TON's resumable answer lacks the chunk sizes"
            ) from None
        if not 1 <= minimum <= maximum:
            raise PermanentError(
                f"{self.config.name}: TON's chunk sizes make no sense ({minimum}, {maximum})"
            )
        if not location:
            raise PermanentError(f"{self.config.name}: TON answered 201 without a Location")
        self._session_url({"location": location})
        session = {
            "sha256": job.sha256,
            "total": job.size,
            "location": location,
            "media_type": job.media_type,
            "min": minimum,
            "max": maximum,
            "chunk": chunk_length(self.config.chunk_size, minimum, maximum),
            "expires": _expiry(reply.headers.get("Expires")),
            "ton_expires": ton_expires,
            "offset": 0,
        }
        job.store.save(session)
        return session

    def _session_url(self, session: dict[str, Any]) -> str:
        """The session's URL, which must stay on the endpoint's scheme, host and port: the
        chunks are signed for TON and carry the file, and go nowhere else."""
        location = str(session["location"])
        try:
            url = on_endpoint(self.config.endpoint, location)
            same = _origin(url) == _origin(self.config.endpoint)
        except ValueError:
            same = False
        if not same:
            raise PermanentError(
                f"{self.config.name}: TON's session Location {one_line(location, 100)!r}"
                f" is not on {self.config.endpoint}; refused"
            )
        return url

    def _query(self, job: Job, session: dict[str, Any]) -> int | Result | None:
        """Where the server stands: an offset, a finished result, or None (start anew)."""
        reply = self.http.send(
            "PUT",
            self._session_url(session),
            expect=(201, 308, 400, 404, 405, 410),
            auth=self.auth,
            headers=self._headers(
                job, session["ton_expires"], **{"Content-Range": f"bytes */{job.size}"}
            ),
            data=b"",
        )
        if reply.status == 201:
            return self._finished(reply, session)
        if reply.status in (404, 410):
            return None
        end = self._within(job, confirmed_end(reply))
        if reply.status == 308:
            offset = end or 0
        else:
            # No status query here (400/405 without a Range): trust the journal.
            offset = end if end is not None else int(session["offset"])
        job.progress(offset)
        return offset

    def _within(self, job: Job, end: int | None) -> int | None:
        if end is not None and end > job.size:
            raise PermanentError(
                f"{self.config.name}: TON confirmed {end} bytes of a {job.size}-byte file"
            )
        return end

    def _finished(self, reply: Reply, session: dict[str, Any]) -> Result:
        location = reply.headers.get("Location") or _without_query(session["location"])
        return self._result(location, session["ton_expires"])

    def _send_chunks(self, job: Job, session: dict[str, Any], offset: int) -> Result | None:
        """Chunks in order from `offset`; a result, or None when the session is gone."""
        total = job.size
        fd = job.file.fileno()
        # One buffer for every chunk of this upload: memory stays at one chunk, and no
        # chunk pays for fresh pages (protocols.md 2.4: chunks go one at a time, in order).
        buffer = memoryview(bytearray(min(int(session["chunk"]), total)))
        stalls = 0
        job.progress(offset)
        while True:
            if job.stopping.is_set():
                raise Interrupted
            length = min(int(session["chunk"]), total - offset)
            data = buffer[:length]
            if os.preadv(fd, [data], offset) != length:
                raise RetryableError(f"{self.config.name}: the file shrank while uploading")
            last = offset + length - 1
            reply = self.http.send(
                "PUT",
                self._session_url(session),
                expect=(201, 308, 400, 404, 410),
                auth=self.auth,
                headers=self._headers(
                    job,
                    session["ton_expires"],
                    **{"Content-Range": f"bytes {offset}-{last}/{total}"},
                ),
                data=data,
            )
            if reply.status == 201:
                job.progress(total)
                return self._finished(reply, session)
            if reply.status in (404, 410):
                return None
            end = self._within(job, confirmed_end(reply))
            if reply.status == 400 and (end is None or end == offset):
                raise_for(self.config.name, reply)
            held = end or 0  # a 308 without Range: the server holds nothing (protocols.md 2.5)
            stalls = stalls + 1 if held <= offset else 0
            if stalls >= STALLS:
                raise RetryableError(
                    f"{self.config.name}: TON took none of the last {STALLS} chunks sent"
                )
            offset = held
            session["offset"] = offset
            job.store.save(session)
            job.progress(offset)


class CountingReader:
    """A file as a request body that reports how much of it was read off for sending."""

    def __init__(self, file: BufferedReader, size: int, progress: Callable[[int], None]) -> None:
        self._file = file
        self._size = size
        self._progress = progress
        self._sent = 0

    def __len__(self) -> int:
        return self._size - self._sent

    def read(self, amount: int = -1) -> bytes:
        data = self._file.read(amount)
        self._sent += len(data)
        self._progress(self._sent)
        return data


def _expiry(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (ValueError for a URL that has none or a bad port)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), parts.hostname.lower(), parts.port or default


def _without_query(location: str) -> str:
    try:
        parts = urlsplit(location)
    except ValueError:
        return location
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
