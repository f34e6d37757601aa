"""The running daemon: wires journal, watcher, workers, status socket and systemd together.

The main thread only waits, pings the watchdog, updates STATUS= and handles the flags the
signal handlers set (handlers do nothing else). SIGTERM or SIGINT once: stop taking work,
let in-flight requests finish (chunked uploads stop between chunks) for up to
`STOP_TIMEOUT`; twice: leave at once. Either way the journal is consistent and the next
start resumes what was in flight. SIGHUP reloads the configuration.

`run --once` runs the same daemon and leaves once the start-up scan's files are all done,
failed, held or awaiting a callback, with exit code 4 when some failed.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Protocol

from syncd import __version__
from syncd.config import Config, MetricsConfig, WatchConfig, load
from syncd.control.counters import Counters, Uncounted
from syncd.control.degraded import Degraded
from syncd.control.logs import setup_logging
from syncd.control.notify import Notifier, listen_fds
from syncd.control.reply import Control
from syncd.control.status import StatusServer
from syncd.errors import SyncdError
from syncd.files import Identity
from syncd.intake.watcher import Watcher
from syncd.journal.patience import StorageFault, patiently, persevering
from syncd.journal.store import Fleet, open_store
from syncd.outputs.healthcheck import HealthCheck
from syncd.outputs.hooks import Hooks
from syncd.outputs.webhooks import Webhooks
from syncd.services import make_uploader
from syncd.services.base import HttpLimits, Uploader
from syncd.services.oneall.signer import Signer
from syncd.work.actions import AfterUpload
from syncd.work.callbacks import Callbacks
from syncd.work.flow import Clock, Flow, FlowGauges, rank
from syncd.work.pipeline import Pipeline
from syncd.work.pool import Workers

log = logging.getLogger(__name__)

STOP_TIMEOUT = 30.0
"""How long in-flight requests may take to finish after SIGTERM (TimeoutStopSec is 90 s)."""
ACTION_STOP_TIMEOUT = 10.0
"""How long an archive or delete under way may take to finish at stop (else it is finished
at the next start)."""
FLEET_IDLE_POLL = 1.0
"""In a fleet, idle workers look for work this often: other hosts add rows, and the claims
of a host that died run out, without telling this one."""
TICK = 1.0
"""The main loop's longest sleep: bounds how late STATUS= and the reload flag are seen."""
EXIT_FAILED = 4
"""`run --once` finished with failed files (DESIGN.md, "CLI")."""


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


def lock_state_dir(state_dir: Path) -> int:
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


