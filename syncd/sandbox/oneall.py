"""The OneAll Push emulator: `POST /push/identities/{token}/twitter/{picture|video|post}.json`.

Behaviour follows protocols.md section 6 and the "OneAll emulator" notes of section 8.
Every reply is OneAll's envelope. Like the real service, the emulator downloads what it is
pointed at (streamed, capped, with a total deadline, sha256 recorded), so the daemon's media
server is exercised for real; a video's result is POSTed later to its `callback_url` from a
background thread that reset and stop cancel. The undocumented parts (error statuses, the
callback's failure payload and retries, the post result) are settings or marked [INF].
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import secrets
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import uuid4

import requests

from syncd.sandbox.context import Context
from syncd.sandbox.credentials import (
    ONEALL_IDENTITY_TOKEN,
    ONEALL_PRIVATE_KEY,
    ONEALL_PUBLIC_KEY,
)
from syncd.sandbox.media import IMAGE_FORMATS, Judge, MiB, Stored, TooLarge, store
from syncd.sandbox.web import (
    ANY_METHOD,
    FORM_MAX,
    PIECE,
    Exchange,
    HttpError,
    Reply,
    Route,
    json_reply,
    mail_date,
    route,
)

PUSH_PATH = r"/push/identities/(?P<token>[^/]+)/twitter/(?P<kind>picture|video|post)\.json"
SUCCESS_INFO = "Your request has been processed successfully"
AUTH_INFO = (
    "Authentication credentials are missing or incorrect: "
    "http://docs.oneall.com/api/basic/authentication/"
)
"""The documented 401 info (protocols.md 6.1)."""
QUEUED = "The video has been added to the queue and will be uploaded soon."
VIDEO_FORMATS = {
    "3gp": "3gpp",
    "avi": "avi",
    "flv": "flv",
    "mov": "mov",
    "mp4": "mpeg4",
    "mpeg": "mpegps",
    "webm": "webm",
    "wmv": "wmv",
}
"""Sniffed format -> OneAll's name for it: the formats seed 002 lists."""
VIDEO_EXTENSIONS = {
    **{f".{ext}": "3gpp" for ext in ("3gp", "3gpp", "3g2")},
    **{f".{ext}": "mpeg4" for ext in ("mp4", "m4v")},
    **{f".{ext}": "mpegps" for ext in ("mpeg", "mpg", "vob")},
    **{f".{ext}": ext for ext in ("avi", "flv", "mov", "webm", "wmv")},
}
ACCEPTED_VIDEOS = ", ".join(sorted(set(VIDEO_FORMATS.values())))
CALLBACK_MODES = ("success", "error", "none")
CALLBACK_RETRIES = 3
"""Re-deliveries of a callback the receiver did not take, with `callback_retry` on [INF]."""
USER_AGENT = "syncd-sandbox (OneAll emulator)"


@dataclass(frozen=True, slots=True)
class OneAllSettings:
    picture_max: int = 5 * MiB
    """5 MB read in 1024-based units, as syncd does (protocols.md, syncd's choices)."""
    video_max: int = 2048 * MiB
    """No limit is documented; this one keeps a runaway download off the disk [INF]."""
    fetch_timeout: float = 30.0
    """Seconds a download may take in all (and per connect or read)."""
    video_callback: str = "success"
    """"success", "error" (an error envelope [INF]) or "none" (never call back)."""
    callback_delay: float = 0.5
    """Seconds between the queued reply and the callback: OneAll's upload to Twitter."""
    callback_error_info: str = "The video could not be uploaded to Twitter: unsupported codec."
    callback_retry: bool = False
    """Re-deliver a callback answered with a non-2xx status or not answered [INF]."""
    callback_retry_delay: float = 1.0
    callback_timeout: float = 10.0
    """Seconds a callback receiver has to answer."""
    max_post_length: int = 280
    """A longer tweet is refused with 400 [INF]."""
    media_ttl: float = 86400.0
    """Seconds a picture_id or video_id may be attached to a tweet (seeds 002, 004)."""

    def __post_init__(self) -> None:
        if self.video_callback not in CALLBACK_MODES:
            raise ValueError(f"video_callback must be one of {', '.join(CALLBACK_MODES)}")
        if min(self.picture_max, self.video_max, self.max_post_length) < 1:
            raise ValueError("picture_max, video_max and max_post_length must be positive")
        if min(self.fetch_timeout, self.callback_timeout, self.media_ttl) <= 0:
            raise ValueError("fetch_timeout, callback_timeout and media_ttl must be positive")
        if min(self.callback_delay, self.callback_retry_delay) < 0:
            raise ValueError("callback_delay and callback_retry_delay must not be negative")


