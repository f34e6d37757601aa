"""Reading one TOML value: types, sizes, durations, URLs, listen addresses, default paths.

Each parser raises ValueError with a message that reads well after `FILE: [table] key:`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from datetime import date, datetime, time
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from syncd.config.model import DAY

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_DURATION = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d))+\s*", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
_HOST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KINDS = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
_KINDS |= {list: "an array", dict: "a table", datetime: "a datetime", date: "a date"}
_KINDS[time] = "a time"

T = TypeVar("T")


def kind_of(value: object) -> str:
    return _KINDS.get(type(value), f"a {type(value).__name__}")


def _expect(kind: type[T], name: str) -> Callable[[object], T]:
    """A parser for one TOML type; a boolean is never taken for an integer."""

    def parse(value: object) -> T:
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        raise ValueError(f"expected {name}, got {kind_of(value)}")

    return parse


def _array_of(kind: type[T], name: str) -> Callable[[object], tuple[T, ...]]:
    def parse(value: object) -> tuple[T, ...]:
        if isinstance(value, list) and all(isinstance(item, kind) for item in value):
            return tuple(value)
        raise ValueError(f"expected an array of {name}, got {kind_of(value)}")

    return parse


string, boolean = _expect(str, "a string"), _expect(bool, "a boolean")
_any_integer, toml_table = _expect(int, "an integer"), _expect(dict, "a table")
strings, toml_tables = _array_of(str, "strings"), _array_of(dict, "tables")
INT64 = range(-(2**63), 2**63)
"""TOML's integers (Python's tomllib reads larger ones; SQLite and PostgreSQL store these)."""


def integer(value: object) -> int:
    number = _any_integer(value)
    if number not in INT64:
        raise ValueError(f"{number} does not fit in 64 bits, as TOML integers must")
    return number


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as "8MiB" (binary), "10MB" (decimal) or
    "1.5GiB" (a fraction of a byte dropped)."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        unit = _SIZE_UNITS.get(match[2].lower()) if match else None
        if match is None or unit is None:
            raise ValueError(f'expected a size such as "8MiB", "10MB" or "512B", got {value!r}')
        from fractions import Fraction  # only for a size written as a string

        size = math.floor(Fraction(match[1]) * unit)
    elif isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        size = value
    else:
        raise ValueError(
            f'expected a size (bytes, or a string such as "8MiB"), got {kind_of(value)}'
        )
    if size not in INT64:
        raise ValueError(f"a size must be under 8EiB, got {value!r}")
    return size


MAX_DURATION = 36500 * DAY
"""100 years: longer is no setting anyone means, and past it waits and datetimes overflow."""


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "500ms", "30s", "5m", "1h", "7d", "1h30m"."""
    if isinstance(value, str):
        if not _DURATION.fullmatch(value):
            raise ValueError(f'expected a duration such as "30s", "5m" or "1h30m", got {value!r}')
        parts = _DURATION_PART.findall(value)
        seconds = sum(float(number) * _DURATION_UNITS[unit.lower()] for number, unit in parts)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 <= value < math.inf:
            raise ValueError(f"a duration must be finite and not negative, got {value}")
        seconds = float(value)
    else:
        raise ValueError(
            f'expected a duration (seconds, or a string like "30s"), got {kind_of(value)}'
        )
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration must be at most 36500d (100 years), got {value!r}")
    return seconds


_TIME_OF_DAY = re.compile(r"\s*([01]?\d|2[0-3]):([0-5]\d)\s*")


def parse_time_of_day(value: object) -> int:
    """Minutes since local midnight from "HH:MM" (24-hour clock)."""
    text = string(value)
    match = _TIME_OF_DAY.fullmatch(text)
    if match is None:
        raise ValueError(f'expected a local time "HH:MM" such as "08:00", got {text!r}')
    return int(match[1]) * 60 + int(match[2])


