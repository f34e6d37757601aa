"""Where log records go: journald with structured fields under systemd, stderr otherwise.

Under systemd with systemd-python installed, records go to journald through
`JournalHandler`, and the UPPERCASE keys of `extra=` (see `log_fields()`) become fields,
so `journalctl -u syncd SYNCD_PATH=/srv/drop/a.jpg` finds one file's story. Anywhere else a
compact line goes to stderr.

Every record is one line that no file name can forge: the message is escaped
(control/printable.py), and a traceback's lines are escaped and indented under it. The
fields keep names exact.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from types import ModuleType

from syncd.control.printable import printable

HANDLER_NAME = "syncd"
"""Marks the handler `setup_logging()` installs, so a second call replaces it."""

QUIET_LOGGERS = ("urllib3", "oauthlib", "requests_oauthlib", "watchdog")
"""Kept at WARNING or above even at `log_level = "debug"`: urllib3 logs every connection,
and the OAuth libraries log signature base strings and Authorization headers."""

_SYSLOG_PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
"""Python level -> syslog priority; anything below INFO is debug (7)."""


def setup_logging(level: str) -> None:
    """Route the root logger for `level` ("debug", "info", "warning", "error").

    Raises ValueError for an unknown level name. Calling it again (e.g. after a reload
    changed `log_level`) replaces the handler instead of adding a second one.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    handler = _handler()
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # A logger's own level decides before its records propagate: raising only the root's
    # would not silence these.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def log_fields(
    path: Path | bytes | str | None = None,
    service: str | None = None,
    state: str | None = None,
) -> dict[str, str]:
    """The `extra=` of a record about one file; journald keeps these as searchable fields.

    A path that is not valid UTF-8 is shown with `\\xNN` escapes: journald fields are
    UTF-8, and the escapes still tell an operator which bytes are odd.
    """
    fields: dict[str, str] = {}
    if path is not None:
        fields["SYNCD_PATH"] = os.fsencode(path).decode("utf-8", "backslashreplace")
    if service is not None:
        fields["SYNCD_SERVICE"] = service
    if state is not None:
        fields["SYNCD_STATE"] = state
    return fields


def _handler() -> logging.Handler:
    """The handler for where we run (see the module docstring)."""
    handler: logging.Handler
    if not _stderr_is_journal():
        handler = logging.StreamHandler()
        handler.setFormatter(
            _OneLineFormatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    elif (journal := _journal_module()) is not None:
        handler = journal.JournalHandler(SYSLOG_IDENTIFIER="syncd")
        handler.setFormatter(_OneLineFormatter("%(message)s"))
    else:
        # journald adds the time; the prefix gives it the priority.
        handler = logging.StreamHandler()
        handler.setFormatter(_PriorityFormatter("%(levelname)s %(message)s"))
    return handler


def _journal_module() -> ModuleType | None:
    """systemd-python's `systemd.journal`, or None when the extra is not installed."""
    try:
        return importlib.import_module("systemd.journal")
    except ImportError:
        return None


def _stderr_is_journal() -> bool:
    """Whether fd 2 is the journal stream systemd set up (systemd.exec(5), $JOURNAL_STREAM).

    Checking the device and inode, not just that the variable is set, keeps a `syncd run`
    started from a shell inside a service, with stderr redirected, writing to its stderr.
    """
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


class _OneLineFormatter(logging.Formatter):
    """The message escaped onto one line; a traceback's lines escaped and indented below it,
    so that a line that starts at the margin is always the start of a record."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = printable(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        details = [record.exc_text] if record.exc_text else []
        if record.stack_info:
            details.append(self.formatStack(record.stack_info))
        for detail in details:
            for line in detail.splitlines():
                text += f"\n{self.continuation(record)}  {printable(line)}"
        return text

    def continuation(self, record: logging.LogRecord) -> str:
        """What starts each line of a traceback."""
        return ""


class _PriorityFormatter(_OneLineFormatter):
    """Prefixes `<N>` (sd-daemon(3)) so journald records the priority of each stderr line."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.continuation(record)}{super().format(record)}"

    def continuation(self, record: logging.LogRecord) -> str:
        priority = next((p for lvl, p in _SYSLOG_PRIORITIES if record.levelno >= lvl), 7)
        return f"<{priority}>"