# -- the envelope (protocols.md 6.1) ------------------------------------------------------


def envelope(
    resource: str, date: str, code: int, info: str, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`{"response":{"request":{...},"result":{"data":...}}}`; errors carry no result."""
    flag = "success" if 200 <= code < 300 else "error"
    status = {"flag": flag, "code": code, "info": info}
    response: dict[str, Any] = {"request": {"date": date, "resource": resource, "status": status}}
    if data is not None:
        response["result"] = {"data": data}
    return {"response": response}


class OneAllError(Exception):
    """A refusal, answered as an error envelope for the request's resource."""

    def __init__(self, status: int, info: str) -> None:
        super().__init__(info)
        self.status = status
        self.info = info


class FetchError(Exception):
    """OneAll could not download the URL it was given."""


@dataclass(slots=True)
class Delivery:
    attempt: int
    url: str
    at: float
    status: int | None = None
    """What the receiver answered; None when it could not be reached."""
    error: str | None = None


@dataclass(slots=True)
class Video:
    job: str
    video_url: str
    callback_url: str
    size: int
    sha256: str
    format: str
    outcome: str
    """The `video_callback` mode when it was queued: success, error or none."""
    video_id: str | None
    resource: str
    callback: str = "pending"
    """pending, delivered, failed (no receiver took it), cancelled (reset/stop), none."""
    date_creation: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)