class _Server(Protocol):
    """What the daemon does with a server loaded only when configured (media, metrics)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def alive(self) -> bool: ...


class Daemon:
    def __init__(
        self,
        config_path: Path,
        config: Config,
        notifier: Notifier | None = None,
        once: int | None = None,
    ) -> None:
        """`once`: run until the folders' files are worked off, retrying this many times."""
        self.once = once
        self._once_quiet = 0
        self.config_path = config_path
        self.config = config
        self.notifier = notifier or Notifier.from_env()
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._signals = 0
        self._reload = False
        self._lock = lock_state_dir(config.daemon.state_dir)
        self.faults = Degraded()
        self.journal = persevering(open_store(config), self.faults)
        self.flow = Flow(self.journal, Clock(), lambda: self.workers.wake())
        self.metrics: Counters = Uncounted()
        self.metrics_server: _Server | None = None
        if config.metrics is not None:
            self.metrics, self.metrics_server = self._metrics(config.metrics)
        self.after = AfterUpload(
            self.journal,
            lambda: self.config.watches,
            lambda: self.pipeline.services,
            lambda path: self.watcher.hint(path, quick=False),
        )
        self.hooks = Hooks(
            self.journal, lambda: self.config.watches, lambda: self.pipeline.services
        )
        self.pipeline = Pipeline(
            self.journal,
            lambda: self.config.watches,
            self.stopping,
            self.metrics,
            self.after.completed,
            self.flow,
            self.faults,
        )
        self.callbacks = Callbacks(self.journal, self.pipeline)
        self.media: _Server | None = None
        self.fleet = self.journal if isinstance(self.journal, Fleet) else None
        self.signer: Signer | None = None
        if config.media_server is not None:
            from syncd.services.oneall.mediaserver import MediaServer  # waitress: OneAll only

            url = config.media_server.public_url
            self.signer = (
                Signer.shared(self.fleet.shared_key, url)
                if self.fleet is not None
                else Signer.from_state_dir(config.daemon.state_dir, url)
            )
            self.media = MediaServer(
                config.media_server.host,
                config.media_server.port,
                self.signer,
                self.callbacks.servable,
                self.callbacks.receive,
            )
        self.pipeline.use(config.services, self._uploaders(config))
        self.watcher = Watcher(
            config.watches,
            config.daemon.settle_seconds,
            self._complete,
            self.journal.known,
            self._complete_together,
        )
        self.workers = Workers(
            config.daemon.workers,
            self.journal,
            self.pipeline,
            self.flow,
            self.faults,
            idle_poll=None if self.fleet is None else FLEET_IDLE_POLL,
        )
        self.flow.use(config)
        self.control = Control(
            lambda: self.config,
            self.journal,
            self.pipeline,
            self.watcher,
            self.workers.wake,
            self.after.restore,
            self.flow,
            fleet=None if self.fleet is None else self.fleet.hosts,
        )
        self.status = StatusServer(
            config.daemon.status_socket, self.control.answer, config.daemon.status_group
        )
        self.webhooks = Webhooks(
            persevering(self.journal.outbox, self.faults),
            config.webhooks,
            lambda: {name: s.type for name, s in self.config.services.items()},
            self.metrics.delivered,
        )
        self.healthcheck: HealthCheck | None = None
        if config.daemon.healthcheck_url:
            self.healthcheck = HealthCheck(
                config.daemon.healthcheck_url, config.daemon.healthcheck_interval, self._problem
            )

    def _metrics(self, listen: MetricsConfig) -> tuple[Counters, _Server]:
        from syncd.control.metrics import Metrics, MetricsServer, Sources  # only with [metrics]

        metrics = Metrics(
            Sources(
                self.journal,
                lambda: self.pipeline.in_flight.snapshot(),
                lambda: self.config.services,
                lambda: len(self.config.watches),
                self.faults.components,
                FlowGauges(self.flow),
            )
        )
        return metrics, MetricsServer(listen.host, listen.port, metrics.registry)

    def _uploaders(self, config: Config) -> dict[str, Uploader]:
        self.metrics.use(config.services)
        limits = HttpLimits(config.daemon.request_timeout, config.daemon.max_retry_after)
        return {
            name: make_uploader(s, self.signer, limits, self.metrics.requested)
            for name, s in config.services.items()
        }

    # -- start, run, stop --------------------------------------------------------------

    def run(self) -> int:
        _return_large_buffers()
        self._install_signals()
        if self.metrics_server is not None:
            self.metrics_server.start()  # before the status socket: once that answers, so does this
        self.status.start(listen_fds("status"))
        with patiently():  # a full disk at start: wait, status saying so, rather than loop
            recovered = self.journal.recover()
            if recovered:
                log.info("resuming %d uploads interrupted by the last stop", recovered)
            if self.media is not None:
                self.media.start()
            self.after.recover()
            self.pipeline.finish_uploaded()
        self.watcher.start()
        self.workers.start()
        self.after.loop.start()
        self.hooks.loop.start()
        if self.config.webhooks:
            self.webhooks.start()
        if self.healthcheck is not None:
            self.healthcheck.start()
        self.notifier.ready()
        log.info(
            "syncd %s watching %d folders; status on %s",
            __version__,
            len(self.config.watches),
            self.config.daemon.status_socket,
        )
        self._main_loop()
        failed = self._once_failed() if self.once is not None else 0
        code = self._shutdown()
        return EXIT_FAILED if code == 0 and failed else code

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
        last_changes: tuple[int, int, bool, int] = (-1, -1, False, -1)
        limit_checked = False
        next_rescan = time.monotonic() + (self.config.daemon.rescan_interval or float("inf"))
        while not self.stopping.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self.stopping.is_set():
                break
            if self._reload:
                self._reload = False
                self._apply_reload()
            try:  # the status line and the health check read the journal
                if interval and self._healthy():
                    self.notifier.watchdog()
                changes = (
                    self.journal.changes,
                    self.watcher.scans.count,
                    self.watcher.scans.running,
                    self.faults.changes,
                )
                if changes != last_changes:
                    self.notifier.status(self.control.status_line())
                    last_changes = changes
            except StorageFault:
                pass  # the journal cannot be reached: degraded says so; the next tick tries again
            if not limit_checked and self.watcher.scans.count:
                limit_checked = True
                self._warn_inotify_limit()
            rescan = time.monotonic() >= next_rescan
            if rescan:
                next_rescan = time.monotonic() + (
                    self.config.daemon.rescan_interval or float("inf")
                )
                self.watcher.request_rescan()
            self._journal_chores(rescan)
            if self.once is not None and self._once_finished():
                break

    def _journal_chores(self, rescan: bool) -> None:
        """The main loop's own journal work; with the journal's disk full or its database
        unreachable it waits for the next tick instead (the watchdog must keep being pinged),
        status saying degraded."""
        try:
            self.callbacks.check()
            self.flow.tick()
            self.pipeline.mend()
            if rescan:
                self.pipeline.finish_uploaded()
        except StorageFault:
            pass

    def _once_finished(self) -> bool:
        """Every file found is worked off, on two ticks running: a file the settler has
        just handed over may not be in the journal yet."""
        scans = self.watcher.scans
        quiet = scans.count >= 1 and not scans.running and not self.watcher.pending()
        try:
            quiet = quiet and self.journal.once_outcome(self.once or 0)[0] == 0
        except StorageFault:
            quiet = False
        self._once_quiet = self._once_quiet + 1 if quiet else 0
        return self._once_quiet >= 2

    def _once_failed(self) -> int:
        _, failed = self.journal.once_outcome(self.once or 0)
        log.info("run --once finished: %d files failed", failed)
        return failed

    def _shutdown(self) -> int:
        self.notifier.stopping()
        log.info("stopping: letting in-flight requests finish")
        self.watcher.stop()
        self.workers.stop()
        self.hooks.stop()
        self.after.loop.stop(ACTION_STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and self._signals < 2:
            if self.workers.join(0.2):
                break
        finished = self.workers.join(0)
        self.status.close()
        if self.media is not None:
            self.media.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.healthcheck is not None:
            self.healthcheck.stop()
        self.webhooks.stop()
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
            and self.after.loop.alive()
            and self.hooks.loop.alive()
            and (self.media is None or self.media.alive())
            and (self.metrics_server is None or self.metrics_server.alive())
            and (not self.config.webhooks or self.webhooks.alive())
            and self.journal.ping()
        )

    def _problem(self) -> str | None:
        """What the health check reports: None while all is well."""
        if not self._healthy():
            return "a part of syncd stopped working; see its log"
        return self.control.problem()

    def _complete(self, path: Path, watch: WatchConfig, identity: Identity) -> None:
        """Intake found a complete file: journal it, and wake a worker when there is work."""
        encoded = os.fsencode(path)
        order = rank(watch.order, encoded, identity)
        with patiently():  # a full disk pauses intake here until the file is journaled
            if self.journal.record_seen(encoded, watch.service, identity, watch.priority, order):
                self.workers.wake()

    def _complete_together(self, work: Callable[[], None]) -> None:
        """A settle round's files journaled in one commit; a full disk pauses intake here."""
        with patiently():
            self.journal.batch(work)

    def _warn_inotify_limit(self) -> None:
        """Once the start-up scan has counted the folders (a walk of its own would double
        a restart's work over a large tree)."""
        limit = _inotify_limit()
        folders = self.watcher.scans.folders
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
        if config.metrics != self.config.metrics:
            log.warning("[metrics] changes only when syncd restarts")
        if self.healthcheck is not None and config.daemon.healthcheck_url:
            self.healthcheck.use(config.daemon.healthcheck_url, config.daemon.healthcheck_interval)
        elif config.daemon.healthcheck_url != self.config.daemon.healthcheck_url:
            log.warning("[daemon] healthcheck_url changes only when syncd restarts")
        self.webhooks.use(config.webhooks)
        if config.webhooks and not self.webhooks.alive():
            self.webhooks.start()
        if config.journal != self.config.journal:
            log.warning("[journal] changes only when syncd restarts")
        self.pipeline.use(config.services, uploaders)
        self.config = config
        self.flow.use(config)
        self.watcher.settle_seconds = config.daemon.settle_seconds
        self.watcher.apply(config.watches)
        self.workers.wake()
        log.info("configuration reloaded from %s", self.config_path)
        self.notifier.ready()
