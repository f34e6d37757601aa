"""Fault injection: `POST /_sandbox/faults` rules that make matching requests fail.

The kinds are those of protocols.md 8: an error status (429 with Retry-After and the rate
limit headers, 5xx), a delay, a reset before any response, and a reset after part of the
body (TON then keeps what its `partial_chunk` setting says). Two more play a hostile or
broken server: `raw_reply` (base64) is written verbatim as the whole answer, whatever it
is, and the connection closed; `trickle_ms` writes the answer (the route's own, a status
fault's or a raw one) one byte every that many milliseconds. A rule matches on method and
a regex searched in the path, fires with an optional probability, and is used up after
`count` firings. Control API paths are never faulted.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import random
import re
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from syncd.sandbox.web import ErrorShape, Reply, error, twitter_error

ACTIONS = ("status", "delay_ms", "reset_connection", "reset_after_bytes", "raw_reply", "trickle_ms")
TRICKLED = ("status", "raw_reply")
"""The actions `trickle_ms` may go with (alone, it slows the route's own answer)."""
TWITTER_CODES = {
    429: (88, "Rate limit exceeded."),
    500: (131, "Internal error."),
    503: (130, "Over capacity."),
}
"""Twitter's documented codes for the statuses a fault most often injects (protocols.md 7)."""


@dataclass(slots=True)
class Fault:
    id: int
    method: str | None
    path: re.Pattern[str] | None
    count: int
    """Firings left."""
    probability: float | None
    status: int | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    delay_ms: int | None = None
    reset_connection: bool = False
    reset_after_bytes: int | None = None
    raw_reply: bytes | None = None
    trickle_ms: int | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or self.path.search(path) is not None
        )

    def reply(self, path: str, shape: ErrorShape | None = None) -> Reply:
        """The response of a status fault: the given body, else the error shape of the
        service owning `path` (Twitter's when it names none)."""
        assert self.status is not None
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        if self.body is not None:
            plain = {"Content-Type": "text/plain; charset=utf-8"}
            reply = Reply(self.status, plain, self.body.encode())
        elif shape is not None:
            reply = shape(self.status, phrase, path)
        elif self.status in TWITTER_CODES:
            reply = twitter_error(self.status, *TWITTER_CODES[self.status]).reply
        else:
            reply = error(self.status, phrase).reply
        if self.retry_after is not None:
            reply.headers["Retry-After"] = f"{self.retry_after:g}"
        reply.headers.update(self.headers)
        return reply

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id,
            "method": self.method,
            "path": self.path.pattern if self.path else None,
            "count": self.count,
            "probability": self.probability,
        }
        for key in ("status", "retry_after", "body", "delay_ms", "reset_after_bytes", "trickle_ms"):
            if getattr(self, key) is not None:
                shown[key] = getattr(self, key)
        if self.raw_reply is not None:
            shown["raw_reply"] = base64.b64encode(self.raw_reply).decode()
        if self.headers:
            shown["headers"] = self.headers
        if self.reset_connection:
            shown["reset_connection"] = True
        return shown


def _number(spec: dict[str, Any], key: str, low: float, *, integer: bool = True) -> Any:
    """`spec[key]` checked to be a number (an integer when `integer`) >= low, or None."""
    value = spec.get(key)
    if value is None:
        return None
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < low:
        raise ValueError(f"{key} must be {'an integer' if integer else 'a number'} >= {low:g}")
    return value


def parse_fault(fault_id: int, spec: object) -> Fault:
    """A fault from its JSON; ValueError says what is wrong with it."""
    if not isinstance(spec, dict):
        raise ValueError("a fault must be a JSON object")
    known = {"method", "path", "count", "probability", "retry_after", "headers", "body", *ACTIONS}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"unknown fault keys: {', '.join(unknown)}")
    actions = [key for key in ACTIONS if spec.get(key) is not None and spec[key] is not False]
    paired = len(actions) == 2 and "trickle_ms" in actions and actions[0] in TRICKLED
    if len(actions) != 1 and not paired:
        raise ValueError(
            f"a fault needs exactly one of: {', '.join(ACTIONS)} (trickle_ms may go with"
            f" {' or '.join(TRICKLED)})"
        )
    if "status" not in actions and any(k in spec for k in ("retry_after", "headers", "body")):
        raise ValueError("retry_after, headers and body go with status")
    method, path, headers, body = (spec.get(k) for k in ("method", "path", "headers", "body"))
    if method is not None and not isinstance(method, str):
        raise ValueError("method must be a string")
    if path is not None and not isinstance(path, str):
        raise ValueError("path must be a regex string")
    if headers is not None and not (
        isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
    ):
        raise ValueError("headers must be an object of strings")
    if body is not None and not isinstance(body, str):
        raise ValueError("body must be a string")
    status = _number(spec, "status", 100)
    if status is not None and status > 599:
        raise ValueError("status must be an HTTP status")
    probability = _number(spec, "probability", 0, integer=False)
    if probability is not None and probability > 1:
        raise ValueError("probability must be between 0 and 1")
    if spec.get("reset_connection") not in (None, False, True):
        raise ValueError("reset_connection must be true")
    try:
        pattern = re.compile(path) if path is not None else None
    except re.error as exc:
        raise ValueError(f"path is not a regex: {exc}") from None
    raw = spec.get("raw_reply")
    if raw is not None:
        try:
            raw = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
        except (binascii.Error, ValueError):
            raw = None
        if raw is None:
            raise ValueError("raw_reply must be base64 text")
    return Fault(
        id=fault_id,
        method=method.upper() if method else None,
        path=pattern,
        count=_number(spec, "count", 1) or 1,
        probability=probability,
        status=status,
        retry_after=_number(spec, "retry_after", 0, integer=False),
        headers=headers or {},
        body=body,
        delay_ms=_number(spec, "delay_ms", 0),
        reset_connection=spec.get("reset_connection") is True,
        reset_after_bytes=_number(spec, "reset_after_bytes", 0),
        raw_reply=raw,
        trickle_ms=_number(spec, "trickle_ms", 1),
    )


class Faults:
    """The active rules, first added first tried."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, spec: object) -> Fault:
        with self._lock:
            fault = parse_fault(next(self._ids), spec)
            self._faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """The fault that fires for this request, if any, with one firing used up."""
        with self._lock:
            for fault in self._faults:
                if not fault.matches(method, path):
                    continue
                if fault.probability is not None and random.random() >= fault.probability:
                    continue
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.as_dict() for fault in self._faults]