def parse_schedule(value: object) -> tuple[tuple[int, int], ...]:
    """["08:00 2MiB", "19:00 0"]: from each local time on, that rate; sorted by time."""
    entries: dict[int, int] = {}
    for item in strings(value):
        when, _, rate = item.strip().partition(" ")
        if not rate.strip():
            raise ValueError(f'expected entries such as "08:00 2MiB", got {item!r}')
        minute = parse_time_of_day(when)
        if minute in entries:
            raise ValueError(f"{when.strip()} appears twice")
        entries[minute] = parse_size(rate.strip())
    return tuple(sorted(entries.items()))


def _first_entry(variable: str) -> Path | None:
    """systemd sets *_DIRECTORY to a colon-separated list when a unit names several."""
    value = os.environ.get(variable, "").split(":")[0]
    return Path(value) if value else None


def expanduser(text: str) -> str:
    # Not Path.expanduser(): it raises RuntimeError without $HOME or for an unknown ~user.
    return os.path.expanduser(text)


def _xdg(variable: str, fallback: str) -> Path:
    """An XDG base directory; the spec says to ignore unset, empty and relative values."""
    value = Path(os.environ.get(variable, ""))
    return value if value.is_absolute() else Path(expanduser("~"), fallback)


def default_config_path() -> Path:
    """Where the config is read from when `-c` is not given."""
    if directory := _first_entry("CONFIGURATION_DIRECTORY"):
        return directory / "config.toml"
    if os.geteuid() == 0:
        return Path("/etc/syncd/config.toml")
    return _xdg("XDG_CONFIG_HOME", ".config") / "syncd" / "config.toml"


def default_state_dir() -> Path:
    """systemd's StateDirectory=, else the XDG state folder, root's too (DESIGN.md: the
    system unit gives /var/lib/syncd as $STATE_DIRECTORY)."""
    given = _first_entry("STATE_DIRECTORY")
    if given is not None:
        return given
    return _xdg("XDG_STATE_HOME", ".local/state") / "syncd"


def default_status_socket(state_dir: Path | None = None) -> Path:
    """systemd's RuntimeDirectory= when it gives one, else a per-user runtime folder, else
    the state folder: never a predictable /tmp path another user could take first."""
    if directory := _first_entry("RUNTIME_DIRECTORY"):
        return directory / "status.sock"
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime, "syncd", "status.sock")
    if os.geteuid() == 0:
        return Path("/run/syncd/status.sock")
    return (state_dir or default_state_dir()) / "status.sock"


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost
        return False


def parse_url(value: object) -> str:
    """An http(s) endpoint without its trailing "/"; plain http only where nobody can listen in."""
    text = string(value)
    parts = urlsplit(text)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number from 1 to 65535
        valid = False
    if not valid:
        raise ValueError("expected an http:// or https:// URL with a host")
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise ValueError("plain http is allowed only to loopback hosts; use https")
    return text.rstrip("/")


def parse_database_url(value: object) -> str:
    """A PostgreSQL URL (libpq's form); its password belongs in password_file, not here."""
    text = string(value)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("expected a URL such as postgresql://syncd@db.example.com/syncd") from None
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise ValueError("expected a URL such as postgresql://syncd@db.example.com/syncd")
    if parts.password is not None:
        raise ValueError("the password must not be in the URL; use password_file")
    return text


def parse_host_id(value: object) -> str:
    """A short name of letters, digits, `.`, `-` and `_`: it is shown in status and logs."""
    text = string(value)
    if not _HOST_ID.fullmatch(text):
        raise ValueError("expected 1 to 64 letters, digits, '.', '-' or '_'")
    return text


def parse_listen(value: object) -> tuple[str, int]:
    """ "HOST:PORT", with an IPv6 host in brackets as in URLs: "[::1]:8787"."""
    text = string(value)
    try:
        parts = urlsplit(f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError:  # a bad port or bracketed address
        host = port = None
    if not host or not port or parts.netloc != text or "@" in text:
        raise ValueError(f'expected "HOST:PORT" (an IPv6 host as "[::1]:PORT"), got {text!r}')
    return host, port
