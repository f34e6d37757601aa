"""The configuration: one TOML file read into frozen dataclasses.

Every problem is reported as `ConfigError(file, table, key, problem)`, which prints as
`FILE: [table] key: problem`, so an operator is sent straight to the line to fix.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from syncd.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MiB = 1024 * 1024
DAY = 86400.0

TON_MAX_SINGLE = 64 * MiB
"""TON refuses a single POST of 64 MiB or more, and any chunk that large (protocols.md 2.1)."""

TWITTER_VERIFY_CREDENTIALS = "https://api.twitter.com/1.1/account/verify_credentials.json"
"""The OAuth Echo provider URL that TwitPic and TwitLonger accept."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    state_dir: Path
    """journal.sqlite and the media server's key live here."""
    status_socket: Path
    """The Unix socket `syncd status` asks."""
    workers: int = 4
    """Uploads in flight at once."""
    settle_seconds: float = 2.0
    """A file is complete once its size, mtime and inode are unchanged this long."""
    status_group: str = ""
    """A group that may also query the status socket (mode 0660 instead of 0600)."""
    log_level: str = "info"
    """debug, info, warning or error."""
    rescan_interval: float = 3600.0
    """A full rescan this often, beside the watcher: inotify can drop events."""


@dataclass(frozen=True, slots=True)
class Account:
    """A Twitter OAuth 1.0a user context."""

    name: str
    consumer_key: str
    consumer_secret: str = field(repr=False)
    access_token: str
    access_token_secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What every `[services.NAME]` table has."""

    name: str
    endpoint: str

    type: ClassVar[str]


@dataclass(frozen=True, slots=True)
class TonService(ServiceConfig):
    type: ClassVar[str] = "ton"
    account: Account
    bucket: str
    resumable_threshold: int = TON_MAX_SINGLE
    """At or above this size the upload is resumable; at most 64 MiB."""
    chunk_size: int = 8 * MiB
    """Rounded down to a multiple of the server's minimum chunk; under 64 MiB."""
    expires: float = 7 * DAY
    """X-TON-Expires is sent this far ahead; at most 7 days."""


@dataclass(frozen=True, slots=True)
class TwitPicService(ServiceConfig):
    type: ClassVar[str] = "twitpic"
    account: Account
    api_key: str = field(repr=False)
    verify_credentials_url: str = TWITTER_VERIFY_CREDENTIALS
    message: str = ""
    """The caption when no NAME.caption lies beside the file."""


@dataclass(frozen=True, slots=True)
class TwitLongerService(ServiceConfig):
    type: ClassVar[str] = "twitlonger"
    account: Account
    api_key: str = field(repr=False)
    verify_credentials_url: str = TWITTER_VERIFY_CREDENTIALS
    tweet: bool = True
    """Tweet the post's tweet_content and attach the status id back."""
    twitter_endpoint: str = "https://api.twitter.com"


@dataclass(frozen=True, slots=True)
class OneAllService(ServiceConfig):
    type: ClassVar[str] = "oneall"
    public_key: str
    private_key: str = field(repr=False)
    identity_token: str
    callback_timeout: float = 3600.0
    """A video with no callback by then is failed."""


@dataclass(frozen=True, slots=True)
class MediaServerConfig:
    """Where OneAll fetches files from; URLs are signed and expire."""

    host: str
    port: int
    public_url: str


@dataclass(frozen=True, slots=True)
class WatchConfig:
    path: Path
    """Absolute, symlinks resolved."""
    service: str
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    recursive: bool = True
    poll_interval: float = 0.0
    """0 watches with inotify; otherwise poll this often (network filesystems), >= 30 s."""


@dataclass(frozen=True, slots=True)
class Config:
    source: Path
    daemon: DaemonConfig
    accounts: dict[str, Account]
    services: dict[str, ServiceConfig]
    watches: tuple[WatchConfig, ...]
    media_server: MediaServerConfig | None = None


LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_POLL_INTERVAL = 30.0
"""Polling faster than this costs more than the network filesystems it is meant for."""
CREDENTIALS = frozenset({"consumer_key", "consumer_secret", "access_token", "access_token_secret"})
CREDENTIALS |= {"api_key", "public_key", "private_key", "identity_token"}
"""Keys that may instead be given as `KEY_file = "path"` (e.g. systemd's LoadCredential=)."""
SECRETS = frozenset({"consumer_secret", "access_token_secret", "api_key", "private_key"})
"""Refused inline in a config file that other users can read, as ssh refuses such keys."""

_SERVICE_TYPES: dict[str, type[ServiceConfig]] = {
    cls.type: cls for cls in (TonService, TwitPicService, TwitLongerService, OneAllService)
}
_DEFAULT_ENDPOINTS = {
    "ton": "https://ton.twitter.com",
    "twitpic": "https://api.twitpic.com",
    "twitlonger": "https://api.twitlonger.com",
}
_TOP_LEVEL = ("daemon", "accounts", "services", "media_server", "watch")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SIZE = re.compile(r"\s*(\d+)\s*([a-z]*)\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30}
_DURATION = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d))+\s*", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
_KINDS = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
_KINDS |= {list: "an array", dict: "a table", datetime: "a datetime", date: "a date"}
_KINDS[time] = "a time"

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")


def _kind(value: object) -> str:
    return _KINDS.get(type(value), f"a {type(value).__name__}")


def _expect(kind: type[T], name: str) -> Callable[[object], T]:
    """A parser for one TOML type; a boolean is never taken for an integer."""

    def parse(value: object) -> T:
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        raise ValueError(f"expected {name}, got {_kind(value)}")

    return parse


def _array_of(kind: type[T], name: str) -> Callable[[object], tuple[T, ...]]:
    def parse(value: object) -> tuple[T, ...]:
        if isinstance(value, list) and all(isinstance(item, kind) for item in value):
            return tuple(value)
        raise ValueError(f"expected an array of {name}, got {_kind(value)}")

    return parse


_string, _boolean = _expect(str, "a string"), _expect(bool, "a boolean")
_integer, _table = _expect(int, "an integer"), _expect(dict, "a table")
_strings, _tables = _array_of(str, "strings"), _array_of(dict, "tables")


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as "8MiB" (binary) or "10MB" (decimal)."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        unit = _SIZE_UNITS.get(match[2].lower()) if match else None
        if match is None or unit is None:
            raise ValueError(f'expected a size such as "8MiB", "10MB" or "512B", got {value!r}')
        return int(match[1]) * unit
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    raise ValueError(f'expected a size (bytes, or a string such as "8MiB"), got {_kind(value)}')


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "500ms", "30s", "5m", "1h", "7d", "1h30m"."""
    if isinstance(value, str):
        if not _DURATION.fullmatch(value):
            raise ValueError(f'expected a duration such as "30s", "5m" or "1h30m", got {value!r}')
        parts = _DURATION_PART.findall(value)
        return sum(float(number) * _DURATION_UNITS[unit.lower()] for number, unit in parts)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 <= value < math.inf:
            raise ValueError(f"a duration must be finite and not negative, got {value}")
        return float(value)
    raise ValueError(f'expected a duration (seconds, or a string like "30s"), got {_kind(value)}')


def _first_entry(variable: str) -> Path | None:
    """systemd sets *_DIRECTORY to a colon-separated list when a unit names several."""
    value = os.environ.get(variable, "").split(":")[0]
    return Path(value) if value else None


def _expanduser(text: str) -> str:
    # Not Path.expanduser(): it raises RuntimeError without $HOME or for an unknown ~user.
    return os.path.expanduser(text)


def _xdg(variable: str, fallback: str) -> Path:
    """An XDG base directory; the spec says to ignore unset, empty and relative values."""
    value = Path(os.environ.get(variable, ""))
    return value if value.is_absolute() else Path(_expanduser("~"), fallback)


def default_config_path() -> Path:
    """Where the config is read from when `-c` is not given."""
    if directory := _first_entry("CONFIGURATION_DIRECTORY"):
        return directory / "config.toml"
    if os.geteuid() == 0:
        return Path("/etc/syncd/config.toml")
    return _xdg("XDG_CONFIG_HOME", ".config") / "syncd" / "config.toml"


def default_state_dir() -> Path:
    """systemd's StateDirectory=, else $XDG_STATE_HOME, else /var/lib/syncd for root or XDG's."""
    given = _first_entry("STATE_DIRECTORY")
    if given is not None:
        return given
    if os.geteuid() == 0 and not os.environ.get("XDG_STATE_HOME"):
        return Path("/var/lib/syncd")
    return _xdg("XDG_STATE_HOME", ".local/state") / "syncd"


def default_status_socket() -> Path:
    """systemd's RuntimeDirectory= when it gives one, else a per-user runtime folder."""
    if directory := _first_entry("RUNTIME_DIRECTORY"):
        return directory / "status.sock"
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime, "syncd", "status.sock")
    if os.geteuid() == 0:
        return Path("/run/syncd/status.sock")
    return Path(f"/tmp/syncd-{os.getuid()}/status.sock")  # noqa: S108 - per user, as ssh-agent


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost
        return False


