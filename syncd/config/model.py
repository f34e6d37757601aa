"""The configuration's shape: frozen dataclasses, one per table, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

MiB = 1024 * 1024
DAY = 86400.0

TON_MAX_SINGLE = 64 * MiB
"""TON refuses a single POST of 64 MiB or more, and any chunk that large (protocols.md 2.1)."""

TWITTER_VERIFY_CREDENTIALS = "https://api.twitter.com/1.1/account/verify_credentials.json"
"""The OAuth Echo provider URL that TwitPic and TwitLonger accept."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """[daemon]: the process as a whole."""

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
    one_cpu: bool = True
    """The daemon's threads take their turns at the GIL on one CPU (control/switching.py)."""
    rescan_interval: float = 3600.0
    """A full rescan this often, beside the watcher: inotify can drop events."""
    request_timeout: float = 120.0
    """Every HTTP exchange's total time limit, plus its body's bytes at 8 KiB/s."""
    max_retry_after: float = 3600.0
    """The longest wait a service's Retry-After or x-rate-limit-reset can impose."""
    healthcheck_url: str = ""
    """A dead man's switch pinged while healthy, URL/fail while not; "" = none."""
    healthcheck_interval: float = 300.0
    bandwidth: int = 0
    """Total upload rate in bytes/s, shared by every upload; 0 = unlimited."""
    bandwidth_schedule: tuple[tuple[int, int], ...] = ()
    """(minute of the local day, rate) pairs, sorted: from each time on, that total rate."""


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
    max_parallel: int = field(default=0, kw_only=True)
    """At most this many of this service's uploads at once; 0 = up to `workers`."""
    bandwidth: int = field(default=0, kw_only=True)
    """This service's own rate cap in bytes/s, inside the total; 0 = none."""
    daily_files: int = field(default=0, kw_only=True)
    """Quota: files uploaded per day; 0 = none."""
    daily_bytes: int = field(default=0, kw_only=True)
    """Quota: bytes uploaded per day; 0 = none."""
    quota_reset: int = field(default=0, kw_only=True)
    """Minute of the local day at which the day's quota starts again."""

    type: ClassVar[str]
    captioned: ClassVar[bool] = False
    """Whether the service sends a caption (NAME.caption beside the file): only then is one
    looked for, an open less a small file for the others."""


@dataclass(frozen=True, slots=True)
class TonService(ServiceConfig):
    """A [services.NAME] of type "ton": a TON bucket, single POST or resumable by size."""

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
class EchoService(ServiceConfig):
    """TwitPic and TwitLonger: an API key of their own, and the Twitter account they act
    for proven by OAuth Echo (a request to `verify_credentials_url` they make for us)."""

    account: Account
    api_key: str = field(repr=False)
    verify_credentials_url: str = TWITTER_VERIFY_CREDENTIALS


@dataclass(frozen=True, slots=True)
class TwitPicService(EchoService):
    """A [services.NAME] of type "twitpic": images through OAuth Echo."""

    type: ClassVar[str] = "twitpic"
    captioned: ClassVar[bool] = True
    message: str = ""
    """The caption when no NAME.caption lies beside the file."""


@dataclass(frozen=True, slots=True)
class TwitLongerService(EchoService):
    """A [services.NAME] of type "twitlonger": text files become posts."""

    type: ClassVar[str] = "twitlonger"
    tweet: bool = True
    """Tweet the post's tweet_content and attach the status id back."""
    twitter_endpoint: str = "https://api.twitter.com"


@dataclass(frozen=True, slots=True)
class OneAllService(ServiceConfig):
    """A [services.NAME] of type "oneall": the Push API, media fetched from our server."""

    type: ClassVar[str] = "oneall"
    captioned: ClassVar[bool] = True
    public_key: str
    private_key: str = field(repr=False)
    identity_token: str
    callback_timeout: float = 3600.0
    """A video with no callback by then is failed."""


SERVICE_TYPES: dict[str, type[ServiceConfig]] = {
    cls.type: cls for cls in (TonService, TwitPicService, TwitLongerService, OneAllService)
}
"""A `[services.NAME]` table's `type`, and the dataclass it is read into."""


@dataclass(frozen=True, slots=True)
class MediaServerConfig:
    """Where OneAll fetches files from; URLs are signed and expire."""

    host: str
    port: int
    public_url: str


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Where Prometheus scrapes /metrics."""

    host: str
    port: int


WEBHOOK_EVENTS = ("done", "failed", "paused", "resumed", "quota_exhausted", "degraded")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """A receiver of events, each POSTed as JSON signed with HMAC-SHA256 under `secret`
    (unsigned without one: a receiver that checks nothing needs none)."""

    url: str
    secret: str | None = field(default=None, repr=False)
    events: tuple[str, ...] = ("done", "failed")


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """A [[watch]]: a folder, the service its files go to, and what happens after."""

    path: Path
    """Absolute, symlinks resolved."""
    service: str
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    recursive: bool = True
    poll_interval: float = 0.0
    """0 watches with inotify; otherwise poll this often (network filesystems): >= 30 s, or
    >= 1 s in fleet mode, where polling is how a host sees the others' files."""
    allow_hard_links: bool = False
    """Upload files that have other names too; refused by default, since another name
    may lie outside every watch (README, "Trust boundaries")."""
    after_upload: str = "keep"
    """keep, archive (move to `archive_to`) or delete (into WATCH/.syncd-trash) once done."""
    archive_to: Path | None = None
    """Where archive moves a file and its sidecar, keeping the path below the watch."""
    trash_retention: float = 7 * DAY
    """How long a deleted file stays in the trash, where `syncd restore` can bring it back."""
    on_done: tuple[str, ...] = ()
    """argv run (no shell) once a file is done and its after-upload action has happened."""
    on_failed: tuple[str, ...] = ()
    """argv run (no shell) when a file becomes failed."""
    hook_timeout: float = 60.0
    """A hook still running after this long is killed and counted as failed."""
    order: str = "oldest"
    """Which of this watch's files goes first: oldest, newest, smallest, largest or name."""
    priority: int = 0
    """Higher goes first, across watches."""


@dataclass(frozen=True, slots=True)
class JournalConfig:
    """Fleet mode: the PostgreSQL journal several hosts share (absent: SQLite in state_dir)."""

    url: str
    """postgresql://USER@HOST[:PORT]/DATABASE; the password is never part of it."""
    password: str = field(repr=False)
    """From password_file (or inline); empty when the server needs none."""
    host_id: str
    """This host's name in claims and `syncd status`; must differ between hosts."""
    lease: float = 30.0
    """A claim not renewed for this long is taken over by another host."""


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file, checked: what the daemon runs on until a reload replaces it."""

    source: Path
    daemon: DaemonConfig
    accounts: dict[str, Account]
    services: dict[str, ServiceConfig]
    watches: tuple[WatchConfig, ...]
    media_server: MediaServerConfig | None = None
    metrics: MetricsConfig | None = None
    webhooks: tuple[WebhookConfig, ...] = ()
    journal: JournalConfig | None = None
    """Set in fleet mode only."""
