"""The TwitPic v2 emulator: `POST /2/upload.json` and `/2/upload.xml`.

Behaviour follows protocols.md section 4 and the "TwitPic emulator" notes of section 8.
The OAuth Echo is verified offline as the GET of the provider URL it was signed for; the
multipart body is read streamed, the `media` part going straight to a file with its sha256
(memory stays flat for a 1 GiB video). Limits and types are [INF] choices: jpg, png and gif
images up to `image_max`, the video containers Tween allowed up to `video_max`.
"""

from __future__ import annotations

import secrets
import shutil
import string
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from syncd.sandbox.context import Context
from syncd.sandbox.credentials import TWITPIC_API_KEY, TwitterUser
from syncd.sandbox.media import (
    VIDEO_FORMATS,
    MiB,
    MultipartError,
    MultipartReader,
    Stored,
    TooLarge,
    image_size,
    multipart_boundary,
    store,
)
from syncd.sandbox.oauth_check import AuthError, echo_headers, provider_is
from syncd.sandbox.web import (
    FORM_MAX,
    Exchange,
    HttpError,
    Reply,
    Route,
    json_reply,
    mail_date,
    route,
)

VERIFY_URLS = (
    "https://api.twitter.com/1/account/verify_credentials.json",
    "https://api.twitter.com/1.1/account/verify_credentials.json",
)
"""The identity URLs TwitPic trusts: its doc names /1/, clients moved to /1.1/ (3.1)."""
ECHO_REJECTED = "Could not authenticate you (header rejected by twitter)."
"""The one 401 message seen in the wild (protocols.md 4, S22)."""
TYPES = {
    "jpeg": "jpg",
    "png": "png",
    "gif": "gif",
    **{fmt: fmt for fmt in ("mp4", "mov", "3gp", "avi", "flv", "wmv", "mpeg")},
}
"""Sniffed format -> TwitPic's `type`: Tween's image list and its video list (S21) [INF]."""
REQUIRED = ("key", "message", "media")
ID_ALPHABET = string.digits + string.ascii_lowercase
"""Ids are short base-36 strings, like `1lad07` (protocols.md 4)."""

Fail = Callable[[int, str], HttpError]


@dataclass(frozen=True, slots=True)
class TwitPicSettings:
    image_max: int = 10 * MiB
    """A larger image is refused with 413 [INF]: Tween's client-side limit (S21)."""
    video_max: int = 2048 * MiB
    """A larger video is refused with 413 [INF]: TwitPic stated none."""
    numbers_as_strings: bool = False
    """width, height and size as strings, as a real 2012 reply had them (S22)."""
    rate_limit: int = 500
    """X-RateLimit-Limit; uploads are exempt, so Remaining always equals it (S18)."""

    def __post_init__(self) -> None:
        if self.image_max < 1 or self.video_max < 1 or self.rate_limit < 1:
            raise ValueError("image_max, video_max and rate_limit must be positive")


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    message: str
    filename: str | None
    content_type: str
    stored: Stored
    type: str
    width: int | None
    height: int | None
    timestamp: str
    user: TwitterUser

    @property
    def url(self) -> str:
        return f"http://twitpic.com/{self.id}"

    def reply_fields(self, numbers_as_strings: bool) -> dict[str, Any]:
        """The success body's fields, in the order of the documented sample."""

        def number(value: int | None) -> int | str | None:
            return str(value) if numbers_as_strings and value is not None else value

        return {
            "id": self.id,
            "text": self.message,
            "url": self.url,
            "width": number(self.width),
            "height": number(self.height),
            "size": number(self.stored.size),
            "type": self.type,
            "timestamp": self.timestamp,
            "user": {"id": int(self.user.id), "screen_name": self.user.screen_name},
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.reply_fields(numbers_as_strings=False),
            "message": self.message,
            "sha256": self.stored.sha256,
            "filename": self.filename,
            "content_type": self.content_type,
        }


@dataclass(slots=True)
class _Form:
    """What the multipart body held, as far as TwitPic reads it."""

    fields: dict[str, str]
    media: Stored | None = None
    filename: str | None = None
    content_type: str = ""


