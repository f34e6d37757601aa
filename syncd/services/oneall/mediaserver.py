"""The media server OneAll fetches files from, and where it posts video callbacks.

OneAll does not take the file: it downloads it from a URL we give (protocols.md 6.3/6.4).
So this serves exactly the files being pushed, each at a URL whose token names the
file's journal entry, the push (attempt) it was made for, what the URL is for, and an
expiry, signed with HMAC-SHA256 under a key kept 0600 in `state_dir` (so URLs stay valid
across restarts while a video waits). A request whose token is forged, expired, meant for
something else or for an earlier push is refused before the filesystem is touched; a file
that changed since it was hashed is never served.

It is the one part of syncd that faces the internet, so it runs on waitress: I/O on one
asyncore thread (an idle or trickling connection costs a socket, never a thread), the
application on a fixed pool of `THREADS`, request heads and bodies read whole and bounded
by waitress before the application sees them (so a refused request can never leave its
body on a keep-alive connection to be parsed as the next request), and every limit below.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer

from syncd.config import MediaServerConfig
from syncd.httpserver import WaitressServer
from syncd.services.oneall.mediaapp import Callback, Lookup, MediaApp
from syncd.services.oneall.signer import Signer

log = logging.getLogger(__name__)

THREADS = 4
"""Application threads: a media request holds one only while it opens the file and answers
headers (waitress sends the bytes from its I/O thread), a callback while it is stored."""
MAX_CONNECTIONS = 1000
"""Open connections at most; beyond this waitress stops accepting until some close."""
FD_RESERVE = 256
"""File descriptors kept for everything but the media server's connections (journal,
workers' files, sockets to the services): connections never starve the uploads."""
CHANNEL_TIMEOUT = 30
"""Seconds an idle connection (keep-alive between requests, or one that never speaks) lives."""
REQUEST_TIMEOUT = 30
"""Seconds from a request's first byte to its last (head and body): a client trickling a
byte a second is cut off here, not when the header size limit is finally reached."""
CLEANUP_INTERVAL = 1
"""How often the two timeouts above are enforced, in seconds."""
MAX_HEADER = 8 * 1024
"""Request line and headers, in bytes; more is answered 431 and the connection closed."""
MAX_BODY = 64 * 1024
"""Request body, in bytes (OneAll's callbacks are under 1 KiB); more is answered 413."""


class _Parser(HTTPRequestParser):  # type: ignore[misc]
    """Remembers when a request's first byte came, for REQUEST_TIMEOUT."""

    def __init__(self, adj: Any) -> None:
        super().__init__(adj)
        self.started = time.monotonic()


class _Channel(HTTPChannel):  # type: ignore[misc]
    parser_class = _Parser


class _Server(TcpWSGIServer):  # type: ignore[misc]
    """waitress closes idle connections itself; this also closes one whose request is
    still arriving after REQUEST_TIMEOUT (a slowloris), which waitress counts as active."""

    channel_class = _Channel

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        cutoff = time.monotonic() - REQUEST_TIMEOUT
        for channel in list(self.active_channels.values()):
            request = channel.request
            if request is not None and not channel.requests and request.started < cutoff:
                channel.will_close = True


def connection_budget() -> int:
    """MAX_CONNECTIONS, or fewer when the file descriptor limit cannot make room for them
    and FD_RESERVE: the soft limit is raised towards the hard one first (systemd's
    default soft limit is 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_CONNECTIONS + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (OSError, ValueError):
            log.debug("cannot raise the file descriptor limit above %d", soft)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    budget = max(16, min(MAX_CONNECTIONS, soft - FD_RESERVE))
    if budget < MAX_CONNECTIONS:
        log.warning(
            "media server: %d connections at most (the file descriptor limit is %d;"
            " raise LimitNOFILE= for %d)",
            budget,
            soft,
            MAX_CONNECTIONS,
        )
    return budget


class MediaServer(WaitressServer):
    @classmethod
    def configured(
        cls,
        config: MediaServerConfig,
        state_dir: Path,
        shared_key: Callable[[str, Callable[[], bytes]], bytes] | None,
        lookup: Lookup,
        callback: Callback,
    ) -> MediaServer:
        """With the signer its URLs need: in a fleet one key for every host (`shared_key`,
        kept in the journal), else one kept in `state_dir`."""
        url = config.public_url
        signer = (
            Signer.shared(shared_key, url)
            if shared_key is not None
            else Signer.from_state_dir(state_dir, url)
        )
        return cls(config.host, config.port, signer, lookup, callback)

    def __init__(
        self, host: str, port: int, signer: Signer, lookup: Lookup, callback: Callback
    ) -> None:
        self.signer = signer
        self.connection_limit = connection_budget()
        super().__init__(
            MediaApp(signer, lookup, callback),
            "mediaserver",
            f"[media_server] listen {host}:{port}",
            _Server,
            host=host,
            port=port,
            threads=THREADS,
            connection_limit=self.connection_limit,
            channel_timeout=CHANNEL_TIMEOUT,
            cleanup_interval=CLEANUP_INTERVAL,
            max_request_header_size=MAX_HEADER,
            max_request_body_size=MAX_BODY,
            asyncore_use_poll=True,  # select() cannot watch descriptors above 1023
            ident="syncd-media",
        )
