"""What the status socket answers (DESIGN.md, "Status socket") and the STATUS= line.

Built from the journal (counts, failures, retries), the pipeline (uploads and hashes in
flight, in memory) and intake (files settling, scans), at the moment of asking.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from syncd import __version__
from syncd.config import Config
from syncd.control.printable import printable
from syncd.intake.watcher import Watcher
from syncd.journal.patience import StorageFault
from syncd.journal.states import CLAIMABLE, State
from syncd.journal.store import Row, Store
from syncd.outputs.webhooks import shown_target
from syncd.work.flow import Flow
from syncd.work.pipeline import Pipeline

FAILURES_SHOWN = 20
DELIVERIES_SHOWN = 10
HELD_SHOWN = 100


class Control:
    """Answers status and retry requests; `current` gives the configuration in force."""

    def __init__(
        self,
        current: Callable[[], Config],
        journal: Store,
        pipeline: Pipeline,
        watcher: Watcher,
        wake_workers: Callable[[], None],
        restore: Callable[[str], str | None],
        flow: Flow,
        fleet: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self._fleet = fleet
        """Fleet mode: the hosts sharing the journal, for the reply's `fleet`."""
        self._current = current
        self._journal = journal
        self._pipeline = pipeline
        self._watcher = watcher
        self._wake_workers = wake_workers
        self._restore = restore
        self._flow = flow
        self._started = time.monotonic()

    def status_line(self) -> str:
        try:
            counts = self._journal.counts()
        except StorageFault:  # the journal cannot be read (fleet mode: its database is out)
            return self._pipeline.faults.summary()
        queued = sum(counts[state] for state in CLAIMABLE)
        parts = [
            f"{len(self._current().watches)} folders",
            f"{counts[State.UPLOADING]} uploading",
            f"{queued} queued",
        ]
        if counts[State.HELD]:
            parts.append(f"{counts[State.HELD]} held")
        if paused := self._flow.paused_names():
            parts.append(f"paused: {', '.join(paused)}")
        if counts[State.AWAITING_CALLBACK]:
            parts.append(f"{counts[State.AWAITING_CALLBACK]} awaiting callback")
        parts += [f"{counts[State.DONE]} done", f"{counts[State.FAILED]} failed"]
        if self._watcher.scans.running:
            parts.append("scanning folders")
        line = ", ".join(parts)
        degraded = self._pipeline.faults.summary()
        return f"{degraded}; {line}" if degraded else line

    def problem(self) -> str | None:
        """One line on what is wrong (a degraded component, failed files), for the health
        check; None when nothing."""
        degraded = self._pipeline.faults.summary()
        if degraded:
            return degraded
        failed = self._journal.counts()[State.FAILED]
        if not failed:
            return None
        latest = self._journal.with_error(State.FAILED, 1)
        reason = f"; latest: {os.fsdecode(latest[0].path)}: {latest[0].error}" if latest else ""
        return printable(f"{failed} files failed{reason}")  # names are data: one line, UTF-8

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The status socket's requests (DESIGN.md, "Status socket")."""
        command = request.get("command")
        if command == "status":
            return self._status_reply()
        if command == "retry":
            if request.get("all_failed") is True:
                count = self._journal.retry(None)
            elif isinstance(request.get("paths"), list) and all(
                isinstance(p, str) for p in request["paths"]
            ):
                return self._retry_paths([os.path.abspath(p) for p in request["paths"]])
            else:
                return {"error": 'retry needs "paths": [...] or "all_failed": true'}
            self._wake_workers()
            return {"retried": count}
        if command == "restore":
            return self._restore_reply(request)
        if command in ("pause", "resume"):
            return self._pause_or_resume(command, request.get("services"))
        return {"error": f"unknown command {command!r}"}

    def _retry_paths(self, paths: list[str]) -> dict[str, Any]:
        """Each named file queued again if it failed: {"retried": N, "errors": [one line for
        each path that is not a failed file]}."""
        errors = [
            f"{path}: not a failed file in the journal"
            for path in paths
            if not self._journal.retry([os.fsencode(path)])
        ]
        self._wake_workers()
        return {"retried": len(paths) - len(errors), "errors": errors}

    def _restore_reply(self, request: dict[str, Any]) -> dict[str, Any]:
        """Trashed files back where they were: {"restored": N, "errors": [one line each]}."""
        paths = request.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            return {"error": 'restore needs "paths": [...]'}
        errors = [error for error in map(self._restore, paths) if error is not None]
        return {"restored": len(paths) - len(errors), "errors": errors}

    def _pause_or_resume(self, command: str, services: object) -> dict[str, Any]:
        """`services` absent or empty: every service."""
        if services is None:
            services = []
        if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
            return {"error": f'{command} takes "services": [names]'}
        unknown = sorted(set(services) - set(self._current().services))
        if unknown:
            return {"error": f"no such service: {', '.join(unknown)}", "unknown_services": unknown}
        act = self._flow.pause if command == "pause" else self._flow.resume
        return {"paused": act(services)}

    def _status_reply(self) -> dict[str, Any]:
        reply = self._local_reply()
        if self._fleet is not None:
            reply["fleet"] = [
                {
                    "host": host["host"],
                    "pid": host["pid"],
                    "heartbeat_age_s": round(max(0.0, float(host["heartbeat_age_s"])), 3),
                    "claims": int(host["claims"]),
                }
                for host in self._fleet()
            ]
        return reply

    def _local_reply(self) -> dict[str, Any]:
        counts = self._journal.counts()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "counts": counts,
            "uploads": [
                {
                    "path": u.path,
                    "service": u.service,
                    "sent": u.sent,
                    "total": u.total,
                    "rate": round(u.rate()),
                }
                for u in self._pipeline.in_flight.snapshot()
            ],
            "hashing": [
                {"path": h.path, "service": h.service, "hashed": h.sent, "total": h.total}
                for h in self._pipeline.hashing.snapshot()
            ],
            "failures": [
                _failure(row) for row in self._journal.with_error(State.FAILED, FAILURES_SHOWN)
            ],
            "retrying": [
                {
                    "path": os.fsdecode(row.path),
                    "service": row.service,
                    "error": row.error,
                    "next_at": _rfc3339(row.due),
                }
                for row in self._journal.with_error(State.RETRY_WAIT, FAILURES_SHOWN)
            ],
            **self._after_upload(),
            "held": [
                {
                    "path": os.fsdecode(row.path),
                    "service": row.service,
                    "reason": row.error,
                    "until": _rfc3339(row.due or None),
                }
                for row in self._journal.held(HELD_SHOWN)
            ],
            **self._flow_status(),
            "watches": [
                {"path": os.fsdecode(w.path), "service": w.service} for w in self._current().watches
            ],
            "webhooks": self._webhooks(),
            "settling": self._watcher.pending(),
            "degraded": self._pipeline.faults.snapshot(),
            "scan": {
                "running": self._watcher.scans.running,
                "completed": self._watcher.scans.count,
                "files": self._watcher.scans.files,
                "seconds": round(self._watcher.scans.seconds, 3),
            },
        }

    def _webhooks(self) -> dict[str, Any]:
        """The outbox: how much waits, and the deliveries that keep failing."""
        pending, _ = self._journal.outbox.backlog()
        return {
            "pending": pending,
            "failing": [
                {
                    "receiver": shown_target(d.target),
                    "event": d.event,
                    "id": d.event_id,
                    "path": os.fsdecode(d.path),
                    "service": d.service or None,
                    "component": (d.detail or {}).get("component"),
                    "attempts": d.attempts,
                    "error": d.last_error,
                    "next_at": _rfc3339(d.due),
                }
                for d in self._journal.outbox.failing(DELIVERIES_SHOWN)
            ],
        }

    def _after_upload(self) -> dict[str, Any]:
        """Actions not done yet (and why, when one keeps failing), the trash, failing hooks."""
        counts = self._journal.action_counts()
        return {
            "pending_actions": counts["pending"],
            "trash": counts["trash"],
            "action_errors": [
                {"path": os.fsdecode(a.source), "action": a.kind, "error": a.error}
                for a in self._journal.actions_with_error(FAILURES_SHOWN)
            ],
            "failing_hooks": [
                {
                    "event": h.event.event,
                    "path": os.fsdecode(h.event.path),
                    "command": h.event.argv[0],
                    "error": h.error,
                    "at": _rfc3339(h.at),
                }
                for h in self._journal.failing_hooks(FAILURES_SHOWN)
            ],
        }

    def _flow_status(self) -> dict[str, Any]:
        flow = self._flow.status()
        for hold in flow["service_holds"]:
            hold["until"] = _rfc3339(hold["until"])
        return flow


def _failure(row: Row) -> dict[str, Any]:
    """A failed file; one whose upload went through (its sidecar could not be written)
    also carries the upload's `result`, which `syncd retry` will write without uploading."""
    failure: dict[str, Any] = {
        "path": os.fsdecode(row.path),
        "service": row.service,
        "error": row.error,
        "at": _rfc3339(row.error_at),
    }
    if row.result is not None and row.uploaded_sha256 == row.sha256:
        failure["result"] = {
            key: _rfc3339(value.timestamp()) if isinstance(value, datetime) else value
            for key, value in row.result.items()
        }
    return failure


def _rfc3339(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