class TwitPicService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._settings = ctx.settings.register("twitpic", TwitPicSettings())
        self._dir = ctx.data_dir / "twitpic"
        self._uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()
        self.reset()

    def routes(self) -> Iterable[Route]:
        yield route("POST", r"/2/upload\.json", self.upload_json, shape=self._json_error)
        yield route("POST", r"/2/upload\.xml", self.upload_xml, shape=self._xml_error)
        yield route("GET", "/_sandbox/twitpic/uploads", self.list_uploads)

    def reset(self) -> None:
        """Forget every upload, files included (also a previous run's)."""
        with self._lock:
            self._uploads.clear()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir.mkdir(parents=True)

    # -- endpoints ----------------------------------------------------------------------

    def upload_json(self, ex: Exchange) -> Reply:
        upload = self._upload(ex, self._json_fail)
        fields = upload.reply_fields(self._settings.current.numbers_as_strings)
        return self._with_rate_headers(json_reply(200, fields))

    def upload_xml(self, ex: Exchange) -> Reply:
        upload = self._upload(ex, self._xml_fail)
        image = _xml("image", upload.reply_fields(self._settings.current.numbers_as_strings))
        return self._with_rate_headers(_xml_reply(200, image))

    def list_uploads(self, ex: Exchange) -> Reply:
        with self._lock:
            return json_reply(200, [upload.as_dict() for upload in self._uploads.values()])

    # -- the upload ---------------------------------------------------------------------

    def _upload(self, ex: Exchange, fail: Fail) -> Upload:
        """Echo first (401), then the form read in body order: an unknown key is refused
        as soon as it arrives, and so is media of the wrong type or size."""
        user = self._echo_user(ex, fail)
        boundary = multipart_boundary(ex.header("Content-Type"))
        if boundary is None:
            raise fail(400, "The body must be multipart/form-data.")
        form = self._read_form(ex, boundary, fail)
        try:
            missing = [name for name in REQUIRED if not _present(form, name)]
            if missing:
                raise fail(400, f"Missing required parameter: {', '.join(missing)}.")
            assert form.media is not None and form.media.format is not None
            return self._record(form, form.media, user)
        except BaseException:
            if form.media is not None:
                form.media.file.unlink(missing_ok=True)
            raise

    def _echo_user(self, ex: Exchange, fail: Fail) -> TwitterUser:
        """Missing headers, an untrusted provider URL, a bad signature, a stale timestamp
        or a replayed nonce: all the same 401, as Twitter's refusal reaches TwitPic."""
        provider, authorization = echo_headers(ex)
        if not provider or not authorization or not provider_is(provider, VERIFY_URLS):
            raise fail(401, ECHO_REJECTED)
        try:
            return self._ctx.oauth.verify_echo(provider, authorization)
        except AuthError:
            raise fail(401, ECHO_REJECTED) from None

    def _read_form(self, ex: Exchange, boundary: bytes, fail: Fail) -> _Form:
        settings = self._settings.current

        def judge(fmt: str | None) -> int:
            if fmt not in TYPES:
                raise fail(400, "Unsupported media type: send a jpg, png or gif image, or a video.")
            return settings.video_max if fmt in VIDEO_FORMATS else settings.image_max

        form = _Form({})
        try:
            for part in MultipartReader(ex.body.pieces(), boundary):
                if part.name == "media" and form.media is None:
                    form.media = store(part.chunks, self._dir / uuid4().hex, judge)
                    form.filename, form.content_type = part.filename, part.content_type
                elif part.name in ("key", "message") and part.name not in form.fields:
                    form.fields[part.name] = part.text(FORM_MAX)
                    if part.name == "key" and form.fields["key"] not in ("", TWITPIC_API_KEY):
                        raise fail(401, "Invalid API key.")  # [INF] (protocols.md 8)
        except BaseException as exc:
            if form.media is not None:
                form.media.file.unlink(missing_ok=True)
            if isinstance(exc, MultipartError):
                raise fail(400, f"Malformed multipart body: {exc}.") from None
            if isinstance(exc, TooLarge):
                raise fail(413, f"The media is over {exc.limit} bytes.") from None
            raise
        return form

    def _record(self, form: _Form, media: Stored, user: TwitterUser) -> Upload:
        assert media.format is not None
        with media.file.open("rb") as file:
            size = image_size(file, media.format)
        with self._lock:
            upload_id = _new_id()
            while upload_id in self._uploads:
                upload_id = _new_id()
            upload = Upload(
                id=upload_id,
                message=form.fields["message"],
                filename=form.filename,
                content_type=form.content_type,
                stored=media,
                type=TYPES[media.format],
                width=size[0] if size else None,
                height=size[1] if size else None,
                timestamp=mail_date(self._ctx.clock.now()),
                user=user,
            )
            self._uploads[upload_id] = upload
        return upload

    # -- replies ------------------------------------------------------------------------

    def _with_rate_headers(self, reply: Reply) -> Reply:
        limit = str(self._settings.current.rate_limit)
        reply.headers.update({"X-RateLimit-Limit": limit, "X-RateLimit-Remaining": limit})
        return reply

    def _json_error(self, status: int, message: str, path: str) -> Reply:
        """The error shape seen in the wild: the code is the HTTP status (S22)."""
        body = {"errors": [{"code": status, "message": message}]}
        return self._with_rate_headers(json_reply(status, body))

    def _xml_error(self, status: int, message: str, path: str) -> Reply:
        """The JSON shape as XML: the real XML error shape is unknown [INF] (protocols.md 4)."""
        error = _xml("error", {"code": status, "message": message})
        errors = ET.Element("errors")
        errors.append(error)
        return self._with_rate_headers(_xml_reply(status, errors))

    def _json_fail(self, status: int, message: str) -> HttpError:
        return HttpError(self._json_error(status, message, ""))

    def _xml_fail(self, status: int, message: str) -> HttpError:
        return HttpError(self._xml_error(status, message, ""))


def _present(form: _Form, name: str) -> bool:
    """`message` may be empty (protocols.md 4); `key` and `media` may not."""
    if name == "media":
        return form.media is not None
    return name in form.fields and (name == "message" or bool(form.fields[name]))


def _new_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(6))


def _xml(tag: str, fields: dict[str, Any]) -> ET.Element:
    """`<tag>` with one child per field (nested for dicts); None fields are left out."""
    element = ET.Element(tag)
    for name, value in fields.items():
        if isinstance(value, dict):
            element.append(_xml(name, value))
        elif value is not None:
            ET.SubElement(element, name).text = str(value)
    return element


def _xml_reply(status: int, root: ET.Element) -> Reply:
    body = ET.tostring(root, encoding="UTF-8", xml_declaration=True)
    return Reply(status, {"Content-Type": "application/xml; charset=utf-8"}, body)
