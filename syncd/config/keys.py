"""How each key is read, whichever table it is in (`_READERS`), and a table read into its
dataclass: adding a key is a dataclass field (model.py) and a reader here."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, fields
from typing import TYPE_CHECKING, Any, TypeVar

from syncd.config.model import DAY, TON_MAX_SINGLE, WEBHOOK_EVENTS
from syncd.config.table import Table
from syncd.config.values import (
    boolean,
    integer,
    parse_duration,
    parse_schedule,
    parse_size,
    parse_time_of_day,
    parse_url,
    string,
    strings,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")

LOG_LEVELS = ("debug", "info", "warning", "error")
AFTER_UPLOAD = ("keep", "archive", "delete")
ORDERS = ("oldest", "newest", "smallest", "largest", "name")
MAX_WORKERS = 256
"""A thread each: far more than any uplink wants in flight, far fewer than a system allows."""
MIN_POLL_INTERVAL = 30.0
"""Polling faster than this costs more than the network filesystems it is meant for."""
MIN_FLEET_POLL_INTERVAL = 1.0
"""In fleet mode polling is how a host sees the others' files, so it may be much faster."""
CREDENTIALS = frozenset({"consumer_key", "consumer_secret", "access_token", "access_token_secret"})
CREDENTIALS |= {"api_key", "public_key", "private_key", "identity_token", "secret"}
"""Keys that may instead be given as `KEY_file = "path"` (e.g. systemd's LoadCredential=)."""


_Reader = Callable[[Table, str], object]


def _value(
    parse: Callable[[object], Any], ok: Callable[[Any], bool] = lambda _: True, why: str = ""
) -> _Reader:
    """A reader for a plain value; `why` it is refused unless `ok`."""

    def read(table: Table, key: str) -> object:
        value = table.get(key, parse)
        if value is not None and not ok(value):
            raise table.error(key, why)
        return value

    return read


def _name_in(section: str, resolve: bool) -> _Reader:
    """A reader for a key that names a `[section.NAME]` table; `resolve` returns that table."""

    def read(table: Table, key: str) -> object:
        name, named = table.get(key, string), table.src.named[section]
        if name is not None and name not in named:
            raise table.error(key, f"no [{section}.{name}] table")
        return named[name] if resolve and name is not None else name

    return read


def _poll_interval(table: Table, key: str) -> float | None:
    least, said = (MIN_FLEET_POLL_INTERVAL, "1s") if table.src.fleet else (MIN_POLL_INTERVAL, "30s")
    value = table.get(key, parse_duration)
    if value is not None and 0 < value < least:
        raise table.error(key, f"must be 0 (inotify) or >= {said}")
    return value


def _command(table: Table, key: str) -> tuple[str, ...] | None:
    """A hook's argv; what could never run is refused now, not logged at every file. A
    program named without a folder is looked up in $PATH when it runs (the unit's, maybe)."""
    argv = table.get(key, strings)
    if argv:
        program = argv[0]
        if not program:
            raise table.error(key, "the program (the first item) is empty")
        if os.path.isabs(program) and not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise table.error(key, f"{program} is not an executable file")
    return argv


_READERS: dict[str, _Reader] = {
    # [daemon]
    "state_dir": Table.path,
    "status_socket": Table.path,
    "workers": _value(integer, lambda n: 1 <= n <= MAX_WORKERS, f"must be 1 to {MAX_WORKERS}"),
    "settle_seconds": _value(parse_duration),
    "status_group": _value(string),
    "log_level": _value(string, lambda s: s in LOG_LEVELS, "must be debug, info, warning or error"),
    "one_cpu": _value(boolean),
    "rescan_interval": _value(parse_duration),
    "request_timeout": _value(parse_duration, lambda s: s >= 1, "must be at least 1s"),
    "max_retry_after": _value(parse_duration, lambda s: s >= 1, "must be at least 1s"),
    "healthcheck_url": _value(parse_url),
    "healthcheck_interval": _value(parse_duration, lambda s: s > 0, "must be more than 0"),
    "bandwidth": _value(parse_size),
    "bandwidth_schedule": _value(parse_schedule),
    # [accounts.*] and [services.*]
    **dict.fromkeys(CREDENTIALS, Table.credential),
    "account": _name_in("accounts", resolve=True),
    "endpoint": _value(parse_url),
    "verify_credentials_url": _value(parse_url),
    "twitter_endpoint": _value(parse_url),
    "bucket": _value(string),
    "message": _value(string),
    "tweet": _value(boolean),
    "resumable_threshold": _value(
        parse_size, lambda n: 0 < n <= TON_MAX_SINGLE, "must be 1 to 64MiB"
    ),
    "chunk_size": _value(parse_size, lambda n: 0 < n < TON_MAX_SINGLE, "must be 1 to under 64MiB"),
    "expires": _value(parse_duration, lambda s: 0 < s <= 7 * DAY, "must be over 0 and at most 7d"),
    "callback_timeout": _value(parse_duration, lambda s: s > 0, "must be more than 0"),
    "max_parallel": _value(integer, lambda n: n >= 0, "must be 0 (no limit) or more"),
    "daily_files": _value(integer, lambda n: n >= 0, "must be 0 (no quota) or more"),
    "daily_bytes": _value(parse_size),
    "quota_reset": _value(parse_time_of_day),
    # [[watch]]
    "path": Table.directory,
    "service": _name_in("services", resolve=False),
    "include": _value(strings),
    "exclude": _value(strings),
    "recursive": _value(boolean),
    "allow_hard_links": _value(boolean),
    "poll_interval": _poll_interval,
    # [[webhook]]
    "url": _value(parse_url),
    "events": _value(
        strings,
        lambda names: bool(names) and set(names) <= set(WEBHOOK_EVENTS),
        f"must name some of {', '.join(WEBHOOK_EVENTS)}",
    ),
    "after_upload": _value(
        string, lambda s: s in AFTER_UPLOAD, 'must be "keep", "archive" or "delete"'
    ),
    "archive_to": Table.directory,
    "trash_retention": _value(parse_duration),
    "on_done": _command,
    "on_failed": _command,
    "hook_timeout": _value(parse_duration, lambda s: s > 0, "must be more than 0"),
    "order": _value(
        string, lambda s: s in ORDERS, "must be oldest, newest, smallest, largest or name"
    ),
    "priority": _value(integer),
}
"""How each key is read, whichever table it is in; a dataclass's fields pick the keys."""


def build(table: Table, cls: type[D], given: Mapping[str, object], extra: Iterable[str] = ()) -> D:
    """Fill dataclass `cls` from `table`: its fields (but `name`) are the keys, `_READERS`
    reads them, `given` fills those the table leaves out."""
    spec = {f.name: f.default for f in fields(cls) if f.name != "name"}
    table.check_keys({*spec, *extra, *(f"{key}_file" for key in CREDENTIALS.intersection(spec))})
    values = dict(given)
    for key, default in spec.items():
        value = _READERS[key](table, key)
        if value is not None:
            values[key] = value
        elif key not in values and default is MISSING:
            also = f" (or {key}_file)" if key in CREDENTIALS else ""
            raise table.error(key, f"required key is missing{also}")
    return cls(**values)
