"""`syncd status --watch`: the status, redrawn every second until Ctrl-C.

On a terminal, rich draws a bar per upload (sent / total, rate, ETA; rich estimates the
rate from the samples it is given each second), the counts, holds and recent failures.
Anywhere else (a pipe, a log file) it prints one plain line per interval instead. File
names are shown with control characters escaped, so no name can move the cursor.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from syncd.cli.render import counts_line, human_duration, human_size
from syncd.control.printable import printable
from syncd.errors import DaemonNotRunning

INTERVAL = 1.0
FAILURES_SHOWN = 5

Fetch = Callable[[], dict[str, Any]]
"""One status reply; DaemonNotRunning while no daemon answers."""


def shown(value: object) -> str:
    """Text from the reply, safe to print: on one line, escapes for what is not printable."""
    return printable(str(value))


def watch(fetch: Fetch, out: TextIO = sys.stdout, interval: float = INTERVAL) -> int:
    """Until Ctrl-C (SIGINT), which ends it cleanly with exit code 0: also when it was
    started with SIGINT ignored, as a shell script starts what it runs with `&` (Python
    then sets no handler of its own, and a SIGINT would never end the view)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if out.isatty():
            _live(fetch, Console(file=out), interval)
        else:
            _plain(fetch, out, interval)
    except KeyboardInterrupt:
        pass
    return 0


def _poll(fetch: Fetch) -> dict[str, Any] | str:
    """The reply, or why there is none (the daemon may be restarting, or its journal out of
    reach: keep watching)."""
    try:
        reply = fetch()
    except DaemonNotRunning as exc:
        return str(exc)
    return f"error: {shown(reply['error'])}" if "error" in reply else reply


# -- plain lines -----------------------------------------------------------------------


def summary_line(reply: dict[str, Any]) -> str:
    """One line: what is uploading (with bytes and rate), then the counts."""
    parts = []
    uploads = reply.get("uploads", [])
    if uploads:
        sent = sum(int(u["sent"]) for u in uploads)
        total = sum(int(u["total"]) for u in uploads)
        rate = sum(int(u.get("rate", 0)) for u in uploads)
        parts.append(
            f"{len(uploads)} uploading ({human_size(sent)} of {human_size(total)},"
            f" {human_size(rate)}/s)"
        )
    parts.append(counts_line(reply.get("counts", {})))
    if reply.get("failures"):
        latest = reply["failures"][0]
        parts.append(f"latest failure: {shown(latest['path'])}: {shown(latest['error'])}")
    return "; ".join(parts)


def _plain(fetch: Fetch, out: TextIO, interval: float) -> None:
    while True:
        reply = _poll(fetch)
        stamp = time.strftime("%H:%M:%S")
        text = reply if isinstance(reply, str) else summary_line(reply)
        print(f"{stamp} {text}", file=out, flush=True)
        time.sleep(interval)


# -- the live view ---------------------------------------------------------------------


class LiveView:
    """Keeps one rich task per upload across redraws, so rich can estimate rate and ETA."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=None),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            expand=True,
        )
        self._tasks: dict[tuple[str, str], TaskID] = {}

    def render(self, reply: dict[str, Any] | str) -> RenderableType:
        if isinstance(reply, str):
            return Text(reply, style="bold red")
        self._update_bars(reply)
        header = Text(
            f"syncd {shown(reply.get('version'))} (pid {shown(reply.get('pid'))}),"
            f" up {human_duration(float(reply.get('uptime_s', 0)))}",
            style="bold",
        )
        parts: list[RenderableType] = [header, Text(counts_line(reply.get("counts", {})))]
        if self._tasks:
            parts.append(self.progress)
        parts += _holds(reply) + _failures(reply)
        return Group(*parts)

    def _update_bars(self, reply: dict[str, Any]) -> None:
        moving: dict[tuple[str, str], tuple[str, int, int]] = {}
        for upload in reply.get("uploads", []):
            label = f"{shown(upload['path'])} -> {shown(upload['service'])}"
            moving[("upload", upload["path"])] = (label, upload["sent"], upload["total"])
        for hashing in reply.get("hashing", []):
            label = f"{shown(hashing['path'])} (hashing)"
            moving[("hash", hashing["path"])] = (label, hashing["hashed"], hashing["total"])
        for key in set(self._tasks) - set(moving):
            self.progress.remove_task(self._tasks.pop(key))
        for key, (label, done, total) in moving.items():
            if key not in self._tasks:
                self._tasks[key] = self.progress.add_task(label, total=total, completed=done)
            else:
                self.progress.update(self._tasks[key], completed=done, total=total)


def _holds(reply: dict[str, Any]) -> list[RenderableType]:
    held = reply.get("held") or []
    paused = reply.get("paused") or []
    if not held and not paused:
        return []
    table = Table(title="held", title_justify="left", expand=True, show_edge=False)
    for column in ("file", "service", "reason", "until"):
        table.add_column(column)
    for hold in held:
        table.add_row(
            Text(shown(hold["path"])), Text(shown(hold["service"])),
            Text(shown(hold.get("reason"))), Text(shown(hold.get("until") or "")),
        )  # fmt: skip
    parts: list[RenderableType] = []
    if paused:
        parts.append(Text("paused: " + ", ".join(shown(p) for p in paused), style="yellow"))
    if held:
        parts.append(table)
    return parts


def _failures(reply: dict[str, Any]) -> list[RenderableType]:
    failures = reply.get("failures") or []
    if not failures:
        return []
    table = Table(title="recent failures", title_justify="left", expand=True, show_edge=False)
    for column in ("at", "file", "service", "error"):
        table.add_column(column)
    for failure in failures[:FAILURES_SHOWN]:
        table.add_row(
            Text(shown(failure["at"])),
            Text(shown(failure["path"])),
            Text(shown(failure["service"])),
            Text(shown(failure["error"]), style="red"),
        )
    return [table]


def _live(fetch: Fetch, console: Console, interval: float) -> None:
    view = LiveView()
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            live.update(view.render(_poll(fetch)), refresh=True)
            time.sleep(interval)
