"""The config loader: every refusal reads `FILE: [table] key: problem`, and secrets never leak."""

from __future__ import annotations

import grp
import os
import textwrap
from pathlib import Path

import pytest

from syncd import config
from syncd.config import (
    Account,
    OneAllService,
    TonService,
    TwitLongerService,
    TwitPicService,
    default_config_path,
    default_state_dir,
    default_status_socket,
    load,
    parse_duration,
    parse_size,
)
from syncd.errors import ConfigError

SECRET = "TOPSECRET-d1c3"
OWN_GROUP = grp.getgrgid(os.getgid()).gr_name
"""A group that exists wherever the tests run (status_group must name one)."""

ACCOUNT = f"""
[accounts.main]
consumer_key = "ck"
consumer_secret = "{SECRET}"
access_token = "at"
access_token_secret = "{SECRET}"
"""


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert SECRET not in message
    return message


def watched(tmp_path: Path, name: str = "drop") -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("CONFIGURATION_DIRECTORY", "STATE_DIRECTORY", "RUNTIME_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""))
    assert cfg.source == tmp_path / "config.toml"
    assert cfg.daemon.state_dir == tmp_path / "xdg-state" / "syncd"
    assert cfg.daemon.status_socket == tmp_path / "xdg-run" / "syncd" / "status.sock"
    assert (cfg.daemon.workers, cfg.daemon.settle_seconds, cfg.daemon.log_level) == (4, 2.0, "info")
    assert (cfg.daemon.status_group, cfg.daemon.rescan_interval) == ("", 3600.0)
    assert (cfg.accounts, cfg.services, cfg.watches, cfg.media_server) == ({}, {}, (), None)


def test_full_config_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DROP", str(tmp_path))
    real = watched(tmp_path, "real")
    (tmp_path / "link").symlink_to(real)
    watched(tmp_path, "notes")
    path = write(
        tmp_path,
        ACCOUNT
        + """
        [daemon]
        state_dir = "state"
        status_socket = "${DROP}/run/status.sock"
        workers = 8
        settle_seconds = 0.5
        status_group = "GROUP"
        log_level = "debug"
        rescan_interval = "30m"

        [services.ads]
        type = "ton"
        account = "main"
        bucket = "ta_partner"
        endpoint = "http://127.0.0.1:8080/"
        resumable_threshold = "32MiB"
        chunk_size = 1048576
        expires = "1d"

        [services.photos]
        type = "twitpic"
        account = "main"
        api_key = "k1"
        message = "hello"

        [services.notes]
        type = "twitlonger"
        account = "main"
        api_key = "k2"
        tweet = false
        twitter_endpoint = "http://localhost:8080"

        [services.social]
        type = "oneall"
        endpoint = "https://sub.api.oneall.com"
        public_key = "pub"
        private_key = "priv"
        identity_token = "idt"
        callback_timeout = 600

        [media_server]
        listen = "[::1]:8787"
        public_url = "https://syncd.example.com/"

        [[watch]]
        path = "link"
        service = "ads"
        include = ["*.mp4", "*.mov"]
        exclude = ["*.bak"]
        recursive = false
        poll_interval = "1m"

        [[watch]]
        path = "${DROP}/notes"
        service = "notes"
        """.replace("GROUP", OWN_GROUP),
    )
    cfg = load(path)
    daemon = cfg.daemon
    assert daemon.state_dir == tmp_path / "state"
    assert daemon.status_socket == tmp_path / "run" / "status.sock"
    assert (daemon.workers, daemon.settle_seconds, daemon.rescan_interval) == (8, 0.5, 1800.0)
    assert (daemon.status_group, daemon.log_level) == (OWN_GROUP, "debug")

    main = Account("main", "ck", SECRET, "at", SECRET)
    assert cfg.accounts == {"main": main}
    assert SECRET not in repr(cfg)
    assert cfg.services == {
        "ads": TonService(
            "ads", "http://127.0.0.1:8080", main, "ta_partner", 32 << 20, 1 << 20, 86400
        ),
        "photos": TwitPicService("photos", "https://api.twitpic.com", main, "k1", message="hello"),
        "notes": TwitLongerService(
            "notes",
            "https://api.twitlonger.com",
            main,
            "k2",
            tweet=False,
            twitter_endpoint="http://localhost:8080",
        ),
        "social": OneAllService("social", "https://sub.api.oneall.com", "pub", "priv", "idt", 600),
    }
    assert cfg.media_server == config.MediaServerConfig("::1", 8787, "https://syncd.example.com")
    first, second = cfg.watches
    assert first == config.WatchConfig(real, "ads", ("*.mp4", "*.mov"), ("*.bak",), False, 60.0)
    assert second == config.WatchConfig(tmp_path / "notes", "notes")


def test_service_defaults(tmp_path: Path) -> None:
    cfg = load(
        write(tmp_path, ACCOUNT + '[services.ads]\ntype = "ton"\naccount = "main"\nbucket = "b"')
    )
    ads = cfg.services["ads"]
    assert isinstance(ads, TonService)
    assert (ads.endpoint, ads.resumable_threshold, ads.chunk_size, ads.expires) == (
        "https://ton.twitter.com",
        64 << 20,
        8 << 20,
        7 * 86400,
    )


# --- refusals: exact shape `FILE: [table] key: problem` ---


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("[daemon]\nwokers = 4", "[daemon] wokers", "unknown key"),
        ("[demon]\nworkers = 4", "demon", "unknown table"),
        ("workers = 4", "workers", "unknown key"),
        ("daemon = 4", "daemon", "expected a table, got an integer"),
        ('[daemon]\nworkers = "4"', "[daemon] workers", "expected an integer, got a string"),
        ("[daemon]\nworkers = true", "[daemon] workers", "expected an integer, got a boolean"),
        ("[daemon]\nworkers = 2.0", "[daemon] workers", "expected an integer, got a float"),
        ("[daemon]\none_cpu = 'yes'", "[daemon] one_cpu", "expected a boolean, got a string"),
        ("[daemon]\nworkers = 0", "[daemon] workers", "must be 1 to 256"),
        ("[daemon]\nworkers = 100000", "[daemon] workers", "must be 1 to 256"),
        ("[daemon]\nsettle_seconds = -1", "[daemon] settle_seconds", "a duration must be finite"),
        (
            "[daemon]\nbandwidth = '9999999999GiB'",
            "[daemon] bandwidth",
            "a size must be under 8EiB",
        ),
        (
            "[daemon]\nlog_level = 'loud'",
            "[daemon] log_level",
            "must be debug, info, warning or error",
        ),
        (
            "[daemon]\nstatus_group = 0",
            "[daemon] status_group",
            "expected a string, got an integer",
        ),
        (
            "[daemon]\nstate_dir = '${NO_SUCH_VAR}/x'",
            "[daemon] state_dir",
            "${NO_SUCH_VAR} is not set",
        ),
        (
            "[daemon]\nrescan_interval = 1979-05-27",
            "[daemon] rescan_interval",
            "expected a duration",
        ),
        (
            "[[watch]]\npath = '.'\nservice = 'nope'",
            "[[watch]] #1 service",
            "no [services.nope] table",
        ),
        ("[watch]\npath = '.'", "watch", "expected an array of tables, got a table"),
        ("[services]\nads = 1", "[services] ads", "expected a table, got an integer"),
        ("[services.ads]\naccount = 'main'", "[services.ads] type", "required key is missing"),
        ("[services.ads]\ntype = 'ftp'", "[services.ads] type", "unknown type 'ftp'; use ton, "),
    ],
)
def test_refusals(tmp_path: Path, text: str, where: str, problem: str) -> None:
    path = write(tmp_path, text)
    assert refusal(path).startswith(f"{path}: {where}: {problem}")


