"""The two Twitter v1.1 endpoints syncd needs: verify_credentials and statuses/update.

verify_credentials is what OAuth Echo delegators (TwitPic, TwitLonger) call; the other
emulators verify Echo headers offline with `OAuthVerifier.verify_echo` instead.
statuses/update follows protocols.md 7 and the "Twitter statuses/update emulator" of 8.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from syncd.sandbox.context import Context
from syncd.sandbox.credentials import TwitterUser
from syncd.sandbox.web import Exchange, RateGroup, Reply, Route, json_reply, route, twitter_error

TWITTER_EPOCH_MS = 1288834974657
"""Snowflake ids count milliseconds from here, so they exceed 2**53 as real ones do."""


@dataclass(frozen=True, slots=True)
class TwitterSettings:
    max_status_length: int = 280
    """A longer status is refused with 403 code 186 (a simple character count)."""
    rate_limit: int = 300
    """Requests per 15-minute window, per endpoint."""

    def __post_init__(self) -> None:
        if self.max_status_length < 1 or self.rate_limit < 1:
            raise ValueError("max_status_length and rate_limit must be positive")


def user_json(user: TwitterUser) -> dict[str, Any]:
    return {
        "id": int(user.id),
        "id_str": user.id,
        "screen_name": user.screen_name,
        "name": user.name,
    }


class TwitterService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._settings = ctx.settings.register("twitter", TwitterSettings())
        self._lock = threading.Lock()
        self._statuses: list[dict[str, Any]] = []
        self._last_text: dict[str, str] = {}
        self._last_id = 0

    def routes(self) -> Iterable[Route]:
        def rate(name: str) -> RateGroup:
            return RateGroup(name, lambda: self._settings.current.rate_limit)

        yield route(
            "GET",
            r"/1\.1/account/verify_credentials\.json",
            self.verify_credentials,
            rate("account/verify_credentials"),
        )
        yield route("POST", r"/1\.1/statuses/update\.json", self.update, rate("statuses/update"))
        yield route("GET", "/_sandbox/twitter/statuses", self.list_statuses)

    def reset(self) -> None:
        with self._lock:
            self._statuses.clear()
            self._last_text.clear()

    def verify_credentials(self, ex: Exchange) -> Reply:
        """The user, with their most recent tweet as `status`, as Twitter answers unless
        `skip_status=true`: how a client learns whether its last, unanswered tweet landed."""
        user = self._ctx.oauth.authenticate(ex)
        reply = user_json(user)
        if ex.param("skip_status") not in ("true", "1", "t"):
            with self._lock:
                mine = [s for s in self._statuses if s["user"]["id_str"] == user.id]
            if mine:
                reply["status"] = {k: v for k, v in mine[-1].items() if k != "user"}
        return json_reply(200, reply)

    def update(self, ex: Exchange) -> Reply:
        """Post a tweet; the form body is part of the signature (protocols.md 1, 7)."""
        user = self._ctx.oauth.authenticate(ex)
        text = ex.param("status")
        if not text:
            raise twitter_error(400, 38, "status parameter is missing.")
        if len(text) > self._settings.current.max_status_length:
            raise twitter_error(403, 186, "Tweet needs to be a bit shorter.")
        reply_to = ex.param("in_reply_to_status_id") or ""
        reply_to_id = reply_to if reply_to.isdigit() else None
        with self._lock:
            if self._last_text.get(user.id) == text:
                raise twitter_error(403, 187, "Status is a duplicate.")
            tweet_id = self._next_id()
            now = self._ctx.clock.now()
            tweet = {
                "id": tweet_id,
                "id_str": str(tweet_id),
                "text": text,
                "created_at": time.strftime("%a %b %d %H:%M:%S +0000 %Y", time.gmtime(now)),
                "in_reply_to_status_id": int(reply_to_id) if reply_to_id else None,
                "in_reply_to_status_id_str": reply_to_id,
                "user": user_json(user),
            }
            self._statuses.append(tweet)
            self._last_text[user.id] = text
        return json_reply(200, tweet)

    def list_statuses(self, ex: Exchange) -> Reply:
        with self._lock:
            return json_reply(200, list(self._statuses))

    def _next_id(self) -> int:
        """A snowflake-like id: increasing, and too big for a JavaScript double."""
        millis = int(self._ctx.clock.now() * 1000) - TWITTER_EPOCH_MS
        self._last_id = max(self._last_id + 1, millis << 22)
        return self._last_id
