"""Reading the whole file: every table and key checked, every refusal naming file, table, key."""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from syncd.config.model import (
    DAY,
    TON_MAX_SINGLE,
    WEBHOOK_EVENTS,
    Account,
    Config,
    DaemonConfig,
    JournalConfig,
    MediaServerConfig,
    MetricsConfig,
    OneAllService,
    ServiceConfig,
    TonService,
    TwitLongerService,
    TwitPicService,
    WatchConfig,
    WebhookConfig,
)
from syncd.config.values import (
    boolean,
    default_state_dir,
    default_status_socket,
    expanduser,
    integer,
    parse_database_url,
    parse_duration,
    parse_host_id,
    parse_listen,
    parse_schedule,
    parse_size,
    parse_time_of_day,
    parse_url,
    string,
    strings,
    toml_table,
    toml_tables,
)
from syncd.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
D = TypeVar("D", bound="DataclassInstance")

LOG_LEVELS = ("debug", "info", "warning", "error")
AFTER_UPLOAD = ("keep", "archive", "delete")
ORDERS = ("oldest", "newest", "smallest", "largest", "name")
MIN_POLL_INTERVAL = 30.0
"""Polling faster than this costs more than the network filesystems it is meant for."""
MIN_FLEET_POLL_INTERVAL = 1.0
"""In fleet mode polling is how a host sees the others' files, so it may be much faster."""
MIN_LEASE = 1.0
CREDENTIALS = frozenset({"consumer_key", "consumer_secret", "access_token", "access_token_secret"})
CREDENTIALS |= {"api_key", "public_key", "private_key", "identity_token", "secret"}
"""Keys that may instead be given as `KEY_file = "path"` (e.g. systemd's LoadCredential=)."""
SECRETS = frozenset({"consumer_secret", "access_token_secret", "api_key", "private_key", "secret"})
SECRETS |= {"password"}
"""Refused inline in a config file that other users can read, as ssh refuses such keys."""

MAX_SECRET = 64 * 1024


def untrusted(st: os.stat_result) -> str | None:
    """Why a file others could have written must not be believed (ssh's StrictModes)."""
    if st.st_uid not in (0, os.geteuid()):
        return f"it belongs to another user (uid {st.st_uid}); chown it"
    if st.st_mode & 0o022:
        return f"others can write it (mode {stat.S_IMODE(st.st_mode):04o}); chmod go-w it"
    return None


