"""The media server's WSGI application: GET / HEAD / Range of a pushed file, callback POSTs.

waitress has read the whole request (head and body, within its limits) before this runs,
so refusing a request never needs its body read. Every answer to a malformed request is a
4xx with a one-line text; anything unexpected is a logged 500, never a traceback on the wire.
The token is checked before anything else (403 before the filesystem or the journal is
touched); a file whose identity differs from what was hashed is answered 409.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any

from syncd.errors import SyncdError
from syncd.files import Identity, Vanished
from syncd.services.oneall.formats import FORMATS, SNIFF, picture_format, video_format
from syncd.services.oneall.signer import CALLBACK, MEDIA, Signer

log = logging.getLogger(__name__)

RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")
"""One range (a multi-range request gets the whole file, as RFC 9110 allows)."""
BLOCK = 256 * 1024
"""Bytes waitress reads from the file at a time while sending it."""


@dataclass(frozen=True, slots=True)
class Servable:
    """What the journal says a row being pushed is: where it lies and what it must be."""

    path: Path
    identity: Identity
    media_type: str
    open: Callable[[], IO[bytes]]
    """The file opened from its watch root down, never through a symlink (files.locate);
    Vanished, PermanentError or OSError when that cannot be done."""


Lookup = Callable[[int, int], Servable | None]
"""The file of (row id, push), if that row is being pushed right now by that push."""
Callback = Callable[[int, int, Any], tuple[int, str]]
"""Hands a callback's parsed JSON for (row id, push) to the daemon: the status and the
one-line text to answer with."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Answer = tuple[int, list[tuple[str, str]], Iterable[bytes]]


class Malformed(Exception):
    """The request cannot be understood: 400 with this text."""


def plain(status: int, text: str = "") -> Answer:
    body = (text or HTTPStatus(status).phrase).encode() + b"\n"
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    return status, headers, [body]


def parse_json(body: bytes) -> Any:
    """Any JSON text in UTF-8 (or UTF-16/32, as RFC 8259 parsers may accept); Malformed for
    anything else, deep nesting included (which Python's parser meets with RecursionError)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Malformed("the callback is not JSON") from None


class MediaApp:
    def __init__(self, signer: Signer, lookup: Lookup, callback: Callback) -> None:
        self._signer = signer
        self._lookup = lookup
        self._callback = callback

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", ""))
        try:
            status, headers, body = self._answer(method, environ)
        except Malformed as exc:
            status, headers, body = plain(400, str(exc))
        except Exception:
            log.exception("media server: unexpected error answering %s", method)
            status, headers, body = plain(500)
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        if method == "HEAD":
            if hasattr(body, "close"):
                body.close()
            return []
        return body

    def _answer(self, method: str, environ: dict[str, Any]) -> Answer:
        parts = str(environ.get("PATH_INFO", "")).split("/", 3)
        kind = parts[1] if len(parts) > 2 and not parts[0] else ""
        if kind == MEDIA and len(parts) == 4:
            if method not in ("GET", "HEAD"):
                return _not_allowed("GET, HEAD")
            return self._media(parts[2], environ)
        if kind == CALLBACK and len(parts) == 3:
            if method != "POST":
                return _not_allowed("POST")
            return self._callback_post(parts[2], environ)
        return plain(404)

    def _media(self, token: str, environ: dict[str, Any]) -> Answer:
        named = self._signer.check(MEDIA, token)
        servable = None if named is None else self._lookup(*named)
        if servable is None:
            return plain(403)
        try:
            file = servable.open()
        except (OSError, Vanished, SyncdError):
            return plain(404)
        try:
            st = os.fstat(file.fileno())
            if not Identity.of(st).same_version(servable.identity):
                file.close()
                return plain(409, "the file changed since it was hashed")
            return _file_answer(file, st.st_size, _sniffed(file) or servable.media_type, environ)
        except BaseException:
            file.close()
            raise

    def _callback_post(self, token: str, environ: dict[str, Any]) -> Answer:
        named = self._signer.check(CALLBACK, token)
        if named is None:
            return plain(403)
        stream = environ["wsgi.input"]
        data = parse_json(stream.read())
        status, text = self._callback(*named, data)
        return plain(status, text)


def _not_allowed(allowed: str) -> Answer:
    status, headers, body = plain(405)
    return status, [*headers, ("Allow", allowed)], body


def _sniffed(file: IO[bytes]) -> str | None:
    """The media type of the format the bytes show, as the URL's extension (the uploader
    names URLs so) says it; None for what OneAll does not take."""
    head = file.read(SNIFF)
    file.seek(0)
    found = picture_format(head) or video_format(head)
    return None if found is None else FORMATS[found][0]


def _file_answer(file: IO[bytes], size: int, media_type: str, environ: dict[str, Any]) -> Answer:
    """200 with the file, 206 with the one range asked for, or 416."""
    first, last = 0, size - 1
    headers = [("Accept-Ranges", "bytes"), ("Cache-Control", "private, no-store")]
    wanted = RANGE.fullmatch(str(environ.get("HTTP_RANGE", "")).strip())
    status = 200
    if wanted and (wanted.group(1) or wanted.group(2)):
        if wanted.group(1):
            first = int(wanted.group(1))
            last = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
        else:
            first = max(0, size - int(wanted.group(2)))
        if first > last or first >= size:
            file.close()
            headers += [("Content-Range", f"bytes */{size}"), ("Content-Length", "0")]
            return 416, headers, []
        status = 206
        headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
    headers += [("Content-Type", media_type), ("Content-Length", str(last - first + 1))]
    file.seek(first)
    # waitress sends exactly Content-Length bytes from here, from its I/O thread.
    return status, headers, environ["wsgi.file_wrapper"](file, BLOCK)
