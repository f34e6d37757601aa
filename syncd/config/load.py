"""Reading the whole file: every table and key checked, every refusal naming file, table, key.

`table` reads one value in its table's context, `keys` how each key is read and a table
into its dataclass; here are the file, its sections and what holds across them.
"""

from __future__ import annotations

import grp
import os
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path

from syncd.config.keys import D, build
from syncd.config.model import (
    SERVICE_TYPES,
    Account,
    Config,
    DaemonConfig,
    JournalConfig,
    MediaServerConfig,
    MetricsConfig,
    OneAllService,
    ServiceConfig,
    WatchConfig,
    WebhookConfig,
)
from syncd.config.table import Source, Table, untrusted
from syncd.config.values import (
    default_state_dir,
    default_status_socket,
    parse_database_url,
    parse_duration,
    parse_host_id,
    parse_listen,
    parse_url,
    string,
    toml_table,
    toml_tables,
)
from syncd.errors import ConfigError

MIN_LEASE = 1.0
MAX_SOCKET_PATH = 107
"""A Unix socket's path holds at most this many bytes (sun_path, 108 with its NUL)."""
_DEFAULT_ENDPOINTS = {
    "ton": "https://ton.twitter.com",
    "twitpic": "https://api.twitpic.com",
    "twitlonger": "https://api.twitlonger.com",
}
_TOP_LEVEL: tuple[str, ...] = ("daemon", "accounts", "services", "media_server", "metrics")
_TOP_LEVEL += ("watch", "webhook", "journal")


def _check_daemon(table: Table, daemon: DaemonConfig) -> None:
    """What `syncd run` would otherwise find out only when it binds the status socket."""
    length = len(os.fsencode(daemon.status_socket))
    if length > MAX_SOCKET_PATH:
        raise table.error(
            "status_socket",
            f"{daemon.status_socket} is {length} bytes long; a Unix socket path holds"
            f" at most {MAX_SOCKET_PATH}",
        )
    if daemon.status_group:
        try:
            grp.getgrnam(daemon.status_group)
        except KeyError:
            raise table.error("status_group", f"no group named {daemon.status_group!r}") from None


def _journal(table: Table) -> JournalConfig:
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


def _entries(root: Table, section: str) -> Iterator[tuple[str, Table]]:
    """The `[section.NAME]` tables, such as `[accounts.main]`."""
    parent = Table(root.src, section, root.get(section, toml_table) or {})
    for name in parent.data:
        yield name, Table(root.src, f"{section}.{name}", parent.get(name, toml_table) or {})


def _array(root: Table, key: str, cls: type[D]) -> tuple[D, ...]:
    """The `[[key]]` array's entries, each read into `cls` and named by its position from 1
    (`[[watch]] #2`)."""
    items = root.get(key, toml_tables) or ()
    return tuple(
        build(Table(root.src, f"[{key}]", item, f"#{position}"), cls, {})
        for position, item in enumerate(items, 1)
    )


def _service(name: str, table: Table) -> ServiceConfig:
    kind = table.require("type", string)
    if kind not in SERVICE_TYPES:
        raise table.error("type", f"unknown type {kind!r}; use {', '.join(SERVICE_TYPES)}")
    given: dict[str, object] = {"name": name}
    if kind in _DEFAULT_ENDPOINTS:
        given["endpoint"] = _DEFAULT_ENDPOINTS[kind]
    return build(table, SERVICE_TYPES[kind], given, extra=["type"])


def _media_server(table: Table) -> MediaServerConfig:
    table.check_keys(["listen", "public_url"])
    host, port = table.require("listen", parse_listen)
    return MediaServerConfig(host, port, table.require("public_url", parse_url))


def _metrics(table: Table) -> MetricsConfig | None:
    """`listen` absent: metrics off, as without the table."""
    table.check_keys(["listen"])
    listen = table.get("listen", parse_listen)
    return None if listen is None else MetricsConfig(*listen)


def _check_archives(src: Source, watches: tuple[WatchConfig, ...]) -> None:
    """`archive_to` with archive only, and never inside a watch: an archived file must not
    be taken for new work (nor the watch's own trash)."""
    for position, watch in enumerate(watches, 1):
        table = Table(src, "[watch]", {}, f"#{position}")
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