class OneAllService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._settings = ctx.settings.register("oneall", OneAllSettings())
        self._dir = ctx.data_dir / "oneall"
        self._lock = threading.Lock()
        self._pictures: list[dict[str, Any]] = []
        self._videos: list[Video] = []
        self._posts: list[dict[str, Any]] = []
        self._media: dict[str, float] = {}
        """picture_id / video_id -> when it stops being attachable (sandbox clock)."""
        self.reset()

    def routes(self) -> Iterable[Route]:
        yield route("POST", PUSH_PATH, self.push, shape=self._shape)
        yield route(ANY_METHOD, "/push/.*", self.no_such_resource, shape=self._shape)
        yield route("GET", "/_sandbox/oneall/pictures", self.list_pictures)
        yield route("GET", "/_sandbox/oneall/videos", self.list_videos)
        yield route("GET", "/_sandbox/oneall/posts", self.list_posts)

    def reset(self) -> None:
        """Forget everything, files included; pending callbacks were cancelled first."""
        with self._lock:
            self._pictures.clear()
            self._videos.clear()
            self._posts.clear()
            self._media.clear()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir.mkdir(parents=True)

    # -- endpoints ----------------------------------------------------------------------

    def push(self, ex: Exchange) -> Reply:
        """Auth (401), identity (404), then the body (400), as a REST API checks them."""
        try:
            if not _authorized(ex.header("Authorization")):
                raise OneAllError(401, AUTH_INFO)
            if ex.group("token") != ONEALL_IDENTITY_TOKEN:
                raise OneAllError(404, f"The identity_token [{ex.group('token')}] is invalid.")
            kind = ex.group("kind")
            request = self._request_body(ex, kind)
            if kind == "picture":
                data = self._picture(request)
            elif kind == "video":
                data = self._video(request, ex.path)
            else:
                data = self._post(request)
        except OneAllError as exc:
            raise HttpError(self._shape(exc.status, exc.info, ex.path)) from None
        return self._reply(ex.path, 200, SUCCESS_INFO, data)

    def no_such_resource(self, ex: Exchange) -> Reply:
        raise HttpError(self._shape(404, "The requested resource does not exist.", ex.path))

    def list_pictures(self, ex: Exchange) -> Reply:
        with self._lock:
            return json_reply(200, list(self._pictures))

    def list_videos(self, ex: Exchange) -> Reply:
        with self._lock:
            return json_reply(200, [asdict(video) for video in self._videos])

    def list_posts(self, ex: Exchange) -> Reply:
        with self._lock:
            return json_reply(200, list(self._posts))

    # -- the three pushes ---------------------------------------------------------------

    def _picture(self, request: dict[str, Any]) -> dict[str, Any]:
        url = _url(request, "url")
        description = request.get("description")
        if description is not None and not isinstance(description, str):
            raise OneAllError(400, "The description must be a string.")
        settings = self._settings.current

        def judge(fmt: str | None) -> int:
            if fmt not in IMAGE_FORMATS:
                raise OneAllError(400, "The picture must be a jpeg, bmp, png, gif or tiff.")
            return settings.picture_max

        stored = self._fetch(url, "pictures", judge, "picture")
        picture_id = _digits(18)
        now = self._ctx.clock.now()
        with self._lock:
            self._media[picture_id] = now + settings.media_ttl
            self._pictures.append(
                {
                    "picture_id": picture_id,
                    "url": url,
                    "description": description,
                    "size": stored.size,
                    "sha256": stored.sha256,
                    "format": stored.format,
                    "expires": now + settings.media_ttl,
                }
            )
        return {
            "provider": "twitter",
            "object": "picture",
            "picture_id": picture_id,
            "expires_in": str(round(settings.media_ttl)),
        }

    def _video(self, request: dict[str, Any], resource: str) -> dict[str, Any]:
        """Download now (a bad URL or format is refused at once), call back later. "A
        wrong extension or format -> 400" (protocols.md 8): the URL's extension must name
        a listed format, and the magic bytes decide the format when they name one."""
        video_url = _url(request, "video_url")
        callback_url = _url(request, "callback_url")
        settings = self._settings.current

        def judge(fmt: str | None) -> int:
            if _video_format(fmt, video_url) is None:
                raise OneAllError(400, f"The video must be one of: {ACCEPTED_VIDEOS}.")
            return settings.video_max

        stored = self._fetch(video_url, "videos", judge, "video")
        outcome = settings.video_callback
        video = Video(
            job=uuid4().hex,
            video_url=video_url,
            callback_url=callback_url,
            size=stored.size,
            sha256=stored.sha256,
            format=_video_format(stored.format, video_url) or "",
            outcome=outcome,
            video_id=None if outcome == "error" else _digits(19),
            resource=resource.lstrip("/"),  # as in the documented callback (6.4)
            callback="none" if outcome == "none" else "pending",
        )
        with self._lock:
            self._videos.append(video)
            if video.video_id is not None:
                self._media[video.video_id] = self._ctx.clock.now() + settings.media_ttl
        if outcome != "none":
            task = functools.partial(self._call_back, video, settings)
            if not self._ctx.background.start(f"oneall-callback-{video.job[:8]}", task):
                self._set_callback(video, "cancelled")  # the sandbox is stopping
        return {"object": "video", "result": QUEUED}

    def _post(self, request: dict[str, Any]) -> dict[str, Any]:
        message = request.get("message")
        attachments = request.get("attachments", [])
        if message is not None and not isinstance(message, str):
            raise OneAllError(400, "The message must be a string.")
        if not isinstance(attachments, list) or not all(isinstance(a, str) for a in attachments):
            raise OneAllError(400, "The attachments must be a list of picture or video ids.")
        if not message and not attachments:
            raise OneAllError(400, "A post needs a message or attachments.")
        limit = self._settings.current.max_post_length
        if message and len(message) > limit:
            raise OneAllError(400, f"The message is over {limit} characters.")
        now = self._ctx.clock.now()
        with self._lock:
            for media_id in attachments:
                expires = self._media.get(media_id)
                if expires is None or expires <= now:
                    raise OneAllError(400, f"The attachment [{media_id}] is unknown or expired.")
            post_id = _digits(19)
            self._posts.append(
                {"post_id": post_id, "message": message, "attachments": attachments, "date": now}
            )
        return {"provider": "twitter", "object": "post", "post_id": post_id}

    # -- helpers ------------------------------------------------------------------------

    def _request_body(self, ex: Exchange, kind: str) -> dict[str, Any]:
        """`request.push.{kind}` of a JSON body, whatever its Content-Type: OneAll's own
        examples send JSON labelled as a form (protocols.md 6.1) [INF]."""
        try:
            raw = ex.body.read_all(FORM_MAX)
        except HttpError:
            raise OneAllError(413, f"The request body is over {FORM_MAX} bytes.") from None
        try:
            found = json.loads(raw)
        except ValueError:
            raise OneAllError(400, "The request body is not valid JSON.") from None
        for key in ("request", "push", kind):
            found = found.get(key) if isinstance(found, dict) else None
        if not isinstance(found, dict):
            raise OneAllError(400, f"The request has no request.push.{kind} object.")
        return found

    def _fetch(self, url: str, folder: str, judge: Judge, what: str) -> Stored:
        file = self._dir / folder / uuid4().hex
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            return fetch(url, file, judge, self._settings.current.fetch_timeout)
        except FetchError as exc:
            raise OneAllError(400, f"The {what} could not be downloaded: {exc}") from None
        except TooLarge as exc:
            raise OneAllError(400, f"The {what} is larger than {exc.limit} bytes.") from None

    def _call_back(
        self, video: Video, settings: OneAllSettings, cancelled: threading.Event
    ) -> None:
        """Deliver the video's result after `callback_delay`, re-delivering on failure with
        `callback_retry`; a cancelled task (reset, stop) stops between attempts."""
        attempts = 1 + (CALLBACK_RETRIES if settings.callback_retry else 0)
        body: bytes | None = None
        for attempt in range(1, attempts + 1):
            wait = settings.callback_delay if attempt == 1 else settings.callback_retry_delay
            if cancelled.wait(wait):
                self._set_callback(video, "cancelled")
                return
            if body is None:
                body = json.dumps(self._callback_body(video, settings)).encode()
            delivery = Delivery(attempt, video.callback_url, self._ctx.clock.now())
            delivery.status, delivery.error = post_json(
                video.callback_url, body, settings.callback_timeout
            )
            with self._lock:
                video.deliveries.append(delivery)
                if delivery.status is not None and 200 <= delivery.status < 300:
                    video.callback = "delivered"
                    return
        self._set_callback(video, "failed")

    def _set_callback(self, video: Video, state: str) -> None:
        with self._lock:
            video.callback = state

    def _callback_body(self, video: Video, settings: OneAllSettings) -> dict[str, Any]:
        """The documented success payload, or the error envelope [INF] (protocols.md 6.4)."""
        date = mail_date(self._ctx.clock.now())
        if video.outcome == "error":
            return envelope(video.resource, date, 400, settings.callback_error_info)
        with self._lock:
            video.date_creation = date
        data = {
            "provider": "twitter",
            "object": "video",
            "video_id": video.video_id,
            "date_creation": date,
        }
        return envelope(video.resource, date, 200, SUCCESS_INFO, data)

    def _reply(self, path: str, status: int, info: str, data: dict[str, Any] | None) -> Reply:
        date = mail_date(self._ctx.clock.now())
        return json_reply(status, envelope(path, date, status, info, data))

    def _shape(self, status: int, message: str, path: str) -> Reply:
        """Every error, faults and routing refusals included, is an envelope (8)."""
        return self._reply(path, status, message, None)


