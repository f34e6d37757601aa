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

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from syncd import __version__
from syncd.config import Config, MetricsConfig
from syncd.config.restart import reloaded, restart_only
from syncd.control import collector, signals, switching
from syncd.control.counters import Counters, Uncounted
from syncd.control.degraded import FLEET, Degraded
from syncd.control.health import Health, inotify_shortfall
from syncd.control.heartbeat import Heartbeat
from syncd.control.logs import setup_logging
from syncd.control.notify import Notifier, listen_fds
from syncd.control.reply import Control
from syncd.control.status import StatusServer
from syncd.errors import JournalDamaged, SyncdError
from syncd.intake.watcher import Watcher
from syncd.journal.lock import lock_state_dir
from syncd.journal.patience import Calls, StorageFault, answers, opened, patiently, persevering
from syncd.journal.store import Fleet, open_store
from syncd.outputs.alerts import Alerts
from syncd.outputs.healthcheck import HealthCheck
from syncd.outputs.hooks import Hooks
from syncd.outputs.webhooks import Webhooks
from syncd.services import make_uploader
from syncd.services.base import HttpLimits, Uploader
from syncd.work.actions import AfterUpload
from syncd.work.buffers import return_large_buffers
from syncd.work.callbacks import Callbacks
from syncd.work.flow import Clock, Flow, FlowGauges
from syncd.work.once import EXIT_FAILED, OnceRun
from syncd.work.pipeline import Pipeline
from syncd.work.pool import Workers
from syncd.work.queue import Queue

if TYPE_CHECKING:  # waitress is loaded only with [media_server] or [metrics]
    from syncd.httpserver import WaitressServer
    from syncd.services.oneall.mediaserver import MediaServer

log = logging.getLogger(__name__)

STOP_TIMEOUT = 30.0
"""How long in-flight requests may take to finish after SIGTERM (TimeoutStopSec is 90 s)."""
ACTION_STOP_TIMEOUT = 10.0
"""How long an archive or delete under way may take to finish at stop (else it is finished
at the next start)."""
FLEET_IDLE_POLL = 1.0
"""In a fleet, idle workers look for work this often: other hosts add rows, and the claims
of a host that died run out, without telling this one."""
HURRIED = 1.0
"""After a second stop signal, how long idle workers get to end and the sidecar committer to
commit what they handed over (busy workers are left)."""
TICK = 1.0
"""The main loop's longest sleep: bounds how late STATUS= and the reload flag are seen."""