@pytest.mark.parametrize(
    ("service", "where", "problem"),
    [
        ("account = 'nope'\nbucket = 'b'", "account", "no [accounts.nope] table"),
        ("account = 'main'", "bucket", "required key is missing"),
        ("account = 'main'\nbucket = 'b'\nbukcet = 'b'", "bukcet", "unknown key"),
        ("account = 'main'\nbucket = 'b'\napi_key = 'x'", "api_key", "unknown key"),
        (
            "account = 'main'\nbucket = 'b'\nresumable_threshold = '65MiB'",
            "resumable_threshold",
            "",
        ),
        (
            "account = 'main'\nbucket = 'b'\nchunk_size = '64MiB'",
            "chunk_size",
            "must be 1 to under",
        ),
        (
            "account = 'main'\nbucket = 'b'\nchunk_size = '8 furlongs'",
            "chunk_size",
            "expected a size",
        ),
        (
            "account = 'main'\nbucket = 'b'\nexpires = '8d'",
            "expires",
            "must be over 0 and at most 7d",
        ),
        ("account = 'main'\nbucket = 'b'\nexpires = 0", "expires", "must be over 0"),
        ("account = 'main'\nbucket = 'b'\nendpoint = 'http://ton.twitter.com'", "endpoint", ""),
    ],
)
def test_ton_refusals(tmp_path: Path, service: str, where: str, problem: str) -> None:
    path = write(tmp_path, ACCOUNT + "[services.ads]\ntype = 'ton'\n" + service)
    assert refusal(path).startswith(f"{path}: [services.ads] {where}: {problem}")


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert refusal(missing) == f"{missing}: cannot read: No such file or directory"
    path = write(tmp_path, f'[accounts.main]\nconsumer_secret = "{SECRET}\n')
    assert refusal(path).startswith(f"{path}: invalid TOML: ")
    path.write_bytes(b'[daemon]\nlog_level = "\xff"\n')
    assert refusal(path) == f"{path}: invalid TOML: not UTF-8 text"


