"""What a reload (SIGHUP) cannot change: the keys that take effect only at the next start,
each named in a warning so that an operator is not left believing a change took hold."""

from __future__ import annotations

from syncd.config.model import Config

DAEMON_KEYS = ("state_dir", "status_socket", "workers", "status_group")
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