STATE_FILES = ("journal.sqlite", "syncd.lock", "media.key")
"""Files syncd keeps in state_dir: no watch may take them (they change all the time)."""


def _check_own_files(src: Source, daemon: DaemonConfig, watches: tuple[WatchConfig, ...]) -> None:
    """No watch may upload syncd's own files: the journal (again at every change), nor
    this file or a KEY_file with their secrets."""
    from syncd.intake.routing import route  # routing imports syncd.config

    state = Path(os.path.realpath(daemon.state_dir))
    for name in STATE_FILES:
        watch = route(watches, state / name)
        if watch is not None:
            raise ConfigError(
                src.file,
                "daemon",
                "state_dir",
                f"{state} is inside the watch {watch.path}, which would upload {name}",
            )
    watch = route(watches, Path(os.path.realpath(src.file)))
    if watch is not None:
        table = Table(src, "[watch]", {}, f"#{watches.index(watch) + 1}")
        raise table.error("path", f"{watch.path} holds this file, which it would upload")
    for secret, named in src.secret_files.items():
        watch = route(watches, Path(os.path.realpath(secret)))
        if watch is not None:
            table = Table(src, "[watch]", {}, f"#{watches.index(watch) + 1}")
            raise table.error(
                "path", f"{watch.path} holds {secret} ({named}), which it would upload"
            )


def _read(path: Path) -> tuple[Source, Table]:
    """The file parsed, as the root table of a fresh Source."""
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
    except (ValueError, RecursionError) as e:  # TOMLDecodeError, a 5000-digit number, [[[[…
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ConfigError(file, "", None, f"invalid TOML: {why}") from None
    src = Source(file, path.absolute().parent, mode, {"accounts": {}, "services": {}})
    return src, Table(src, "", data)


def _daemon(src: Source, root: Table) -> DaemonConfig:
    table = Table(src, "daemon", root.get("daemon", toml_table) or {})
    state_dir = table.path("state_dir") or default_state_dir()
    paths = {"state_dir": state_dir, "status_socket": default_status_socket(state_dir)}
    daemon = build(table, DaemonConfig, paths)
    _check_daemon(table, daemon)
    return daemon


def load_daemon(path: Path) -> DaemonConfig:
    """[daemon] alone: where `syncd status` and the other clients find the daemon, without
    the secrets and folders only the daemon must reach (${CREDENTIALS_DIRECTORY} is the
    service's, not the operator's)."""
    return _daemon(*_read(path))


def load(path: Path) -> Config:
    """Read and check the whole file; any problem is a ConfigError naming file, table and key."""
    src, root = _read(path)
    root.check_keys(_TOP_LEVEL)
    daemon = _daemon(src, root)
    accounts: dict[str, Account] = src.named["accounts"]
    services: dict[str, ServiceConfig] = src.named["services"]
    for name, table in _entries(root, "accounts"):
        accounts[name] = build(table, Account, {"name": name})
    for name, table in _entries(root, "services"):
        services[name] = _service(name, table)
    media = root.get("media_server", toml_table)
    media_server = None if media is None else _media_server(Table(src, "media_server", media))
    journal_table = root.get("journal", toml_table)
    journal = None if journal_table is None else _journal(Table(src, "journal", journal_table))
    src.fleet = journal is not None
    for name, service in services.items():
        if isinstance(service, OneAllService) and media_server is None:
            raise ConfigError(
                src.file, f"services.{name}", None, "oneall needs a [media_server] table"
            )
    watches = _array(root, "watch", WatchConfig)
    _check_archives(src, watches)
    _check_own_files(src, daemon, watches)
    metrics = root.get("metrics", toml_table)
    webhooks = _array(root, "webhook", WebhookConfig)
    return Config(
        path.absolute(),
        daemon,
        accounts,
        services,
        watches,
        media_server,
        None if metrics is None else _metrics(Table(src, "metrics", metrics)),
        webhooks,
        journal,
    )