def test_watch_entries_are_named_by_position(tmp_path: Path) -> None:
    watched(tmp_path)
    (tmp_path / "file").touch()
    base = ACCOUNT + "[services.ads]\ntype='ton'\naccount='main'\nbucket='b'\n"
    entry = "[[watch]]\npath = '{}'\nservice = 'ads'\n"
    path = write(tmp_path, base + entry.format("drop") + entry.format("missing"))
    assert refusal(path) == f"{path}: [[watch]] #2 path: {tmp_path}/missing does not exist"
    path = write(tmp_path, base + entry.format("drop") + entry.format("file"))
    assert refusal(path) == f"{path}: [[watch]] #2 path: {tmp_path}/file is not a directory"
    path = write(tmp_path, base + "[[watch]]\nservice = 'ads'\n")
    assert refusal(path) == f"{path}: [[watch]] #1 path: required key is missing"
    path = write(tmp_path, base + entry.format("drop") + "include = '*.txt'\n")
    assert refusal(path).startswith(f"{path}: [[watch]] #1 include: expected an array of strings")


@pytest.mark.parametrize(("interval", "ok"), [(0, True), (30, True), ("2m", True), (10, False)])
def test_poll_interval(tmp_path: Path, interval: object, ok: bool) -> None:
    watched(tmp_path)
    text = ACCOUNT + "[services.ads]\ntype='ton'\naccount='main'\nbucket='b'\n"
    text += f"[[watch]]\npath='drop'\nservice='ads'\npoll_interval={interval!r}\n".replace("'", '"')
    path = write(tmp_path, text)
    if ok:
        assert load(path).watches[0].poll_interval == parse_duration(interval)
    else:
        message = refusal(path)
        assert message == f"{path}: [[watch]] #1 poll_interval: must be 0 (inotify) or >= 30s"


# --- credentials and secrets ---


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_inline_secret_in_readable_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, ACCOUNT, mode)
    assert refusal(path) == (
        f"{path}: [accounts.main] consumer_secret: secret given inline in a file readable by "
        f"other users (mode {mode:04o}); chmod 600 {path} or use consumer_secret_file"
    )


def test_inline_service_secret_is_refused(tmp_path: Path) -> None:
    text = f"""
        [services.photos]
        type = "twitpic"
        account = "main"
        api_key = "{SECRET}"
        [accounts.main]
        consumer_key = "ck"
        consumer_secret_file = "cs"
        access_token = "at"
        access_token_secret_file = "cs"
    """
    (tmp_path / "cs").write_text("from-file\n")
    path = write(tmp_path, text, 0o644)
    assert refusal(path).startswith(f"{path}: [services.photos] api_key: secret given inline in")


