"""The TwitLonger v2 emulator: `GET /2/posts/{id}`, `POST /2/posts`, `PUT /2/posts/{id}`.

Behaviour follows protocols.md section 5 and the "TwitLonger emulator" notes of section 8:
X-API-KEY on every request, OAuth Echo (verified offline) on writes, the nine documented
error codes in the body `{"errors":[{"code":c,"message":m}]}` (the key names are [INF]).
The undocumented parts (JSON bodies, the content limit, the status of a rejected echo, how
`tweet_content` is cut) are settings or marked [INF] where they are decided.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from syncd.sandbox.context import Context
from syncd.sandbox.credentials import TWITLONGER_API_KEY, TwitterUser
from syncd.sandbox.oauth_check import AuthError, echo_headers, provider_is
from syncd.sandbox.web import (
    ANY_METHOD,
    FORM_MAX,
    Exchange,
    HttpError,
    Reply,
    Route,
    error_reply,
    json_reply,
    route,
    twitter_error,
)

PROVIDER = "https://api.twitter.com/1.1/account/verify_credentials.json"
"""The only identity URL TwitLonger accepts (error 9 for any other); extra query
parameters are honoured (protocols.md 5)."""
CONT = " (cont) "
SHORT_URL = "http://tl.gd/{}"
FULL_URL = "http://www.twitlonger.com/show/{}"
DIGITS = re.compile(r"[0-9]+")
ID_FIRST = string.ascii_lowercase + string.digits
ID_ALPHABET = ID_FIRST + "_"
"""Ids look like `n_2r` or `bun2lo` (protocols.md 5)."""

ERRORS = {
    1: (405, "This method is not implemented for this endpoint."),
    2: (501, "This endpoint does not exist in this version of the API."),
    3: (404, "No post was found with that id."),
    4: (403, "The X-API-KEY is missing or not recognised."),
    5: (403, "This application has been disabled or blocked."),
    6: (503, "This method is temporarily unavailable for maintenance."),
    7: (403, "This user is banned from TwitLonger."),
    8: (400, "Required parameters are missing or empty."),
    9: (403, "The X-Auth-Service-Provider URL is not accepted."),
}
"""code -> (HTTP status, message): the errors page of S23 (protocols.md 5)."""
CODE_OF_STATUS = {405: 1, 501: 2, 404: 3, 403: 4, 503: 6, 400: 8}
"""The code a routing refusal or an injected fault carries; other statuses have none."""


def tl_error(code: int, detail: str | None = None) -> HttpError:
    status, message = ERRORS[code]
    return twitter_error(status, code, detail or message)


def _shape(status: int, message: str, path: str) -> Reply:
    """Routing refusals and faults in TwitLonger's shape, with its code for the status."""
    code = CODE_OF_STATUS.get(status)
    if code is None:
        return error_reply(status, message, path)
    return twitter_error(status, code, ERRORS[code][1]).reply


@dataclass(frozen=True, slots=True)
class TwitLongerSettings:
    tweet_limit: int = 280
    """`tweet_content` fits this many characters (140 for legacy mode)."""
    content_max: int = 100_000
    """Longer content is refused with 400 code 8 [INF]: the real limit is undocumented."""
    maintenance: bool = False
    """Every request gets 503 code 6."""
    accept_json: bool = False
    """Accept JSON bodies too; off, they get 400 code 8 [INF] (protocols.md 5)."""
    disabled_keys: list[str] = field(default_factory=list)
    """API keys answered with 403 code 5 (application disabled or blocked)."""
    banned_screen_names: list[str] = field(default_factory=list)
    """Users (case-insensitive) answered with 403 code 7 on writes."""

    def __post_init__(self) -> None:
        if self.tweet_limit < 40 or self.content_max < 1:
            raise ValueError("tweet_limit must be at least 40 and content_max positive")
        names = (*self.disabled_keys, *self.banned_screen_names)
        if not all(isinstance(name, str) for name in names):
            raise ValueError("disabled_keys and banned_screen_names must be lists of strings")


@dataclass(slots=True)
class Post:
    id: str
    screen_name: str
    post_time: str
    content: str
    tweet_content: str
    reply_to_id: str | None
    reply_to_screen_name: str | None
    twitter_status_id: str | None = None
    puts: int = 0
    """Successful PUTs: a client that re-sends the link step shows up here."""

    def as_json(self) -> dict[str, Any]:
        """The post object of protocols.md 5, plus `reply_to_screen_name` as sent."""
        return {
            "id": self.id,
            "short_url": SHORT_URL.format(self.id),
            "full_url": FULL_URL.format(self.id),
            "screen_name": self.screen_name,
            "post_time": self.post_time,
            "reply_to_id": self.reply_to_id,
            "reply_to_screen_name": self.reply_to_screen_name,
            "twitter_status_id": self.twitter_status_id,
            "tweet_content": self.tweet_content,
            "content": self.content,
        }


def tweet_content(content: str, short_url: str, limit: int) -> str:
    """The content unchanged when it fits `limit` [INF]; else cut so that text + " (cont) "
    + short_url fits, at a word boundary when one is in the second half of what remains
    (the documented example cuts between words). A plain character count: t.co wrapping
    is the client's concern (protocols.md 5, 7)."""
    if len(content) <= limit:
        return content
    suffix = CONT + short_url
    budget = limit - len(suffix)
    text = content[:budget]
    if not content[budget].isspace():
        space = max(text.rfind(" "), text.rfind("\n"))
        if space > budget // 2:
            text = text[:space]
    return text.rstrip() + suffix


