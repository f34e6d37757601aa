"""The running daemon: wires journal, watcher, workers, status socket and systemd together.

The main thread only waits, pings the watchdog, updates STATUS= and handles the flags the
signal handlers set (handlers do nothing else). SIGTERM or SIGINT once: stop taking work,
let in-flight requests finish (chunked uploads stop between chunks) for up to
`STOP_TIMEOUT`; twice: leave at once. Either way the journal is consistent and the next
start resumes what was in flight. SIGHUP reloads the configuration.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from syncd import __version__
from syncd.config import Config, WatchConfig, load
from syncd.errors import SyncdError
from syncd.journal import Identity, Journal, Row
from syncd.logs import log_fields, setup_logging
from syncd.mediaserver import MediaServer, Servable, Signer
from syncd.notify import Notifier, listen_fds
from syncd.pipeline import Pipeline, media_type
from syncd.services import make_uploader
from syncd.services.base import Uploader
from syncd.services.oneall import callback_outcome
from syncd.status import StatusServer
from syncd.watcher import Watcher, count_folders, inside, route

log = logging.getLogger(__name__)

STOP_TIMEOUT = 30.0
"""How long in-flight requests may take to finish after SIGTERM (TimeoutStopSec is 90 s)."""
TICK = 1.0
"""The main loop's longest sleep: bounds how late STATUS= and the reload flag are seen."""
FAILURES_SHOWN = 20
EARLY_CALLBACK = "early_callback"
"""Where a callback that arrived before its request's answer waits (in the row's progress)."""


M_MMAP_THRESHOLD = -3


def _return_large_buffers() -> None:
    """Serve chunk buffers (MiBs) from mmap, so that freeing them returns them to the OS.

    Otherwise glibc's adaptive threshold keeps a freed chunk in each worker thread's arena
    and the resident size grows by about a chunk per worker after the first large upload.
    """
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 1024 * 1024)
    except (OSError, AttributeError):
        log.debug("mallopt is not available; large buffers stay with the allocator")