def _parse_url(value: object) -> str:
    """An http(s) endpoint without its trailing "/"; plain http only where nobody can listen in."""
    text = _string(value)
    parts = urlsplit(text)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number from 1 to 65535
        valid = False
    if not valid:
        raise ValueError("expected an http:// or https:// URL with a host")
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        raise ValueError("plain http is allowed only to loopback hosts; use https")
    return text.rstrip("/")


def _parse_listen(value: object) -> tuple[str, int]:
    """ "HOST:PORT", with an IPv6 host in brackets as in URLs: "[::1]:8787"."""
    text = _string(value)
    try:
        parts = urlsplit(f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError:  # a bad port or bracketed address
        host = port = None
    if not host or not port or parts.netloc != text or "@" in text:
        raise ValueError(f'expected "HOST:PORT" (an IPv6 host as "[::1]:PORT"), got {text!r}')
    return host, port


@dataclass(slots=True)
class _Source:
    """What every table of one file is read against; `named` fills as the file is read."""

    file: str
    folder: Path
    mode: int
    named: dict[str, dict[str, Any]]
    """The [accounts.*] and [services.*] read so far, for keys that name one."""


class _Table:
    """One TOML table being read; every refusal names the file, the table and the key."""

    def __init__(self, src: _Source, name: str, data: dict[str, Any], entry: str = "") -> None:
        self.src, self.name, self.data = src, name, data
        self.entry = entry
        """An array entry's position ("#2"), printed before the key: `[[watch]] #2 path`."""

    def error(self, key: str | None, problem: str) -> ConfigError:
        label = " ".join(part for part in (self.entry, key) if part)
        return ConfigError(self.src.file, self.name, label or None, problem)

    def check_keys(self, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        for key, value in self.data.items():
            if key not in allowed:
                raise self.error(key, "unknown table" if isinstance(value, dict) else "unknown key")

    def get(self, key: str, parse: Callable[[object], T]) -> T | None:
        """The parsed value, or None when the key is absent (TOML has no null)."""
        if key not in self.data:
            return None
        try:
            return parse(self.data[key])
        except ValueError as e:
            raise self.error(key, str(e)) from None

    def require(self, key: str, parse: Callable[[object], T]) -> T:
        value = self.get(key, parse)
        if value is None:
            raise self.error(key, "required key is missing")
        return value

    def path(self, key: str) -> Path | None:
        """A path with ${VAR} and ~ expanded, relative to the config file's folder."""
        raw = self.get(key, _string)
        if raw is None:
            return None
        if not raw:
            raise self.error(key, "must not be empty")

        def lookup(match: re.Match[str]) -> str:
            if match[1] not in os.environ:
                raise self.error(key, f"${{{match[1]}}} is not set")
            return os.environ[match[1]]

        return self.src.folder / _expanduser(_VAR.sub(lookup, raw))

    def credential(self, key: str) -> str | None:
        """KEY inline or the content of KEY_file; a secret's value never reaches a message."""
        inline, file_key = self.get(key, _string), f"{key}_file"
        path = self.path(file_key)
        if inline is not None and path is not None:
            raise self.error(key, f"give {key} or {file_key}, not both")
        if path is not None:
            try:
                value = path.read_text(encoding="utf-8").rstrip()
            except OSError as e:
                raise self.error(file_key, f"cannot read {path}: {e.strerror}") from None
            except UnicodeDecodeError:
                raise self.error(file_key, f"cannot read {path}: not UTF-8 text") from None
            if not value:
                raise self.error(file_key, f"{path} is empty")
            return value
        if inline == "":
            raise self.error(key, "must not be empty")
        if inline is not None and key in SECRETS and self.src.mode & 0o044:
            mode = f"mode {stat.S_IMODE(self.src.mode):04o}"
            raise self.error(
                key,
                f"secret given inline in a file readable by other users ({mode}); "
                f"chmod 600 {self.src.file} or use {file_key}",
            )
        return inline

    def directory(self, key: str) -> Path | None:
        """An existing folder, symlinks resolved: that is the path events arrive under."""
        path = self.path(key)
        if path is None:
            return None
        try:
            is_dir = stat.S_ISDIR(path.stat().st_mode)
        except FileNotFoundError:
            raise self.error(key, f"{path} does not exist") from None
        except OSError as e:
            raise self.error(key, f"cannot use {path}: {e.strerror}") from None
        if not is_dir:
            raise self.error(key, f"{path} is not a directory")
        return Path(os.path.realpath(path))

    def build(self, cls: type[D], given: Mapping[str, object], extra: Iterable[str] = ()) -> D:
        """Fill dataclass `cls`: its fields (but `name`) are the keys, `_READERS` reads them."""
        spec = {f.name: f.default for f in fields(cls) if f.name != "name"}
        self.check_keys({*spec, *extra, *(f"{key}_file" for key in CREDENTIALS.intersection(spec))})
        values = dict(given)
        for key, default in spec.items():
            value = _READERS[key](self, key)
            if value is not None:
                values[key] = value
            elif key not in values and default is MISSING:
                also = f" (or {key}_file)" if key in CREDENTIALS else ""
                raise self.error(key, f"required key is missing{also}")
        return cls(**values)


_Reader = Callable[[_Table, str], object]


def _value(
    parse: Callable[[object], Any], ok: Callable[[Any], bool] = lambda _: True, why: str = ""
) -> _Reader:
    """A reader for a plain value; `why` it is refused unless `ok`."""

    def read(table: _Table, key: str) -> object:
        value = table.get(key, parse)
        if value is not None and not ok(value):
            raise table.error(key, why)
        return value

    return read


def _name_in(section: str, resolve: bool) -> _Reader:
    """A reader for a key that names a `[section.NAME]` table; `resolve` returns that table."""

    def read(table: _Table, key: str) -> object:
        name, named = table.get(key, _string), table.src.named[section]
        if name is not None and name not in named:
            raise table.error(key, f"no [{section}.{name}] table")
        return named[name] if resolve and name is not None else name

    return read


_READERS: dict[str, _Reader] = {
    # [daemon]
    "state_dir": _Table.path,
    "status_socket": _Table.path,
    "workers": _value(_integer, lambda n: n >= 1, "must be at least 1"),
    "settle_seconds": _value(parse_duration),
    "status_group": _value(_string),
    "log_level": _value(
        _string, lambda s: s in LOG_LEVELS, "must be debug, info, warning or error"
    ),
    "rescan_interval": _value(parse_duration),
    # [accounts.*] and [services.*]
    **dict.fromkeys(CREDENTIALS, _Table.credential),
    "account": _name_in("accounts", resolve=True),
    "endpoint": _value(_parse_url),
    "verify_credentials_url": _value(_parse_url),
    "twitter_endpoint": _value(_parse_url),
    "bucket": _value(_string),
    "message": _value(_string),
    "tweet": _value(_boolean),
    "resumable_threshold": _value(
        parse_size, lambda n: 0 < n <= TON_MAX_SINGLE, "must be 1 to 64MiB"
    ),
    "chunk_size": _value(parse_size, lambda n: 0 < n < TON_MAX_SINGLE, "must be 1 to under 64MiB"),
    "expires": _value(parse_duration, lambda s: 0 < s <= 7 * DAY, "must be over 0 and at most 7d"),
    "callback_timeout": _value(parse_duration, lambda s: s > 0, "must be more than 0"),
    # [[watch]]
    "path": _Table.directory,
    "service": _name_in("services", resolve=False),
    "include": _value(_strings),
    "exclude": _value(_strings),
    "recursive": _value(_boolean),
    "poll_interval": _value(
        parse_duration, lambda s: s == 0 or s >= MIN_POLL_INTERVAL, "must be 0 (inotify) or >= 30s"
    ),
}
"""How each key is read, whichever table it is in; a dataclass's fields pick the keys."""


def _entries(root: _Table, section: str) -> Iterator[tuple[str, _Table]]:
    """The `[section.NAME]` tables, such as `[accounts.main]`."""
    parent = _Table(root.src, section, root.get(section, _table) or {})
    for name in parent.data:
        yield name, _Table(root.src, f"{section}.{name}", parent.get(name, _table) or {})


def _service(name: str, table: _Table) -> ServiceConfig:
    kind = table.require("type", _string)
    if kind not in _SERVICE_TYPES:
        raise table.error("type", f"unknown type {kind!r}; use {', '.join(_SERVICE_TYPES)}")
    given: dict[str, object] = {"name": name}
    if kind in _DEFAULT_ENDPOINTS:
        given["endpoint"] = _DEFAULT_ENDPOINTS[kind]
    return table.build(_SERVICE_TYPES[kind], given, extra=["type"])


def _media_server(table: _Table) -> MediaServerConfig:
    table.check_keys(["listen", "public_url"])
    host, port = table.require("listen", _parse_listen)
    return MediaServerConfig(host, port, table.require("public_url", _parse_url))


def load(path: Path) -> Config:
    """Read and check the whole file; any problem is a ConfigError naming file, table and key."""
    file = str(path)
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode  # of the file read, not of a later replacement
            data = tomllib.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ConfigError(file, "", None, f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(file, "", None, "invalid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, "", None, f"invalid TOML: {e}") from None

    accounts: dict[str, Account] = {}
    services: dict[str, ServiceConfig] = {}
    src = _Source(file, path.absolute().parent, mode, {"accounts": accounts, "services": services})
    root = _Table(src, "", data)
    root.check_keys(_TOP_LEVEL)
    paths = {"state_dir": default_state_dir(), "status_socket": default_status_socket()}
    daemon = _Table(src, "daemon", root.get("daemon", _table) or {}).build(DaemonConfig, paths)
    for name, table in _entries(root, "accounts"):
        accounts[name] = table.build(Account, {"name": name})
    for name, table in _entries(root, "services"):
        services[name] = _service(name, table)
    media = root.get("media_server", _table)
    media_server = None if media is None else _media_server(_Table(src, "media_server", media))
    for name, service in services.items():
        if isinstance(service, OneAllService) and media_server is None:
            raise ConfigError(file, f"services.{name}", None, "oneall needs a [media_server] table")
    watches = tuple(
        _Table(src, "[watch]", item, f"#{position}").build(WatchConfig, {})
        for position, item in enumerate(root.get("watch", _tables) or (), 1)
    )
    return Config(path.absolute(), daemon, accounts, services, watches, media_server)
