"""`on_done` / `on_failed`: the operator's programs, told of each event (DESIGN.md, "After upload").

Every event's hook is a row of the journal's queue before it runs (enqueued with what
caused it; failures are found by a cursor over failed files), and is marked only once it
has run: a crash in between runs it again at the next start, so it runs at least once.
Hooks run on threads of their own, argv as given (no shell), with the contract's
environment and `hook_timeout`; what they print goes to the log. A hook that fails or
times out is logged and shown in status, and never changes the file's state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from syncd.config import ServiceConfig, WatchConfig
from syncd.control import switching
from syncd.control.logs import log_fields
from syncd.files import SCARCE, scarce_import
from syncd.intake.routing import route
from syncd.journal.after import HookEvent, HookRow
from syncd.journal.store import Row, Store
from syncd.outputs.sidecar import sidecar_path
from syncd.work.descriptors import Shortage
from syncd.work.loop import Loop

if TYPE_CHECKING:
    from subprocess import Popen

    Process = Popen[bytes]

log = logging.getLogger(__name__)

RUNNERS = 2
"""Hooks run at once; more wait in the queue (a slow hook holds only its own runner)."""
POLL = 1.0
"""How often failed files are looked for, and the queue when nothing woke the runners."""
OUTPUT_LOGGED = 64 * 1024
"""A hook's output beyond this (its tail is kept) is not worth a log line."""


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def _key(event: str, file_id: int, moment: str) -> str:
    """A hook's key: its event, its file's journal id and which of its events it is."""
    return f"{event}:{file_id}:{moment}"


def rekey(key: str, ids: Mapping[int, int]) -> str:
    """A hook's key under its file's id in another journal (`syncd journal copy`), so that
    the event found again there is known as the one already queued."""
    event, file_id, moment = [*key.split(":", 2), "", ""][:3]
    if file_id.isdigit() and int(file_id) in ids:
        return _key(event, ids[int(file_id)], moment)
    return key


def done_event(row: Row, watch: WatchConfig, service_type: str, where: Path) -> HookEvent | None:
    """The done hook of `row`, the file now at `where` (moved there by its action)."""
    if not watch.on_done:
        return None
    result = {k: _json_value(v) for k, v in (row.result or {}).items() if v is not None}
    return HookEvent(
        key=_key("done", row.id, repr(row.version)),
        event="done",
        path=os.fsencode(where),
        argv=watch.on_done,
        env={
            "SYNCD_EVENT": "done",
            "SYNCD_PATH": os.fsdecode(where),
            "SYNCD_SIDECAR": os.fsdecode(sidecar_path(where)),
            "SYNCD_SERVICE": row.service,
            "SYNCD_TYPE": service_type,
            "SYNCD_SHA256": row.sha256 or "",
            "SYNCD_SIZE": str(row.identity.size),
            "SYNCD_RESULT": json.dumps(result),
            "SYNCD_ERROR": "",
        },
        timeout=watch.hook_timeout,
    )


def failed_event(row: Row, watch: WatchConfig, service_type: str) -> HookEvent | None:
    if not watch.on_failed:
        return None
    return HookEvent(
        key=_key("failed", row.id, repr(row.error_at)),
        event="failed",
        path=row.path,
        argv=watch.on_failed,
        env={
            "SYNCD_EVENT": "failed",
            "SYNCD_PATH": os.fsdecode(row.path),
            "SYNCD_SIDECAR": "",
            "SYNCD_SERVICE": row.service,
            "SYNCD_TYPE": service_type,
            "SYNCD_SHA256": row.sha256 or "",
            "SYNCD_SIZE": str(row.identity.size),
            "SYNCD_RESULT": "",
            "SYNCD_ERROR": row.error or "",
        },
        timeout=watch.hook_timeout,
    )