def _lock_state_dir(state_dir: Path) -> int:
    """One daemon per journal: a second would reset the first one's uploads as crashed."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(state_dir / "syncd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SyncdError(f"{state_dir}: cannot use the state folder: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SyncdError(f"{state_dir}: another syncd is already running with it") from None
    return fd


def _inotify_limit() -> int | None:
    try:
        return int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return None


class Workers:
    """`count` threads, each claiming the next due row and running it through the pipeline."""

    def __init__(self, count: int, journal: Journal, pipeline: Pipeline) -> None:
        self._journal = journal
        self._pipeline = pipeline
        self._cond = threading.Condition()
        self._stop = False
        self._generation = 0
        """Counts wake-ups, so a wake between an empty claim and the wait is not lost."""
        self._threads = [
            threading.Thread(target=self._loop, name=f"worker-{n}", daemon=True)
            for n in range(1, count + 1)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        """One more row may be due: one idle worker is enough to take it."""
        with self._cond:
            self._generation += 1
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def _loop(self) -> None:
        while not self._stop:
            with self._cond:
                generation = self._generation
            row = self._journal.claim(time.time())
            if row is None:
                due = self._journal.next_due()
                with self._cond:
                    if self._stop:
                        return
                    if generation == self._generation:
                        self._cond.wait(None if due is None else max(0.01, due - time.time()))
                continue
            self.wake()  # pass the baton: if more rows are due, the next idle worker takes one
            try:
                self._pipeline.process(row)
            except Exception as exc:
                log.exception("unexpected error on %s", os.fsdecode(row.path))
                self._pipeline.fail(row, f"internal error: {type(exc).__name__}: {exc}")
            finally:
                self._journal.release(row.id)


class Daemon:
    def __init__(self, config_path: Path, config: Config, notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self.config = config
        self.notifier = notifier or Notifier.from_env()
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._signals = 0
        self._reload = False
        self._lock = _lock_state_dir(config.daemon.state_dir)
        self.journal = Journal(config.daemon.state_dir / "journal.sqlite")
        self.media: MediaServer | None = None
        self.signer: Signer | None = None
        if config.media_server is not None:
            self.signer = Signer.from_state_dir(
                config.daemon.state_dir, config.media_server.public_url
            )
            self.media = MediaServer(
                config.media_server.host,
                config.media_server.port,
                self.signer,
                self._servable,
                self._on_callback,
            )
        self.pipeline = Pipeline(self.journal, self._inside_watch, self.stopping)
        self.pipeline.use(config.services, self._uploaders(config))
        self.status = StatusServer(
            config.daemon.status_socket, self.answer, config.daemon.status_group
        )
        self.watcher = Watcher(
            config.watches, config.daemon.settle_seconds, self._complete, self.journal.known
        )
        self.workers = Workers(config.daemon.workers, self.journal, self.pipeline)

    def _uploaders(self, config: Config) -> dict[str, Uploader]:
        return {name: make_uploader(s, self.signer) for name, s in config.services.items()}

    # -- start, run, stop --------------------------------------------------------------

    def run(self) -> int:
        _return_large_buffers()
        self._install_signals()
        recovered = self.journal.recover()
        if recovered:
            log.info("resuming %d uploads interrupted by the last stop", recovered)
        self.status.start(listen_fds("status"))
        if self.media is not None:
            self.media.start()
        self._finish_uploaded()
        self.watcher.start()
        self.workers.start()
        self._warn_inotify_limit()
        self.notifier.ready()
        log.info(
            "syncd %s watching %d folders; status on %s",
            __version__,
            len(self.config.watches),
            self.config.daemon.status_socket,
        )
        self._main_loop()
        return self._shutdown()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        self.stopping.set()
        self._wake.set()

    def _on_reload_signal(self, signum: int, frame: FrameType | None) -> None:
        self._reload = True
        self._wake.set()

    def _main_loop(self) -> None:
        interval = self.notifier.watchdog_interval
        tick = min(TICK, interval) if interval else TICK
        last_changes: tuple[int, int, bool] = (-1, -1, False)
        next_rescan = time.monotonic() + (self.config.daemon.rescan_interval or float("inf"))
        while not self.stopping.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self.stopping.is_set():
                break
            if self._reload:
                self._reload = False
                self._apply_reload()
            if interval and self._healthy():
                self.notifier.watchdog()
            changes = (self.journal.changes, self.watcher.scans.count, self.watcher.scans.running)
            if changes != last_changes:
                last_changes = changes
                self.notifier.status(self._status_line())
            self._check_callbacks()
            if time.monotonic() >= next_rescan:
                next_rescan = time.monotonic() + (
                    self.config.daemon.rescan_interval or float("inf")
                )
                self.watcher.request_rescan()
                self._finish_uploaded()

    def _shutdown(self) -> int:
        self.notifier.stopping()
        log.info("stopping: letting in-flight requests finish")
        self.watcher.stop()
        self.workers.stop()
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and self._signals < 2:
            if self.workers.join(0.2):
                break
        finished = self.workers.join(0)
        self.status.close()
        if self.media is not None:
            self.media.stop()
        if finished:
            self.journal.close()
        else:
            log.warning("left unfinished requests behind; they resume at the next start")
        log.info("stopped")
        return 0

    # -- health and status ---------------------------------------------------------------

    def _healthy(self) -> bool:
        return (
            self.watcher.alive()
            and self.workers.alive()
            and self.status.alive()
            and (self.media is None or self.media.alive())
            and self.journal.ping()
        )

    def _status_line(self) -> str:
        counts = self.journal.counts()
        queued = counts["seen"] + counts["hashed"] + counts["retry_wait"]
        parts = [
            f"{len(self.config.watches)} folders",
            f"{counts['uploading']} uploading",
            f"{queued} queued",
        ]
        if counts["awaiting_callback"]:
            parts.append(f"{counts['awaiting_callback']} awaiting callback")
        parts += [f"{counts['done']} done", f"{counts['failed']} failed"]
        if self.watcher.scans.running:
            parts.append("scanning folders")
        return ", ".join(parts)

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The status socket's requests (DESIGN.md, "Status socket")."""
        command = request.get("command")
        if command == "status":
            return self._status_reply()
        if command == "retry":
            if request.get("all_failed") is True:
                count = self.journal.retry(None)
            elif isinstance(request.get("paths"), list) and all(
                isinstance(p, str) for p in request["paths"]
            ):
                count = self.journal.retry(
                    os.fsencode(os.path.abspath(p)) for p in request["paths"]
                )
            else:
                return {"error": 'retry needs "paths": [...] or "all_failed": true'}
            self.workers.wake()
            return {"retried": count}
        return {"error": f"unknown command {command!r}"}

    def _status_reply(self) -> dict[str, Any]:
        counts = self.journal.counts()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "counts": counts,
            "uploads": [
                {
                    "path": u.path,
                    "service": u.service,
                    "sent": u.sent,
                    "total": u.total,
                    "rate": round(u.rate()),
                }
                for u in self.pipeline.in_flight.snapshot()
            ],
            "hashing": [
                {"path": h.path, "service": h.service, "hashed": h.sent, "total": h.total}
                for h in self.pipeline.hashing.snapshot()
            ],
            "failures": [
                {
                    "path": os.fsdecode(row.path),
                    "service": row.service,
                    "error": row.error,
                    "at": _rfc3339(row.error_at),
                }
                for row in self.journal.with_error("failed", FAILURES_SHOWN)
            ],
            "retrying": [
                {
                    "path": os.fsdecode(row.path),
                    "service": row.service,
                    "error": row.error,
                    "next_at": _rfc3339(row.due),
                }
                for row in self.journal.with_error("retry_wait", FAILURES_SHOWN)
            ],
            "watches": [
                {"path": os.fsdecode(w.path), "service": w.service} for w in self.config.watches
            ],
            "settling": self.watcher.pending(),
            "scan": {
                "running": self.watcher.scans.running,
                "completed": self.watcher.scans.count,
                "files": self.watcher.scans.files,
                "seconds": round(self.watcher.scans.seconds, 3),
            },
        }

    # -- files -------------------------------------------------------------------------

    def _complete(self, path: Path, watch: WatchConfig, identity: Identity) -> None:
        if self.journal.record_seen(os.fsencode(path), watch.service, identity):
            self.workers.wake()

    def _inside_watch(self, path: Path) -> bool:
        watch = route(self.config.watches, path)
        return watch is not None and inside(watch, path)

    # -- OneAll: the media server's side -----------------------------------------------

    def _servable(self, row_id: int) -> Servable | None:
        row = self.journal.get(row_id)
        if row is None or row.state not in ("uploading", "awaiting_callback"):
            return None
        path = Path(os.fsdecode(row.path))
        return Servable(path, row.identity, media_type(path))

    def _on_callback(self, row_id: int, data: dict[str, Any]) -> bool:
        """A OneAll callback; one that overtakes its own request's answer is kept for later."""
        row = self.journal.get(row_id)
        if row is not None and row.state == "uploading":
            return self.journal.save_progress(row, {**row.progress, EARLY_CALLBACK: data})
        if row is None or row.state != "awaiting_callback":
            return False
        return self._complete_callback(row, data)

    def _complete_callback(self, row: Row, data: dict[str, Any]) -> bool:
        service = self.config.services.get(row.service)
        outcome = callback_outcome(data)
        if isinstance(outcome, str) or service is None:
            reason = f"{row.service}: OneAll reported: {outcome}"
            log.error("%s: %s", os.fsdecode(row.path), reason, extra=log_fields(row.path))
            return self.journal.mark_failed(row, reason)
        uploaded = self.journal.mark_uploaded(row, outcome)
        if uploaded is None:
            return False
        self.pipeline.finish(uploaded, service)
        return True

    def _check_callbacks(self) -> None:
        """Apply callbacks that came early; fail the rows whose deadline has passed."""
        for row in self.journal.in_state("awaiting_callback"):
            if EARLY_CALLBACK in row.progress:
                self._complete_callback(row, row.progress[EARLY_CALLBACK])
        for row in self.journal.overdue_callbacks(time.time()):
            service = self.config.services.get(row.service)
            timeout = getattr(service, "callback_timeout", 0.0)
            reason = f"{row.service}: no callback from OneAll within {timeout:g} s"
            log.error("%s: %s", os.fsdecode(row.path), reason, extra=log_fields(row.path))
            self.journal.mark_failed(row, reason)

    def _finish_uploaded(self) -> None:
        """Rows uploaded but without their sidecar (a crash, a folder that refused the
        write) get it now: at start and with every periodic rescan."""
        for row in self.journal.in_state("uploaded"):
            service = self.config.services.get(row.service)
            if service is not None:
                self.pipeline.finish(row, service)

    def _warn_inotify_limit(self) -> None:
        limit = _inotify_limit()
        folders = count_folders(self.config.watches)
        if limit is not None and folders > limit * 0.9:
            message = (
                f"{folders} folders to watch but fs.inotify.max_user_watches is {limit}: "
                "raise it (sysctl fs.inotify.max_user_watches=524288)"
            )
            log.warning("%s", message)
            self.notifier.status(message)

    # -- reload ------------------------------------------------------------------------

    def _apply_reload(self) -> None:
        self.notifier.reloading()
        try:
            config = load(self.config_path)
            uploaders = self._uploaders(config)
        except SyncdError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.ready()
            return
        setup_logging(config.daemon.log_level)
        for key in ("state_dir", "status_socket", "workers", "status_group"):
            if getattr(config.daemon, key) != getattr(self.config.daemon, key):
                log.warning("[daemon] %s changes only when syncd restarts", key)
        if config.media_server != self.config.media_server:
            log.warning("[media_server] changes only when syncd restarts")
        self.pipeline.use(config.services, uploaders)
        self.config = config
        self.watcher.settle_seconds = config.daemon.settle_seconds
        self.watcher.apply(config.watches)
        self.workers.wake()
        log.info("configuration reloaded from %s", self.config_path)
        self.notifier.ready()


def _rfc3339(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
