"""The configuration: one TOML file read into frozen dataclasses.

Every problem is reported as `ConfigError(file, table, key, problem)`, which prints as
`FILE: [table] key: problem`, so an operator is sent straight to the line to fix.
`model` holds the shape, `values` parses single values, `table` reads them in a table's
context, `keys` says how each key is read, `load` reads the whole file.
"""

from syncd.config.keys import CREDENTIALS
from syncd.config.load import load
from syncd.config.model import (
    DAY,
    TON_MAX_SINGLE,
    TWITTER_VERIFY_CREDENTIALS,
    WEBHOOK_EVENTS,
    Account,
    Config,
    DaemonConfig,
    JournalConfig,
    MediaServerConfig,
    MetricsConfig,
    MiB,
    OneAllService,
    ServiceConfig,
    TonService,
    TwitLongerService,
    TwitPicService,
    WatchConfig,
    WebhookConfig,
)
from syncd.config.table import SECRETS
from syncd.config.values import (
    default_config_path,
    default_state_dir,
    default_status_socket,
    parse_duration,
    parse_size,
)

__all__ = [
    "CREDENTIALS",
    "DAY",
    "SECRETS",
    "TON_MAX_SINGLE",
    "TWITTER_VERIFY_CREDENTIALS",
    "WEBHOOK_EVENTS",
    "Account",
    "Config",
    "DaemonConfig",
    "JournalConfig",
    "MediaServerConfig",
    "MetricsConfig",
    "MiB",
    "OneAllService",
    "ServiceConfig",
    "TonService",
    "TwitLongerService",
    "TwitPicService",
    "WatchConfig",
    "WebhookConfig",
    "default_config_path",
    "default_state_dir",
    "default_status_socket",
    "load",
    "parse_duration",
    "parse_size",
]
