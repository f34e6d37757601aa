"""TwitLonger v2: a text file becomes a post, then a tweet, then the tweet is linked back.

Three steps (protocols.md sections 5 and 7), each result committed before the next, so a
crash or a failure resumes at the next step and never creates a second post or tweet:

    POST /2/posts            -> the post (id, short_url, tweet_content, ...)
    POST statuses/update     -> the tweet's id_str          (when `tweet` is on)
    PUT  /2/posts/{id}       -> twitter_status_id attached

The file is checked before any request: UTF-8, non-empty, and its optional `+++` TOML
front matter (`reply_to_id`, `reply_to_screen_name` - both or neither - and `tweet`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from syncd.config import TwitLongerService
from syncd.errors import PermanentError
from syncd.services.base import Interrupted, Job, Result
from syncd.services.http import (
    HttpLimits,
    Reply,
    RequestObserver,
    ServiceHttp,
    dig,
    one_line,
    prose_of,
    raise_for,
    text_of,
)
from syncd.services.oauth import echo_headers, user_auth

MAX_TEXT = 1024 * 1024
FENCE = "+++"
FRONT_MATTER_KEYS = {"reply_to_id", "reply_to_screen_name", "tweet"}
POST_FIELDS = ("id", "short_url", "full_url", "tweet_content")
READERS = {"tweet_content": prose_of}
"""Text for people, with its lines; every other field is an id or a URL (`text_of`)."""
MAX_FIELD = 4096
"""A post field longer than this is not taken from a reply (tweet_content is under 280)."""

ERROR_CODES = {
    1: "the method is not implemented for this endpoint",
    2: "the endpoint does not exist in this API version",
    3: "no post with that id",
    4: "the X-API-KEY is missing or not recognised (check api_key)",
    5: "the application is disabled or blocked",
    6: "the method is temporarily unavailable (maintenance)",
    7: "the user is banned from TwitLonger",
    8: "required parameters are missing or empty",
    9: "the X-Auth-Service-Provider URL is not accepted (check verify_credentials_url)",
}
"""TwitLonger's documented error codes (protocols.md section 5), in words."""
DUPLICATE_TWEET = 187
TWEET_MAX = 280
"""Characters a tweet holds (Twitter weighs some double; TwitLonger cuts to fit this)."""
CONTINUED = " (cont) "
NO_SUCH_ENDPOINT = (400, 404, 405, 410, 501)
"""How a server without an endpoint may answer a request for it."""


def fitted(tweet_content: str, short_url: str) -> str:
    """`tweet_content` as TwitLonger sent it when it fits a tweet; else its text cut so that
    text + " (cont) " + the post's link does (protocols.md 5: "still check its length
    before tweeting, and keep the tl.gd link in it")."""
    if len(tweet_content) <= TWEET_MAX:
        return tweet_content
    link = CONTINUED + short_url
    text = tweet_content.removesuffix(link).removesuffix(short_url)
    return text[: max(0, TWEET_MAX - len(link))].rstrip() + link