_SERVICE_TYPES: dict[str, type[ServiceConfig]] = {
    cls.type: cls for cls in (TonService, TwitPicService, TwitLongerService, OneAllService)
}
_DEFAULT_ENDPOINTS = {
    "ton": "https://ton.twitter.com",
    "twitpic": "https://api.twitpic.com",
    "twitlonger": "https://api.twitlonger.com",
}
_TOP_LEVEL: tuple[str, ...] = ("daemon", "accounts", "services", "media_server", "metrics")
_TOP_LEVEL += ("watch", "webhook", "journal")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(slots=True)
class _Source:
    """What every table of one file is read against; `named` fills as the file is read."""

    file: str
    folder: Path
    mode: int
    named: dict[str, dict[str, Any]]
    """The [accounts.*] and [services.*] read so far, for keys that name one."""
    fleet: bool = False
    """A [journal] url is set: watches may poll as often as every second."""


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
        raw = self.get(key, string)
        if raw is None:
            return None
        if not raw:
            raise self.error(key, "must not be empty")

        def lookup(match: re.Match[str]) -> str:
            if match[1] not in os.environ:
                raise self.error(key, f"${{{match[1]}}} is not set")
            return os.environ[match[1]]

        return self.src.folder / expanduser(_VAR.sub(lookup, raw))

    def credential(self, key: str) -> str | None:
        """KEY inline or the content of KEY_file; a secret's value never reaches a message."""
        inline, file_key = self.get(key, string), f"{key}_file"
        path = self.path(file_key)
        if inline is not None and path is not None:
            raise self.error(key, f"give {key} or {file_key}, not both")
        if path is not None:
            return self._printable(file_key, self._secret_file(file_key, path))
        if inline is not None:
            inline = inline.strip()
        if inline == "":
            raise self.error(key, "must not be empty")
        if inline is not None and key in SECRETS and self.src.mode & 0o044:
            mode = f"mode {stat.S_IMODE(self.src.mode):04o}"
            raise self.error(
                key,
                f"secret given inline in a file readable by other users ({mode}); "
                f"chmod 600 {self.src.file} or use {file_key}",
            )
        return None if inline is None else self._printable(key, inline)

    def _printable(self, key: str, value: str) -> str:
        """Credentials travel in headers, URLs and signatures: printable ASCII only. The
        refusal never shows the value (nor where in it the offending character is)."""
        if not all(" " <= c <= "~" for c in value):
            raise self.error(key, "holds control or non-ASCII characters (value not shown)")
        return value

    def _secret_file(self, key: str, path: Path) -> str:
        """A secret's file: never through a symlink, and refused when someone other than us
        (or root) could have written it, as ssh refuses such keys."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            why = "it is a symlink" if e.errno == errno.ELOOP else e.strerror
            raise self.error(key, f"cannot read {path}: {why}") from None
        with os.fdopen(fd, "rb") as file:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self.error(key, f"cannot read {path}: not a regular file")
            if (why := untrusted(st)) is not None:
                raise self.error(key, f"{path} refused: {why}")
            raw = file.read(MAX_SECRET + 1)
        if len(raw) > MAX_SECRET:
            raise self.error(key, f"{path} is larger than {MAX_SECRET} bytes")
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self.error(key, f"cannot read {path}: not UTF-8 text") from None
        if not value:
            raise self.error(key, f"{path} is empty")
        return value

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
        name, named = table.get(key, string), table.src.named[section]
        if name is not None and name not in named:
            raise table.error(key, f"no [{section}.{name}] table")
        return named[name] if resolve and name is not None else name

    return read


def _poll_interval(table: _Table, key: str) -> float | None:
    least, said = (MIN_FLEET_POLL_INTERVAL, "1s") if table.src.fleet else (MIN_POLL_INTERVAL, "30s")
    value = table.get(key, parse_duration)
    if value is not None and 0 < value < least:
        raise table.error(key, f"must be 0 (inotify) or >= {said}")
    return value


_READERS: dict[str, _Reader] = {
    # [daemon]
    "state_dir": _Table.path,
    "status_socket": _Table.path,
    "workers": _value(integer, lambda n: n >= 1, "must be at least 1"),
    "settle_seconds": _value(parse_duration),
    "status_group": _value(string),
    "log_level": _value(string, lambda s: s in LOG_LEVELS, "must be debug, info, warning or error"),
    "rescan_interval": _value(parse_duration),
    "request_timeout": _value(parse_duration, lambda s: s >= 1, "must be at least 1s"),
    "max_retry_after": _value(parse_duration, lambda s: s >= 1, "must be at least 1s"),
    "healthcheck_url": _value(parse_url),
    "healthcheck_interval": _value(parse_duration, lambda s: s > 0, "must be more than 0"),
    "bandwidth": _value(parse_size),
    "bandwidth_schedule": _value(parse_schedule),
    # [accounts.*] and [services.*]
    **dict.fromkeys(CREDENTIALS, _Table.credential),
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
    "path": _Table.directory,
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
    "archive_to": _Table.directory,
    "trash_retention": _value(parse_duration),
    "on_done": _value(strings),
    "on_failed": _value(strings),
    "hook_timeout": _value(parse_duration, lambda s: s > 0, "must be more than 0"),
    "order": _value(
        string, lambda s: s in ORDERS, "must be oldest, newest, smallest, largest or name"
    ),
    "priority": _value(integer),
}
"""How each key is read, whichever table it is in; a dataclass's fields pick the keys."""


def _journal(table: _Table) -> JournalConfig:
    """[journal]: fleet mode's shared PostgreSQL journal."""
    table.check_keys(["url", "password", "password_file", "host_id", "lease"])
    lease = table.get("lease", parse_duration)
    if lease is not None and lease < MIN_LEASE:
        raise table.error("lease", "must be at least 1s")
    return JournalConfig(
        url=table.require("url", parse_database_url),
        password=table.credential("password") or "",
        host_id=table.get("host_id", parse_host_id) or socket.gethostname(),
        lease=30.0 if lease is None else lease,
    )