def test_inline_secret_in_private_file_and_non_secrets_inline_are_accepted(tmp_path: Path) -> None:
    assert load(write(tmp_path, ACCOUNT, 0o600)).accounts["main"].consumer_secret == SECRET
    (tmp_path / "s").write_text(SECRET)
    text = ACCOUNT.replace(f'secret = "{SECRET}"', 'secret_file = "s"')
    assert load(write(tmp_path, text, 0o644)).accounts["main"].access_token == "at"


def test_key_file_with_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "token_secret").write_text(f"{SECRET}  \n\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    text = ACCOUNT.replace(
        f'access_token_secret = "{SECRET}"',
        'access_token_secret_file = "${CREDENTIALS_DIRECTORY}/token_secret"',
    )
    assert load(write(tmp_path, text)).accounts["main"].access_token_secret == SECRET


@pytest.mark.parametrize(
    ("line", "where", "problem"),
    [
        ('consumer_secret_file = "cs"', "consumer_secret", "give consumer_secret or "),
        ('consumer_key_file = "nope"', "consumer_key", "give consumer_key or consumer_key_file, "),
        ('access_token_file = "${UNSET_VAR}/x"', "access_token_file", "${UNSET_VAR} is not set"),
        ('access_token_file = "empty"', "access_token_file", "{tmp}/empty is empty"),
        ('access_token_file = "gone"', "access_token_file", "cannot read {tmp}/gone: No such file"),
        ("consumer_key = 1", "consumer_key", "expected a string, got an integer"),
        ('consumer_key = ""', "consumer_key", "must not be empty"),
    ],
)
def test_credential_refusals(tmp_path: Path, line: str, where: str, problem: str) -> None:
    (tmp_path / "cs").write_text("x")
    (tmp_path / "empty").write_text(" \n")
    lines = ACCOUNT.strip().splitlines()
    key = line.split("=")[0].strip().removesuffix("_file")
    if line.startswith(("consumer_key ", "access_token_file")):
        lines = [item for item in lines if not item.startswith(f"{key} ")]
    path = write(tmp_path, "\n".join([*lines, line]))
    expected = f"{path}: [accounts.main] {where}: {problem.replace('{tmp}', str(tmp_path))}"
    assert refusal(path).startswith(expected)


def test_missing_credential_mentions_the_file_form(tmp_path: Path) -> None:
    path = write(tmp_path, ACCOUNT.replace('consumer_key = "ck"', ""))
    assert refusal(path) == (
        f"{path}: [accounts.main] consumer_key: required key is missing (or consumer_key_file)"
    )


# --- endpoints, media server ---


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://api.twitpic.com/", "https://api.twitpic.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.9.9.9/base/", "http://127.9.9.9/base"),
        ("http://localhost:1", "http://localhost:1"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://api.twitpic.com", None),
        ("http://10.0.0.1", None),
        ("http://[::2]", None),
        ("ftp://api.twitpic.com", None),
        ("https://", None),
        ("https://host:99999", None),
    ],
)
def test_endpoints(tmp_path: Path, url: str, stored: str | None) -> None:
    text = (
        ACCOUNT
        + f'[services.photos]\ntype="twitpic"\naccount="main"\napi_key="k"\nendpoint="{url}"'
    )
    path = write(tmp_path, text)
    if stored is not None:
        assert load(path).services["photos"].endpoint == stored
    elif url.startswith("http://"):
        assert refusal(path) == (
            f"{path}: [services.photos] endpoint: plain http is allowed only to loopback hosts; "
            "use https"
        )
    else:
        assert refusal(path) == (
            f"{path}: [services.photos] endpoint: expected an http:// or https:// URL with a host"
        )


ONEALL = """
[services.social]
type = "oneall"
endpoint = "https://sub.api.oneall.com"
public_key = "pub"
private_key_file = "pk"
identity_token = "idt"
"""