def _first_error(reply: Reply) -> tuple[object, str] | None:
    errors = dig(reply.json(), "errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None
    message = errors[0].get("message")
    return errors[0].get("code"), one_line(message) if isinstance(message, str) else ""


def explain_twitlonger(reply: Reply) -> str | None:
    """TwitLonger's documented error codes as reasons a person can act on."""
    found = _first_error(reply)
    if found is None:
        return None
    code, message = found
    if isinstance(code, bool) or not isinstance(code, int) or code not in ERROR_CODES:
        return None
    return f"{ERROR_CODES[code]} (code {code}: {message})"


def explain_twitter(reply: Reply) -> str | None:
    """A first attempt refused as a duplicate: the account's last tweet has this text
    (a retried one is taken as posted, see `_tweet`)."""
    found = _first_error(reply)
    if found is None or found[0] != DUPLICATE_TWEET:
        return None
    return (
        "Twitter refused the tweet as a duplicate of the account's last one (code 187);"
        " the post is not linked to a tweet"
    )


@dataclass(frozen=True, slots=True)
class Post:
    content: str
    reply_to_id: str | None
    reply_to_screen_name: str | None
    tweet: bool | None


def parse_post(raw: bytes, name: str) -> Post:
    """The post a text file asks for; PermanentError says what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    meta: dict[str, Any] = {}
    lines = text.split("\n")
    if lines and lines[0].strip() == FENCE:
        try:
            end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == FENCE)
        except StopIteration:
            raise PermanentError(f"{name}: front matter opened with +++ is never closed") from None
        try:
            meta = tomllib.loads("\n".join(lines[1:end]))
        except (ValueError, RecursionError) as exc:  # TOMLDecodeError, a 5000-digit number, [[[…
            why = "nested too deeply" if isinstance(exc, RecursionError) else exc
            raise PermanentError(f"{name}: front matter is not valid TOML: {why}") from None
        lines = lines[end + 1 :]
        unknown = set(meta) - FRONT_MATTER_KEYS
        if unknown:
            raise PermanentError(f"{name}: unknown front matter key {sorted(unknown)[0]!r}")
    while lines and not lines[0].strip():
        lines = lines[1:]
    content = "\n".join(lines).rstrip()
    if not content:
        raise PermanentError(f"{name}: the post is empty")
    reply_to_id = meta.get("reply_to_id")
    screen_name = meta.get("reply_to_screen_name")
    if (reply_to_id is None) != (screen_name is None):
        raise PermanentError(
            f"{name}: front matter needs both reply_to_id and reply_to_screen_name, or neither"
        )
    if reply_to_id is not None and not isinstance(reply_to_id, int | str):
        raise PermanentError(f"{name}: reply_to_id must be a string or an integer")
    if screen_name is not None and not isinstance(screen_name, str):
        raise PermanentError(f"{name}: reply_to_screen_name must be a string")
    tweet = meta.get("tweet")
    if tweet is not None and not isinstance(tweet, bool):
        raise PermanentError(f"{name}: tweet must be true or false")
    return Post(
        content=content,
        reply_to_id=None if reply_to_id is None else str(reply_to_id),
        reply_to_screen_name=screen_name,
        tweet=tweet,
    )


class TwitLongerUploader:
    def __init__(
        self,
        config: TwitLongerService,
        limits: HttpLimits | None = None,
        observe: RequestObserver | None = None,
    ) -> None:
        self.config = config
        self.http = ServiceHttp(config.name, explain_twitlonger, limits, observe)
        self.twitter = ServiceHttp(config.name, explain_twitter, limits, observe)
        self.posts_url = f"{config.endpoint}/2/posts"
        self.auth = user_auth(config.account)

    def still_valid(self, result: Result) -> bool:
        return True

    def _headers(self) -> dict[str, str]:
        return {
            "X-API-KEY": self.config.api_key,
            **echo_headers(self.config.account, self.config.verify_credentials_url),
        }

    def upload(self, job: Job) -> Result:
        job.file.seek(0)
        raw = job.file.read(MAX_TEXT + 1)
        if len(raw) > MAX_TEXT:
            raise PermanentError(f"{job.path.name}: larger than 1 MiB, too long for a post")
        post = parse_post(raw, job.path.name)
        steps = job.store.load()
        if "post" not in steps:
            steps["post"] = self._create(post)
            job.store.save(steps)
        created: dict[str, Any] = steps["post"]
        result: Result = {key: created.get(key) for key in POST_FIELDS}
        tweeting = self.config.tweet if post.tweet is None else post.tweet
        if not tweeting:
            return result
        if job.stopping.is_set():
            raise Interrupted
        if "tweet_id" not in steps:
            content = fitted(str(created["tweet_content"]), str(created.get("short_url") or ""))
            # An attempt that died after sending the tweet may have posted it: ask Twitter
            # for the account's latest tweet before sending a second one.
            retry = bool(steps.get("tweet_sent"))
            found = self._latest_tweet_with(content) if retry else None
            if found is None:
                steps["tweet_sent"] = True
                job.store.save(steps)
                found = self._tweet(content, post.reply_to_id, retry)
            steps["tweet_id"] = found
            job.store.save(steps)
        if steps["tweet_id"] is None:
            return result  # tweeted by an earlier attempt, its id unknown: nothing to link
        self.http.send(
            "PUT",
            f"{self.posts_url}/{quote(str(created['id']), safe='')}",
            expect=(200,),
            headers=self._headers(),
            data={"twitter_status_id": steps["tweet_id"]},
        )
        result["twitter_status_id"] = steps["tweet_id"]
        return result

    def _create(self, post: Post) -> dict[str, Any]:
        form = {"content": post.content}
        if post.reply_to_id is not None and post.reply_to_screen_name is not None:
            form["reply_to_id"] = post.reply_to_id
            form["reply_to_screen_name"] = post.reply_to_screen_name
        reply = self.http.send(
            "POST", self.posts_url, expect=(200,), headers=self._headers(), data=form
        )
        data = reply.json()
        created = {key: READERS.get(key, text_of)(dig(data, key), MAX_FIELD) for key in POST_FIELDS}
        if created["id"] is None or created["tweet_content"] is None:
            raise PermanentError(f"{self.config.name}: TwitLonger answered without a post id")
        return created

    def _latest_tweet_with(self, text: str) -> str | None:
        """The id of the account's most recent tweet if its text is `text`; None also when
        the server has no verify_credentials to ask (a Twitter-compatible service need only
        offer statuses/update, protocols.md 8): the tweet is then sent again, and a
        duplicate is refused by Twitter (code 187) rather than posted twice."""
        reply = self.twitter.send(
            "GET",
            f"{self.config.twitter_endpoint}/1.1/account/verify_credentials.json",
            expect=(200, *NO_SUCH_ENDPOINT),
            auth=self.auth,
        )
        if reply.status != 200:
            return None
        data = reply.json()
        if dig(data, "status", "text") != text:
            return None
        return text_of(dig(data, "status", "id_str"))

    def _tweet(self, status: str, reply_to_id: str | None, retry: bool) -> str | None:
        """The tweet's id_str; None when, on a `retry`, Twitter refuses it as a duplicate
        (code 187): "the first attempt probably succeeded" (protocols.md 7), so it is out."""
        form = {"status": status}
        if reply_to_id is not None:
            form["in_reply_to_status_id"] = reply_to_id
        reply = self.twitter.send(
            "POST",
            f"{self.config.twitter_endpoint}/1.1/statuses/update.json",
            expect=(200, 403) if retry else (200,),
            auth=self.auth,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            data=form,
        )
        if reply.status == 403:
            found = _first_error(reply)
            if found is not None and found[0] == DUPLICATE_TWEET:
                return None
            raise_for(self.config.name, reply, explain_twitter)
        tweet_id = text_of(dig(reply.json(), "id_str"))
        if tweet_id is None:
            raise PermanentError(f"{self.config.name}: Twitter answered without the tweet's id_str")
        return tweet_id