def _entries(root: _Table, section: str) -> Iterator[tuple[str, _Table]]:
    """The `[section.NAME]` tables, such as `[accounts.main]`."""
    parent = _Table(root.src, section, root.get(section, toml_table) or {})
    for name in parent.data:
        yield name, _Table(root.src, f"{section}.{name}", parent.get(name, toml_table) or {})


def _service(name: str, table: _Table) -> ServiceConfig:
    kind = table.require("type", string)
    if kind not in _SERVICE_TYPES:
        raise table.error("type", f"unknown type {kind!r}; use {', '.join(_SERVICE_TYPES)}")
    given: dict[str, object] = {"name": name}
    if kind in _DEFAULT_ENDPOINTS:
        given["endpoint"] = _DEFAULT_ENDPOINTS[kind]
    return table.build(_SERVICE_TYPES[kind], given, extra=["type"])


def _media_server(table: _Table) -> MediaServerConfig:
    table.check_keys(["listen", "public_url"])
    host, port = table.require("listen", parse_listen)
    return MediaServerConfig(host, port, table.require("public_url", parse_url))


def _metrics(table: _Table) -> MetricsConfig:
    table.check_keys(["listen"])
    return MetricsConfig(*table.require("listen", parse_listen))


def _check_archives(src: _Source, watches: tuple[WatchConfig, ...]) -> None:
    """`archive_to` with archive only, and never inside a watch: an archived file must not
    be taken for new work (nor the watch's own trash)."""
    for position, watch in enumerate(watches, 1):
        table = _Table(src, "[watch]", {}, f"#{position}")
        if watch.after_upload == "archive" and watch.archive_to is None:
            raise table.error("archive_to", 'required with after_upload = "archive"')
        if watch.after_upload != "archive" and watch.archive_to is not None:
            raise table.error("archive_to", 'only used with after_upload = "archive"')
        archive = watch.archive_to
        if archive is None:
            continue
        for other in watches:
            if archive == other.path or other.path in archive.parents:
                raise table.error("archive_to", f"{archive} is inside the watch {other.path}")


def load(path: Path) -> Config:
    """Read and check the whole file; any problem is a ConfigError naming file, table and key."""
    file = str(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())  # of the file read, not of a later replacement
            if (why := untrusted(st)) is not None:
                raise ConfigError(file, "", None, f"refused: {why}")
            mode = st.st_mode
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
    daemon_table = _Table(src, "daemon", root.get("daemon", toml_table) or {})
    state_dir = daemon_table.path("state_dir") or default_state_dir()
    paths = {"state_dir": state_dir, "status_socket": default_status_socket(state_dir)}
    daemon = daemon_table.build(DaemonConfig, paths)
    for name, table in _entries(root, "accounts"):
        accounts[name] = table.build(Account, {"name": name})
    for name, table in _entries(root, "services"):
        services[name] = _service(name, table)
    media = root.get("media_server", toml_table)
    media_server = None if media is None else _media_server(_Table(src, "media_server", media))
    journal_table = root.get("journal", toml_table)
    journal = None if journal_table is None else _journal(_Table(src, "journal", journal_table))
    src.fleet = journal is not None
    for name, service in services.items():
        if isinstance(service, OneAllService) and media_server is None:
            raise ConfigError(file, f"services.{name}", None, "oneall needs a [media_server] table")
    watches = tuple(
        _Table(src, "[watch]", item, f"#{position}").build(WatchConfig, {})
        for position, item in enumerate(root.get("watch", toml_tables) or (), 1)
    )
    _check_archives(src, watches)
    metrics = root.get("metrics", toml_table)
    webhooks = tuple(
        _Table(src, "[webhook]", item, f"#{position}").build(WebhookConfig, {})
        for position, item in enumerate(root.get("webhook", toml_tables) or (), 1)
    )
    return Config(
        path.absolute(),
        daemon,
        accounts,
        services,
        watches,
        media_server,
        None if metrics is None else _metrics(_Table(src, "metrics", metrics)),
        webhooks,
        journal,
    )