class TwitLongerService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._settings = ctx.settings.register("twitlonger", TwitLongerSettings())
        self._posts: dict[str, Post] = {}
        self._lock = threading.Lock()

    def routes(self) -> Iterable[Route]:
        post = r"/2/posts/(?P<id>[^/]+)"
        yield route("GET", post, self.get_post, shape=_shape)
        yield route("PUT", post, self.update, shape=_shape)
        yield route("POST", "/2/posts", self.create, shape=_shape)
        yield route(ANY_METHOD, "/2/.*", self.no_such_endpoint, shape=_shape)
        yield route("GET", "/_sandbox/twitlonger/posts", self.list_posts)

    def reset(self) -> None:
        with self._lock:
            self._posts.clear()

    # -- endpoints ----------------------------------------------------------------------

    def get_post(self, ex: Exchange) -> Reply:
        """Needs only X-API-KEY (protocols.md 5)."""
        self._gate(ex)
        with self._lock:
            return json_reply(200, self._find(ex.group("id")).as_json())

    def create(self, ex: Exchange) -> Reply:
        self._gate(ex)
        user = self._writer(ex)
        params = self._params(ex)
        settings = self._settings.current
        content = params.get("content", "")
        if not content.strip():
            raise tl_error(8, "The content parameter is missing or empty.")
        if len(content) > settings.content_max:
            raise tl_error(8, f"The content is over {settings.content_max} characters.")
        reply_to_id = params.get("reply_to_id") or None
        reply_to_screen_name = params.get("reply_to_screen_name") or None
        if (reply_to_id is None) != (reply_to_screen_name is None):
            # "Both parameters are required to be accepted" (S23) [INF status]
            raise tl_error(8, "Send both reply_to_id and reply_to_screen_name, or neither.")
        with self._lock:
            post_id = _new_id()
            while post_id in self._posts:
                post_id = _new_id()
            post = Post(
                id=post_id,
                screen_name=user.screen_name,
                post_time=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self._ctx.clock.now())),
                content=content,
                tweet_content=tweet_content(
                    content, SHORT_URL.format(post_id), settings.tweet_limit
                ),
                reply_to_id=reply_to_id,
                reply_to_screen_name=reply_to_screen_name,
            )
            self._posts[post_id] = post
            return json_reply(200, post.as_json())

    def update(self, ex: Exchange) -> Reply:
        """Attach the tweet's id to the post (protocols.md 5); repeating it is harmless."""
        self._gate(ex)
        self._writer(ex)
        with self._lock:
            self._find(ex.group("id"))
        status_id = self._params(ex).get("twitter_status_id", "")
        if not DIGITS.fullmatch(status_id):
            raise tl_error(8, "twitter_status_id must be a tweet id (digits).")
        with self._lock:
            post = self._find(ex.group("id"))
            post.twitter_status_id = status_id
            post.puts += 1
            return json_reply(200, post.as_json())

    def no_such_endpoint(self, ex: Exchange) -> Reply:
        raise tl_error(2)

    def list_posts(self, ex: Exchange) -> Reply:
        with self._lock:
            posts = [{**post.as_json(), "puts": post.puts} for post in self._posts.values()]
        return json_reply(200, posts)

    # -- checks -------------------------------------------------------------------------

    def _gate(self, ex: Exchange) -> None:
        """Maintenance, then the application key: every request passes here."""
        settings = self._settings.current
        if settings.maintenance:
            raise tl_error(6)
        key = ex.header("X-API-KEY")
        if not key:
            raise tl_error(4)
        if key in settings.disabled_keys:
            raise tl_error(5)
        if key != TWITLONGER_API_KEY:
            raise tl_error(4)

    def _writer(self, ex: Exchange) -> TwitterUser:
        """The user behind a write's OAuth Echo. A rejected echo is 401 with the code
        Twitter gave the delegator (32, or 135 for a stale timestamp): TwitLonger documents
        none [INF] (protocols.md 5)."""
        provider, authorization = echo_headers(ex)
        if not provider or not provider_is(provider, (PROVIDER,)):
            raise tl_error(9)
        try:
            user = self._ctx.oauth.verify_echo(provider, authorization)
        except AuthError as exc:
            raise twitter_error(401, exc.code, exc.message) from None
        banned = {name.lower() for name in self._settings.current.banned_screen_names}
        if user.screen_name.lower() in banned:
            raise tl_error(7)
        return user

    def _params(self, ex: Exchange) -> dict[str, str]:
        """Form parameters (and the query); JSON only with `accept_json` [INF]."""
        if ex.content_type != "application/json":
            return {**ex.query, **dict(parse_qsl(ex.form_text(), keep_blank_values=True))}
        if not self._settings.current.accept_json:
            raise tl_error(8, "Send the parameters form-encoded, not as JSON.")
        try:
            found = json.loads(ex.body.read_all(FORM_MAX))
        except ValueError:
            raise tl_error(8, "The body is not valid JSON.") from None
        if not isinstance(found, dict):
            raise tl_error(8, "The JSON body must be an object of parameters.")
        params = {}
        for name, value in found.items():
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise tl_error(8, f"The parameter {name} must be a string.")
            params[name] = str(value)
        return {**ex.query, **params}

    def _find(self, post_id: str) -> Post:
        """The post (hold the lock); 404 code 3 when there is none."""
        post = self._posts.get(post_id)
        if post is None:
            raise tl_error(3)
        return post


def _new_id() -> str:
    """4 to 8 characters of [a-z0-9_], never starting with `_`."""
    length = 4 + secrets.randbelow(5)
    rest = "".join(secrets.choice(ID_ALPHABET) for _ in range(length - 1))
    return secrets.choice(ID_FIRST) + rest
