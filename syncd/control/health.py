"""Whether the daemon is working: the watchdog's ping and the health check's summary; and
whether the host lets it watch every folder.

Each long-lived part (threads, servers, the journal) answers `alive`; the watchdog is
pinged only while all do, and the health check reports the first problem it finds: a part
that stopped, else what the status reply calls wrong (a degraded component, failed files).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

INOTIFY_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


class Health:
    """`parts`: name -> its liveness, asked afresh each time (parts can come with a reload)."""

    def __init__(
        self,
        parts: Callable[[], Mapping[str, Callable[[], bool]]],
        problem: Callable[[], str | None],
    ) -> None:
        self._parts = parts
        self._problem = problem

    def healthy(self) -> bool:
        return all(alive() for alive in self._parts().values())

    def problem(self) -> str | None:
        """What the health check reports: None while all is well."""
        stopped = [name for name, alive in self._parts().items() if not alive()]
        if stopped:
            return f"a part of syncd stopped working ({', '.join(stopped)}); see its log"
        return self._problem()


def inotify_shortfall(folders: int) -> str | None:
    """A warning when `folders` to watch come near the user's inotify watch limit."""
    try:
        limit = int(INOTIFY_WATCHES.read_text())
    except (OSError, ValueError):
        return None
    if folders <= limit * 0.9:
        return None
    return (
        f"{folders} folders to watch but fs.inotify.max_user_watches is {limit}: "
        "raise it (sysctl fs.inotify.max_user_watches=524288)"
    )
