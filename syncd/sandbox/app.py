"""The request pipeline every emulator shares, and the list of emulators.

Each request is routed, recorded in the journal, exposed to a fault if one fires, counted
against its rate-limit group, handed to its handler, and its body is read to the end (so
the keep-alive connection can carry the next request); the reply gets the x-rate-limit-*
and x-response-time headers. Control API requests (`/_sandbox/...`) skip the journal,
faults and rate limits.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from syncd.sandbox.background import Background
from syncd.sandbox.context import Clock, Context, Service, Settings
from syncd.sandbox.control import control_routes
from syncd.sandbox.faults import Fault, Faults
from syncd.sandbox.hooks import HooksService
from syncd.sandbox.journal import Entry, Journal
from syncd.sandbox.oauth_check import OAuthVerifier
from syncd.sandbox.oneall import OneAllService
from syncd.sandbox.ratelimit import RateLimiter, RateState
from syncd.sandbox.ton import TonService
from syncd.sandbox.twitlonger import TwitLongerService
from syncd.sandbox.twitpic import TwitPicService
from syncd.sandbox.twitter import TwitterService
from syncd.sandbox.web import (
    ConnectionDropped,
    Exchange,
    HttpError,
    Reply,
    Route,
    Router,
    error_reply,
    twitter_error,
)

CONTROL_PREFIX = "/_sandbox/"
MOUNT = re.compile(r"/mnt/[A-Za-z0-9_.-]+(?=/)")
"""Every emulator is also served below `/mnt/NAME/`, as behind a proxy that strips a path
prefix (protocols.md 8: "path prefixes under a single port"): what it answers, Locations
included, stays relative to its own root, while signatures cover the URL as sent."""

SERVICES: tuple[Callable[[Context], Service], ...] = (
    TonService,
    TwitterService,
    TwitPicService,
    TwitLongerService,
    OneAllService,
    HooksService,
)
"""Every emulator; a new one is a module with a Service class, added here."""

log = logging.getLogger("syncd.sandbox")


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """The network between client and sandbox, as `{"link": {...}}` in the settings."""

    bytes_per_second: int = 0
    """Each connection's request bodies arrive at most this fast; 0: as fast as loopback."""


class App:
    def __init__(self, data_dir: Path, stopping: threading.Event) -> None:
        self._stopping = stopping
        self.clock = Clock()
        self.settings = Settings()
        self.link = self.settings.register("link", LinkSettings())
        self.oauth = OAuthVerifier(self.clock.oauth_now)
        self.journal = Journal()
        self.faults = Faults()
        self.rates = RateLimiter()
        self.background = Background()
        context = Context(self.clock, self.settings, self.oauth, data_dir, self.background)
        self.services = [make(context) for make in SERVICES]
        self.router = Router()
        self.router.add(control_routes(self))
        for service in self.services:
            self.router.add(service.routes())

    def reset(self) -> None:
        """Back to a fresh start: `POST /_sandbox/reset`."""
        self.background.cancel()
        self.faults.clear()
        for service in self.services:
            service.reset()
        self.journal.clear()
        self.settings.reset()
        self.clock.reset()
        self.oauth.reset()
        self.rates.reset()

    def pause(self, seconds: float) -> bool:
        """Wait `seconds`, unless the sandbox stops first (then True)."""
        return self._stopping.wait(seconds)

    def close(self) -> None:
        """The sandbox stops: cancel background work and wait for it."""
        self.background.cancel(close=True)

    def serve(self, ex: Exchange, send: Callable[[Reply], None]) -> None:
        """Answer `ex` through `send`. Raises ConnectionDropped when the connection must be
        reset instead (a fault, or a client that went away mid-body)."""
        if ex.path.startswith(CONTROL_PREFIX):
            found = self._resolve(ex)
            reply = found if isinstance(found, Reply) else self._call(found, ex)
            ex.body.drain()
            send(reply)
            return
        started = time.monotonic()
        entry = self.journal.begin(ex, self.clock.now())
        mounted = MOUNT.match(ex.path)
        if mounted:
            ex.path = ex.path[mounted.end() :]
        ex.body.on_received = lambda amount: self.journal.arrived(entry, amount, self.clock.now())
        status = None
        try:
            reply = self._serve(ex, entry)
            reply.headers["x-response-time"] = str(round((time.monotonic() - started) * 1000))
            send(reply)
            status = reply.status
        finally:
            Journal.finish(entry, ex, status, self.clock.now())

    def _serve(self, ex: Exchange, entry: Entry) -> Reply:
        fault = self.faults.take(ex.method, ex.path)
        if fault is not None:
            entry.fault = fault.id
            self._disturb(ex, fault)
        found = self._resolve(ex)
        rate: RateState | None = None
        allowed = True
        if isinstance(found, Route) and found.rate is not None:
            rate, allowed = self.rates.hit(found.rate.name, found.rate.limit(), self.clock.now())
        if fault is not None and fault.raw_reply is not None:
            reply = Reply(0, raw=fault.raw_reply)
        elif fault is not None and fault.status is not None:
            reply = fault.reply(ex.path, found.shape if isinstance(found, Route) else None)
            if fault.status == 429 and rate is not None:
                # An injected 429 looks like an exhausted window (protocols.md 8).
                wait = fault.retry_after
                reset = rate.reset if wait is None else self.clock.now() + wait
                rate = RateState(rate.limit, 0, reset)
        elif isinstance(found, Reply):
            reply = found
        elif not allowed:
            reply = twitter_error(429, 88, "Rate limit exceeded.").reply
        else:
            reply = self._call(found, ex)
        try:
            ex.body.drain()
        except ConnectionDropped:
            if reply.stream is not None:
                reply.stream.close()
            raise
        if rate is not None and reply.raw is None:
            reply.headers = {**rate.headers(), **reply.headers}
        if fault is not None and fault.trickle_ms is not None:
            reply.trickle_ms = fault.trickle_ms
        return reply

    def _disturb(self, ex: Exchange, fault: Fault) -> None:
        """The effects of a fault that come before any handling."""
        if fault.delay_ms:
            self._stopping.wait(fault.delay_ms / 1000)
        if fault.reset_connection:
            raise ConnectionDropped
        if fault.reset_after_bytes is not None:
            ex.body.drop_after = fault.reset_after_bytes

    def _resolve(self, ex: Exchange) -> Route | Reply:
        """The request's route, or the 404/405 reply when it has none."""
        try:
            found, ex.match = self.router.resolve(ex.method, ex.path)
        except HttpError as exc:
            return exc.reply
        return found

    @staticmethod
    def _call(found: Route, ex: Exchange) -> Reply:
        """Run a handler; an unexpected exception is a sandbox bug: 500, and logged."""
        try:
            return found.handler(ex)
        except HttpError as exc:
            return exc.reply
        except ConnectionDropped:
            raise
        except Exception:
            log.exception("sandbox bug handling %s %s", ex.method, ex.path)
            shape = found.shape or error_reply
            return shape(500, "The sandbox failed; see its log.", ex.path)
