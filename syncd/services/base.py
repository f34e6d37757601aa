"""What a service module is given and what it gives back.

A service knows nothing of the journal, the watcher or the CLI: it gets an open file with
its size and hash, a progress callback and a small durable store for work done in steps,
and returns the result the sidecar records, or raises RetryableError / PermanentError.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path
from typing import Any, Protocol


class StopFlag(Protocol):
    """Whether a service working in steps should stop before its next step: a
    threading.Event, or one that also asks flow control and the journal."""

    def is_set(self) -> bool: ...


class StepStore(Protocol):
    """Durable progress of one file's upload; `save` has committed when it returns."""

    def load(self) -> dict[str, Any]: ...

    def save(self, progress: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class Job:
    """One upload, as a service module gets it: no journal, no paths to reopen."""

    path: Path
    file: BufferedReader
    """Open for reading at offset 0; the service may seek."""
    size: int
    sha256: str
    media_type: str
    caption: str | None
    """From NAME.caption beside the file, when there is one."""
    store: StepStore
    progress: Callable[[int], None]
    """Bytes the server has confirmed (or sent, for a single request)."""
    stopping: StopFlag = field(default_factory=threading.Event)
    """Set on shutdown, when the service is paused, or once this host's claim on the file is
    lost (fleet mode): a service working in steps stops between two of them."""
    row_id: int = 0
    """The journal's id of this file, for URLs that must name it (OneAll's media server)."""


@dataclass(frozen=True, slots=True)
class AwaitCallback:
    """The service will report the result later (OneAll video); wait until `deadline`."""

    deadline: float


Result = dict[str, Any]
"""What goes into the sidecar's [result] table, spelled as the service spells it."""


REQUEST_TIMEOUT = 120.0
"""An exchange's total time, before its body's share (see http.FLOOR_RATE); `[daemon]
request_timeout` sets it."""
MAX_RETRY_AFTER = 3600.0
"""The longest wait a server's Retry-After or x-rate-limit-reset can impose; `[daemon]
max_retry_after` sets it."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The daemon-wide limits of every exchange (from `[daemon]`). Here, not in http.py,
    so that the daemon names them without loading urllib3 at start."""

    request_timeout: float = REQUEST_TIMEOUT
    max_retry_after: float = MAX_RETRY_AFTER


Sign = Callable[[str, str, str | None], str]
"""The Authorization header of one attempt at a request: (method, URL, the body when it is a
form, which OAuth signs). Called for every attempt, so that no OAuth nonce is sent twice."""

RequestObserver = Callable[[str, str], None]
"""Told (service, code) after every exchange: the HTTP status, or http.NO_REPLY."""


class Uploader(Protocol):
    def upload(self, job: Job) -> Result | AwaitCallback: ...

    def still_valid(self, result: Result) -> bool:
        """Whether an earlier upload's result can stand for a duplicate's now."""
        ...


class Interrupted(Exception):
    """Raised by a service that stopped between steps because `stopping` was set."""
