"""Rows in and out of a database, the same for every store: JSON columns, rows by column name."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from syncd.files import Identity
from syncd.journal.after import Action, HookEvent, HookRow
from syncd.journal.states import State
from syncd.journal.store import UNREADABLE, Delivery, Row, ServiceEvent

ACTION_COLUMNS = ", ".join(f.name for f in fields(Action))
HOOK_COLUMNS = "id, key, event, path, argv, env, timeout, state, error, at"


def new_event_id() -> str:
    """A webhook event's id, what receivers dedup on: a random UUID (version 4), made from
    os.urandom as `uuid.uuid4` makes it. Not through `uuid`: its import (it loads
    `platform`) would cost every start, and put off to the first event it can meet a
    shortage of descriptors, the very moment a `degraded` event is announced."""
    bits = int.from_bytes(os.urandom(16), "big") & ~(0xC000 << 48 | 0xF000 << 64)
    text = f"{bits | 0x8000 << 48 | 0x4000 << 64:032x}"  # the RFC 4122 variant, version 4
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def storable(text: str) -> str:
    """Text every journal can keep (UTF-8): a file name's stray bytes, which os.fsdecode
    turns into lone surrogates, as `\\xNN` (as webhooks and status show them)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no file name makes
        return text.encode("utf-8", "backslashreplace").decode()
    return raw.decode("utf-8", "backslashreplace")


def encode(value: Any) -> str:
    """JSON for `progress` and `result`; a datetime survives the round trip."""

    def default(obj: object) -> object:
        if isinstance(obj, datetime):
            return {"$datetime": obj.isoformat()}
        raise TypeError(f"cannot journal {type(obj).__name__}")

    return json.dumps(value, default=default)


def decode(text: str | None) -> Any:
    if text is None:
        return None

    def hook(obj: dict[str, Any]) -> Any:
        if obj.keys() == {"$datetime"}:
            return datetime.fromisoformat(obj["$datetime"])
        return obj

    return json.loads(text, object_hook=hook)


class Columns(Protocol):
    """A database row read by column name (sqlite3.Row, a psycopg dict row, ...)."""

    def __getitem__(self, name: str, /) -> Any: ...


def _json_column(columns: Columns, name: str) -> tuple[dict[str, Any] | None, bool]:
    """A JSON object column's value, and whether it could be read (damaged text, by hand or
    by disk, must cost its row, never the loop that reads it)."""
    try:
        value = decode(columns[name])
    except (ValueError, TypeError, RecursionError):
        return None, False
    return (value, True) if value is None or isinstance(value, dict) else (None, False)


def row_from(columns: Columns) -> Row:
    """A Row from a database row read by column name (`SELECT *` of `files`). A row whose
    progress or result cannot be read says so in its progress, under UNREADABLE."""
    progress, progress_ok = _json_column(columns, "progress")
    result, result_ok = _json_column(columns, "result")
    damaged = [name for name, ok in (("progress", progress_ok), ("result", result_ok)) if not ok]
    if damaged:
        progress = {UNREADABLE: damaged}
    return Row(
        id=columns["id"],
        path=bytes(columns["path"]),
        service=columns["service"],
        state=State(columns["state"]),
        version=columns["version"],
        identity=Identity(columns["dev"], columns["inode"], columns["size"], columns["mtime_ns"]),
        sha256=columns["sha256"],
        attempts=columns["attempts"],
        due=columns["due"],
        error=columns["error"],
        error_at=columns["error_at"],
        progress=progress or {},
        result=result,
        duplicate_of=None if columns["duplicate_of"] is None else bytes(columns["duplicate_of"]),
        uploaded_at=columns["uploaded_at"],
        uploaded_sha256=columns["uploaded_sha256"],
        fence=columns["claim_fence"],
        queued_at=columns["queued_at"],
    )


def delivery_from(columns: Columns) -> Delivery:
    """A Delivery from a `SELECT *` of `outbox`."""
    return Delivery(
        seq=columns["seq"],
        event_id=columns["event_id"],
        target=columns["target"],
        event=columns["event"],
        at=columns["at"],
        path=bytes(columns["path"]),
        service=columns["service"],
        sha256=columns["sha256"],
        size=columns["size"],
        result=decode(columns["result"]),
        error=columns["error"],
        attempts=columns["attempts"],
        due=columns["due"],
        last_error=columns["last_error"],
        detail=decode(columns["detail"]),
    )


ONCE_KEPT = 8 * 86400.0
"""How long an event's `once` key is kept: longer than the quota day it stands for."""


def event_values(event: ServiceEvent, targets: tuple[str, ...]) -> list[dict[str, Any]]:
    """A service-level event's outbox rows (named placeholders), one per receiver: the file
    columns empty (path, size 0; service '' when it names none), its own fields in detail."""
    return [
        {
            "id": event.event_id,
            "target": target,
            "event": event.event,
            "at": event.at,
            "service": event.service or "",
            "detail": encode(event.detail or {}),
        }
        for target in targets
    ]


@dataclass(frozen=True, slots=True)
class EmitStatements:
    """A store's SQL for `emit`, parameters as `emit_rows` passes them."""

    prune: str
    """Delete the once keys older than (at,)."""
    take_key: str
    """Insert (key, at) unless the key is there; its rowcount says whether it was not."""
    insert: str
    """One outbox row, from `event_values`' named placeholders."""


def emit_rows(
    execute: Callable[[str, Any], Any],
    executemany: Callable[[str, list[dict[str, Any]]], Any],
    statements: EmitStatements,
    event: ServiceEvent,
    targets: tuple[str, ...],
) -> bool:
    """Outbox.emit inside the store's transaction: the rows, unless the once key was taken."""
    if event.once is not None:
        execute(statements.prune, (event.at - ONCE_KEPT,))
        if not execute(statements.take_key, (event.once, event.at)).rowcount:
            return False
    executemany(statements.insert, event_values(event, targets))
    return True


def action_from(columns: Columns) -> Action:
    """An Action from a select of ACTION_COLUMNS."""
    values = {f.name: columns[f.name] for f in fields(Action)}
    for name in ("source", "target", "root"):
        values[name] = None if values[name] is None else bytes(values[name])
    return Action(**{**values, "result": decode(values["result"])})


def hook_from(columns: Columns) -> HookRow:
    """A HookRow from a select of HOOK_COLUMNS."""
    event = HookEvent(
        key=columns["key"],
        event=columns["event"],
        path=bytes(columns["path"]),
        argv=tuple(json.loads(columns["argv"])),
        env=json.loads(columns["env"]),
        timeout=columns["timeout"],
    )
    return HookRow(
        id=columns["id"],
        event=event,
        state=columns["state"],
        error=columns["error"],
        at=columns["at"],
    )


def hook_values(hook: HookEvent, now: float) -> dict[str, Any]:
    """A hook's columns for its INSERT (named placeholders), as it is enqueued at `now`."""
    return {
        "key": hook.key,
        "event": hook.event,
        "path": hook.path,
        "argv": json.dumps(hook.argv),
        "env": json.dumps(hook.env),
        "timeout": hook.timeout,
        "at": now,
    }