class Daemon:
    def __init__(
        self,
        config_path: Path,
        config: Config,
        notifier: Notifier | None = None,
        once: int | None = None,
    ) -> None:
        """`once`: run until the folders' files are worked off, retrying this many times."""
        self.config_path = config_path
        self.config = config
        self.notifier = notifier or Notifier.from_env()
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._signals = 0
        self._reload = False
        self._catch_up = False  # a reload or a rescan: the chores catch up until that works
        self._lock = lock_state_dir(config.daemon.state_dir)
        self.faults = Degraded()
        store = opened(lambda: open_store(config), self.notifier.waiting, once is None)
        calls = Calls()
        self.journal = persevering(store, self.faults, calls)
        outbox = persevering(self.journal.outbox, self.faults, calls)
        self.alerts = Alerts(outbox)
        self.faults.listen(self.alerts.degraded)
        self.flow = Flow(self.journal, Clock(), lambda: self.workers.wake(), self.alerts.announce)
        self.metrics: Counters = Uncounted()
        self.metrics_server: WaitressServer | None = None
        if config.metrics is not None:
            self.metrics, self.metrics_server = self._metrics(config.metrics)
        self.after = AfterUpload(
            self.journal,
            lambda: self.config.watches,
            lambda: self.pipeline.services,
            lambda path: self.watcher.hint(path, quick=False),
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
        watches, services = lambda: self.config.watches, lambda: self.pipeline.services
        self.hooks = Hooks(self.journal, watches, services, self.pipeline.shortage)
        self.callbacks = Callbacks(self.journal, self.pipeline)
        self.media: MediaServer | None = None
        self.fleet = self.journal if isinstance(self.journal, Fleet) else None
        if self.fleet is not None:
            self.fleet.watch_host_id(
                lambda why: self.faults.set(FLEET, why) if why else self.faults.clear(FLEET)
            )
        if config.media_server is not None:
            from syncd.services.oneall.mediaserver import MediaServer  # waitress: OneAll only

            shared_key = None if self.fleet is None else self.fleet.shared_key
            self.media = MediaServer.configured(
                config.media_server,
                config.daemon.state_dir,
                shared_key,
                self.callbacks.servable,
                self.callbacks.receive,
            )
        self.signer = None if self.media is None else self.media.signer
        self.pipeline.use(config.services, self._uploaders(config))
        queue = Queue(self.journal, lambda: self.workers.wake())
        self.watcher = Watcher(
            config.watches,
            config.daemon.settle_seconds,
            queue.add,
            self.journal.known_in,
            queue.together,
            self.faults,
            config.daemon.rescan_interval,
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
            outbox,
            config.webhooks,
            lambda: {name: s.type for name, s in self.config.services.items()},
            self.metrics.delivered,
            self.alerts.flush,
        )
        self.once = None if once is None else OnceRun(self.journal, self.watcher, once)
        self.health = Health(self._parts, self.control.problem)
        self.heartbeat = Heartbeat(self.notifier, calls)
        self.healthcheck: HealthCheck | None = None
        if config.daemon.healthcheck_url:
            self.healthcheck = HealthCheck(
                config.daemon.healthcheck_url,
                config.daemon.healthcheck_interval,
                self.health.problem,
            )

    def _metrics(self, listen: MetricsConfig) -> tuple[Counters, WaitressServer]:
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
        return_large_buffers()
        if self.config.daemon.one_cpu:  # before any thread starts: they all keep to it
            switching.share_one_cpu()
        signals.take((signal.SIGTERM, signal.SIGINT, signal.SIGHUP), self._on_signal)
        if self.metrics_server is not None:
            self.metrics_server.start()  # before the status socket: once that answers, so does this
        self.status.start(listen_fds("status"))
        with patiently():  # a full disk at start: wait, status saying so, rather than loop
            if recovered := self.journal.recover():
                log.info("resuming %d uploads interrupted by the last stop", recovered)
            if self.media is not None:
                with switching.every_cpu():  # its threads send whole videos
                    self.media.start()
            self.after.recover()
            self.pipeline.catch_up(self.workers.wake)
        self.watcher.start()
        self.workers.start()
        self.after.loop.start()
        self.hooks.start()
        if self.config.webhooks:
            self.webhooks.start()
        if self.healthcheck is not None:
            self.healthcheck.start()
        self.heartbeat.start()
        self.notifier.ready()
        folders, status_on = len(self.config.watches), self.config.daemon.status_socket
        log.info("syncd %s watching %d folders; status on %s", __version__, folders, status_on)
        try:
            self._main_loop()
        except JournalDamaged:  # nothing it says can be trusted: stop, then say why (exit 1)
            self._shutdown()
            raise
        failed = self.once.failed() if self.once is not None else 0
        code = self._shutdown()
        return EXIT_FAILED if code == 0 and failed else code

    def _on_signal(self, signum: int) -> None:
        """On the signals thread (control/signals.py): SIGHUP reloads, the others stop (a
        second one gives up waiting for the requests in flight)."""
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._signals += 1
            self.stopping.set()
        self._wake.set()

    def _main_loop(self) -> None:
        interval = self.notifier.watchdog_interval
        tick = min(TICK, interval) if interval else TICK
        last_changes: tuple[int, int, bool, int] = (-1, -1, False, -1)
        limit_checked = False
        while not self.stopping.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self.stopping.is_set():
                break
            if self._reload:
                self._reload = False
                self._apply_reload()
            try:  # the status line and the health check read the journal
                if interval and self.heartbeat.turned(self.health.healthy()):
                    last_changes = (-1, -1, False, -1)  # STATUS= said the journal was slow
                changes = (
                    self.journal.changes,
                    self.watcher.scans.count,
                    self.watcher.scans.running,
                    self.faults.changes,
                )
                if changes != last_changes:
                    if self.notifier.enabled:  # the line counts every row of the journal
                        self.notifier.status(self.control.status_line())
                    self._catch_up |= changes[1] != last_changes[1]  # after every full scan
                    last_changes = changes
            except StorageFault:
                pass  # the journal cannot be reached: degraded says so; the next tick tries again
            if not limit_checked and self.watcher.scans.count:
                limit_checked = True
                collector.resume()  # the start is over (control/collector.py)
                self._warn_inotify_limit()
            self._journal_chores()
            switching.follow_the_load(time.monotonic())
            if self.once is not None and self.once.finished():
                break

    def _journal_chores(self) -> None:
        """The main loop's own journal work; with the journal's disk full or its database
        unreachable it waits for the next tick instead (the watchdog must keep being pinged),
        status saying degraded."""
        try:
            self.webhooks.catch_up()
            self.callbacks.check()
            self.flow.tick()
            self.pipeline.mend()
            if self._catch_up:
                self.pipeline.catch_up(self.workers.wake)
                self._catch_up = False
        except StorageFault:
            pass

    def _shutdown(self) -> int:
        self.notifier.stopping()
        self.heartbeat.stop()
        log.info("stopping: letting in-flight requests finish")
        self.workers.stop()  # first: no new work while the watcher winds down
        self.watcher.stop()
        self.hooks.stop()
        self.after.loop.stop(ACTION_STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and self._signals < 2:
            if self.workers.join(0.2):
                break
        finished = self.workers.join(HURRIED)
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

    def _parts(self) -> dict[str, Callable[[], bool]]:
        """What must be alive for the daemon to be healthy (control/health.py)."""
        optional = {
            "media server": self.media,
            "metrics": self.metrics_server,
            "webhooks": self.webhooks if self.config.webhooks else None,
        }
        return {
            "watcher": self.watcher.alive,
            "workers": self.workers.alive,
            "status socket": self.status.alive,
            "after-upload actions": self.after.loop.alive,
            "hooks": self.hooks.loop.alive,
            "journal": lambda: answers(self.journal.ping),
            **{name: part.alive for name, part in optional.items() if part is not None},
        }

    def _warn_inotify_limit(self) -> None:
        """Once the start-up scan has counted the folders (no walk of its own)."""
        message = inotify_shortfall(self.watcher.scans.folders)
        if message is not None:
            log.warning("%s", message)
            self.notifier.status(message)

    # -- reload ------------------------------------------------------------------------

    def _apply_reload(self) -> None:
        self.notifier.reloading()
        try:
            config = reloaded(self.config, self.config_path)
            uploaders = self._uploaders(config)
        except SyncdError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.ready()
            return
        setup_logging(config.daemon.log_level)
        for key in restart_only(self.config, config):
            log.warning("%s changes only when syncd restarts", key)
        if self.healthcheck is not None and config.daemon.healthcheck_url:
            self.healthcheck.use(config.daemon.healthcheck_url, config.daemon.healthcheck_interval)
        self.webhooks.use(config.webhooks)
        if config.webhooks and not self.webhooks.alive():
            self.webhooks.start()
        self.pipeline.use(config.services, uploaders)
        self.config = config
        self.flow.use(config)
        self.watcher.settle_seconds = config.daemon.settle_seconds
        self.watcher.rescan_interval = config.daemon.rescan_interval
        self.watcher.apply(config.watches)
        self._catch_up = True
        log.info("configuration reloaded from %s", self.config_path)
        self.notifier.ready()