def test_oneall_needs_media_server_and_endpoint(tmp_path: Path) -> None:
    (tmp_path / "pk").write_text("private")
    path = write(tmp_path, ONEALL)
    assert refusal(path) == f"{path}: [services.social]: oneall needs a [media_server] table"
    path = write(tmp_path, ONEALL.replace('endpoint = "https://sub.api.oneall.com"', ""))
    assert refusal(path) == f"{path}: [services.social] endpoint: required key is missing"


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8787", ("127.0.0.1", 8787)),
        ("[::1]:8787", ("::1", 8787)),
        ("localhost:80", ("localhost", 80)),
        ("::1:8787", None),
        ("127.0.0.1", None),
        ("127.0.0.1:0", None),
        ("host:99999", None),
        ("[zz]:80", None),
        ("user@host:80", None),
    ],
)
def test_media_server_listen(tmp_path: Path, listen: str, expected: tuple[str, int] | None) -> None:
    (tmp_path / "pk").write_text("private")
    media = f'[media_server]\nlisten = "{listen}"\npublic_url = "https://syncd.example.com"\n'
    path = write(tmp_path, ONEALL + media)
    if expected:
        server = load(path).media_server
        assert server is not None
        assert (server.host, server.port) == expected
    else:
        assert refusal(path).startswith(f'{path}: [media_server] listen: expected "HOST:PORT"')


def test_media_server_keys(tmp_path: Path) -> None:
    path = write(tmp_path, '[media_server]\nlisten = "127.0.0.1:1"\n')
    assert refusal(path) == f"{path}: [media_server] public_url: required key is missing"
    path = write(tmp_path, '[media_server]\nlisten = "127.0.0.1:1"\nport = 2\n')
    assert refusal(path) == f"{path}: [media_server] port: unknown key"


# --- sizes, durations, default paths ---


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (512, 512),
        ("512B", 512),
        ("1KiB", 1024),
        ("8MiB", 8 << 20),
        ("64 MiB", 64 << 20),
        ("1GiB", 1 << 30),
        ("10MB", 10**7),
        ("5KB", 5000),
        ("8mib", 8 << 20),
        ("42", 42),
        ("1.5MiB", 3 << 19),
        ("0.5 KiB", 512),
        ("1.5B", 1),
        ("2TiB", 2 << 40),
        ("1TB", 10**12),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value", [-1, True, 1.5, "", "MiB", ".5MiB", "8 Mibs", "-1KiB", [1], "9999999999GiB", 2**63]
)
def test_parse_size_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (2, 2.0),
        (0.5, 0.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 7 * 86400.0),
        ("1h30m", 5400.0),
        ("1h 30m 15s", 5415.0),
        ("1.5h", 5400.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", [-1, True, float("inf"), float("nan"), "", "30", "5 minutes", "h", 1e300, "36501d"]
)
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_default_paths_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", "/etc/syncd:/etc/other")
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/syncd:/var/lib/other")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/syncd:/run/other")
    assert default_config_path() == Path("/etc/syncd/config.toml")
    assert default_state_dir() == Path("/var/lib/syncd")
    assert default_status_socket() == Path("/run/syncd/status.sock")


@pytest.mark.parametrize("euid", [0, 1000])
def test_default_paths_without_systemd(monkeypatch: pytest.MonkeyPatch, euid: int) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setattr(os, "getuid", lambda: euid)
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/is/ignored")
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    root = euid == 0
    config_path = "/etc/syncd/config.toml" if root else "/home/u/.config/syncd/config.toml"
    assert default_config_path() == Path(config_path)
    # DESIGN.md: "Default: $STATE_DIRECTORY, else the XDG state dir", for root too.
    assert default_state_dir() == Path("/home/u/.local/state/syncd")
    # Not a predictable /tmp path another user could take first: the state folder (issue 11).
    socket = "/run/syncd/status.sock" if root else "/home/u/.local/state/syncd/status.sock"
    assert default_status_socket() == Path(socket)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/cfg")
    assert default_status_socket() == Path("/run/user/1000/syncd/status.sock")
    if not root:
        assert default_config_path() == Path("/cfg/syncd/config.toml")


def test_example_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.example.toml names every key; it must stay loadable as the loader changes."""
    example = Path(__file__).parent.parent / "config.example.toml"
    watched(tmp_path, "notes")
    (tmp_path / "token_secret").write_text("t\n")
    (tmp_path / "private_key").write_text("k\n")
    (tmp_path / "webhook_secret").write_text("w\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    text = example.read_text().replace("/srv/drop/notes", "notes")
    cfg = load(write(tmp_path, text.replace("/etc/syncd/oneall_private_key", "private_key")))
    assert set(cfg.services) == {"ads", "photos", "notes", "social"}
    assert cfg.watches[0].path == tmp_path / "notes"
