"""Every error syncd raises on purpose, under one root.

    SyncdError                 exit 1: a runtime failure
    ├── ConfigError            exit 2: `FILE: [table] key: problem`
    ├── UsageError             exit 2: the command line is wrong
    ├── DaemonNotRunning       exit 3: no daemon answers on the status socket
    ├── JournalDamaged         exit 1: the journal's file is corrupt; the daemon stops
    └── ServiceError           a service refused or failed one file's work
        ├── RetryableError     timeouts, connection errors, 5xx, 429: try again later
        │   └── RateLimited    a 429 with x-rate-limit-reset: the whole service waits
        └── PermanentError     4xx, bad input: the file is marked `failed` with the message

The CLI catches `SyncdError`, prints its message on one line and exits with `exit_code`;
the pipeline catches `ServiceError` and reschedules or fails the file.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Root of syncd's errors; the message is what a person reads."""

    exit_code = 1


class ConfigError(SyncdError):
    """A configuration that cannot be used; the message names file, table and key."""

    exit_code = 2

    def __init__(self, file: str, table: str, key: str | None, problem: str) -> None:
        self.file = file
        self.table = table
        self.key = key
        self.problem = problem
        where = f"[{table}]" if table else ""
        if key:
            where = f"{where} {key}" if where else key
        super().__init__(f"{file}: {where}: {problem}" if where else f"{file}: {problem}")


class UsageError(SyncdError):
    """The command line asks for something that cannot be done."""

    exit_code = 2


class DaemonNotRunning(SyncdError):
    """No daemon answered on the status socket (as `systemctl status` exits 3)."""

    exit_code = 3


class JournalDamaged(SyncdError):
    """The journal's file is corrupt: nothing it says or takes can be trusted, so the daemon
    stops (a restart meets it again at once) until a person restores or salvages it."""


class ServiceError(SyncdError):
    """A service could not complete one file's work."""


class RetryableError(ServiceError):
    """Worth another try later; `retry_after` is the server's own wish, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """The service's rate limit refused us and said when it resets: a service-wide wait."""

    retry_after: float


class PermanentError(ServiceError):
    """Trying again will not help until a person acts; the file is marked `failed`."""