# -- talking to other servers -------------------------------------------------------------


def fetch(url: str, file: Path, judge: Judge, timeout: float) -> Stored:
    """GET `url` into `file`, streamed and judged as it arrives (see media.store), within
    `timeout` seconds in all. FetchError when unreachable, non-2xx or too slow."""
    deadline = time.monotonic() + timeout
    with requests.Session() as http:
        http.trust_env = False  # the sandbox talks to loopback servers, never via a proxy
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        try:
            with http.get(url, headers=headers, stream=True, timeout=timeout) as reply:
                if not 200 <= reply.status_code < 300:
                    raise FetchError(f"{url} answered {reply.status_code}")
                return store(_before(reply.iter_content(PIECE), deadline), file, judge)
        except requests.RequestException as exc:
            raise FetchError(f"{url}: {type(exc).__name__}") from None


def _before(pieces: Iterator[bytes], deadline: float) -> Iterator[bytes]:
    for piece in pieces:
        if time.monotonic() > deadline:
            raise FetchError("the download took too long")
        yield piece


def post_json(url: str, body: bytes, timeout: float) -> tuple[int | None, str | None]:
    """POST a callback; (the receiver's status, None) or (None, why it failed)."""
    with requests.Session() as http:
        http.trust_env = False
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        try:
            with http.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as reply:
                return reply.status_code, None
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}"


# -- small checks -------------------------------------------------------------------------


def _authorized(header: str | None) -> bool:
    """HTTP Basic with the public key as user name and the private key as password."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
    except ValueError:
        return False
    user_ok = hmac.compare_digest(user, ONEALL_PUBLIC_KEY.encode())
    password_ok = hmac.compare_digest(password, ONEALL_PRIVATE_KEY.encode())
    return bool(sep) and user_ok and password_ok


def _url(request: dict[str, Any], key: str) -> str:
    """A required, fully qualified http(s) URL (seeds 002, 004)."""
    url = request.get(key)
    if not isinstance(url, str) or not url:
        raise OneAllError(400, f"The key {key} is required.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise OneAllError(400, f"The {key} must be a fully qualified http(s) URL.")
    return url


def _video_format(sniffed: str | None, url: str) -> str | None:
    named = VIDEO_EXTENSIONS.get(PurePosixPath(unquote(urlsplit(url).path)).suffix.lower())
    if named is None or sniffed is None:
        return named
    return VIDEO_FORMATS.get(sniffed)


def _digits(count: int) -> str:
    """A random id of `count` digits, no leading zero, like Twitter's media ids."""
    return str(10 ** (count - 1) + secrets.randbelow(9 * 10 ** (count - 1)))
