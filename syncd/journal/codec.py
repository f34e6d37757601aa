"""Rows in and out of a database, the same for every store: JSON columns, rows by column name."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime
from typing import Any, Protocol

from syncd.files import Identity
from syncd.journal.after import Action, HookEvent, HookRow
from syncd.journal.states import State
from syncd.journal.store import UNREADABLE, Delivery, Row

ACTION_COLUMNS = ", ".join(f.name for f in fields(Action))
HOOK_COLUMNS = "id, key, event, path, argv, env, timeout, state, error, at"


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
    )


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
