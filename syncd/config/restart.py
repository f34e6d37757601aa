"""What a reload (SIGHUP) reads and what it cannot change: the file, refused as a whole
when it would stop every watch, and the keys that take effect only at the next start, each
named in a warning so that an operator is not left believing a change took hold."""

from __future__ import annotations

import os
import time
from pathlib import Path

from syncd.config.load import load
from syncd.config.model import Config
from syncd.errors import ConfigError

BEING_WRITTEN = 2.0
"""Seconds since its last change during which the file is read again: a config tool (or an
editor saving in place) that truncates the file, is signalled, then writes the rest would
otherwise have its change refused, or a first part that parses taken, and the rest never."""
REREAD = 0.1
"""Seconds between those reads."""
DAEMON_KEYS = ("state_dir", "status_socket", "workers", "status_group", "one_cpu")
"""[daemon] keys read once at start."""


def restart_only(running: Config, loaded: Config) -> list[str]:
    """The keys (`[table] key`, or a whole table) that differ but wait for a restart.
    `healthcheck_url` counts only when it is turned on or off: a new URL is taken at once."""
    changed = [
        f"[daemon] {key}"
        for key in DAEMON_KEYS
        if getattr(loaded.daemon, key) != getattr(running.daemon, key)
    ]
    if bool(loaded.daemon.healthcheck_url) != bool(running.daemon.healthcheck_url):
        changed.append("[daemon] healthcheck_url")
    for table in ("media_server", "metrics", "journal"):
        if getattr(loaded, table) != getattr(running, table):
            changed.append(f"[{table}]")
    return changed


def reloaded(running: Config, path: Path) -> Config:
    """The configuration a reload reads, checked as at start; a ConfigError too for a file
    with no [[watch]] at all while watches are running: an editor or a config tool that
    truncates the file before writing it, with a SIGHUP in between, would otherwise stop
    every watch until the next reload. (At start such a file is accepted, as it always was.)
    A file still being written is read again until it is still (see BEING_WRITTEN)."""
    deadline = time.monotonic() + BEING_WRITTEN
    while True:
        try:
            loaded = _checked(running, path)
        except ConfigError:
            if not _still_written(path, deadline):
                raise
        else:
            if not _still_written(path, deadline):
                return loaded
        time.sleep(REREAD)


def _still_written(path: Path, deadline: float) -> bool:
    return time.monotonic() < deadline and _just_changed(path)


def _just_changed(path: Path) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime < BEING_WRITTEN
    except OSError:
        return False


def _checked(running: Config, path: Path) -> Config:
    loaded = load(path)
    if running.watches and not loaded.watches:
        raise ConfigError(
            str(loaded.source),
            "[watch]",
            None,
            f"none at all, while the running configuration has {len(running.watches)} (an"
            " empty or half-written file?); to stop every watch, stop syncd",
        )
    return loaded