def run(event: HookEvent, started: Callable[[Process], None]) -> str | None:
    """Run one hook to its end or its timeout; None when it succeeded, else why not.
    `started` is told of the process (to be killed at stop). A shortage of descriptors
    that keeps it from starting raises (files.SCARCE): it passes, the hook does not fail."""
    try:
        import subprocess  # at the first hook: most daemons run none, and it is 4 ms of a start
    except ImportError as exc:
        short = scarce_import(exc)
        if short is None:
            raise
        raise short from exc

    fields = log_fields(event.path, event.env["SYNCD_SERVICE"])
    try:
        process = subprocess.Popen(
            event.argv,
            env={**os.environ, **event.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout kills all of it
        )
    except OSError as exc:
        if exc.errno in SCARCE:
            raise
        return f"cannot run {event.argv[0]}: {exc.strerror or exc}"
    started(process)
    output = bytearray()
    reader = threading.Thread(target=_keep_tail, args=(process.stdout, output), daemon=True)
    reader.start()
    deadline = time.monotonic() + event.timeout
    try:
        reader.join(event.timeout)  # the hook is over once its output closes and it exits
        if reader.is_alive():
            raise subprocess.TimeoutExpired(event.argv, event.timeout)
        process.wait(max(0.0, deadline - time.monotonic()))
        error = None if process.returncode == 0 else f"exited with {process.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        reader.join()
        error = f"timed out after {event.timeout:g} s"
    for line in output.decode("utf-8", "replace").splitlines():
        log.info("%s hook %s: %s", event.event, event.argv[0], line, extra=fields)
    return error


def _keep_tail(stream: IO[bytes], tail: bytearray) -> None:
    """Read a hook's output to its end, keeping only the last OUTPUT_LOGGED bytes: a hook
    that prints without end costs no more memory than that."""
    with stream:
        while piece := stream.read1(OUTPUT_LOGGED):  # type: ignore[attr-defined]
            tail += piece
            del tail[:-OUTPUT_LOGGED]


class Hooks:
    """The queue's runners, and the cursor that turns failed files into failed events."""

    def __init__(
        self,
        journal: Store,
        watches: Callable[[], tuple[WatchConfig, ...]],
        services: Callable[[], dict[str, ServiceConfig]],
        shortage: Shortage,
    ) -> None:
        self._journal = journal
        self._watches = watches
        self._services = services
        self._shortage = shortage
        self._claiming = threading.Lock()
        """One runner claims at a time. Its journal call may wait out an outage: nothing
        else ever waits for this lock (stop() must not)."""
        self._claims = threading.Lock()
        self._running: dict[int, Process | None] = {}
        """The hooks being run (by queue id), with their process once it has started;
        changed and read under `_claims`, which is never held across a journal call."""
        self._finding = threading.Lock()
        """Any idle runner looks for new failures; one at a time."""
        self._seen_changes = -1
        """The journal's change count when the queue was last found empty: while it stands
        still, an idle runner asks the journal nothing."""
        self.loop = Loop("hooks", self._step, RUNNERS)

    def start(self) -> None:
        """Its runners on every CPU the daemon may use, as the commands they start."""
        with switching.every_cpu():
            self.loop.start()

    def stop(self) -> None:
        """Hooks still running are killed, and stay in the queue: they run again at the
        next start (rather than outlive the daemon, or hold up its stop)."""
        self.loop.stop(0)
        with self._claims:
            processes = [p for p in self._running.values() if p is not None]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def _step(self) -> float:
        changes = self._journal.changes
        if changes == self._seen_changes and not self._running:
            return POLL  # nothing enqueued, nothing failed, nothing ran since the last look
        if self._finding.acquire(blocking=False):
            try:
                self._find_failures()
            finally:
                self._finding.release()
        hook = self._claim()
        if hook is None:
            self._seen_changes = changes
            return POLL
        return 0 if self._run(hook) else POLL

    def _claim(self) -> HookRow | None:
        with self._claiming:
            with self._claims:
                running = set(self._running)
            found = self._journal.pending_hooks(running, 1)
            if not found:
                return None
            with self._claims:
                self._running[found[0].id] = None
            return found[0]

    def _run(self, hook: HookRow) -> bool:
        """False when it could not start for want of descriptors: it stays queued."""

        def started(process: Process) -> None:
            self._shortage.opened()
            with self._claims:
                self._running[hook.id] = process

        try:
            began = time.monotonic()
            try:
                error = run(hook.event, started)
            except OSError as exc:
                if exc.errno not in SCARCE:
                    raise
                self._shortage.noted(exc)
                return False
            if self.loop.stopping():
                return True
            path = os.fsdecode(hook.event.path)
            fields = log_fields(hook.event.path, hook.event.env["SYNCD_SERVICE"])
            if error is None:
                log.info(
                    "%s hook ran for %s (%.1f s)",
                    hook.event.event,
                    path,
                    time.monotonic() - began,
                    extra=fields,
                )
            else:
                log.error("%s hook for %s: %s", hook.event.event, path, error, extra=fields)
            self._journal.hook_finished(hook.id, error)
            return True
        finally:
            with self._claims:
                self._running.pop(hook.id, None)

    def _find_failures(self) -> None:
        """Failed files since the cursor become failed events of the watches that want them."""
        failed = self._journal.failures_since_cursor()
        if not failed:
            return
        events = []
        for file_id, _ in failed:
            row = self._journal.get(file_id)
            watch = None if row is None else route(self._watches(), Path(os.fsdecode(row.path)))
            if row is not None and watch is not None:
                service = self._services().get(row.service)
                event = failed_event(row, watch, service.type if service else "")
                if event is not None:
                    events.append(event)
        self._journal.failures_enqueued(events, max(at for _, at in failed))
        self.loop.wake()
