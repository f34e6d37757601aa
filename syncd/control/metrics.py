"""Prometheus metrics (DESIGN.md, "Metrics"): the contract's names, served on `[metrics] listen`.

Two kinds. What the daemon *is* (files per state, the oldest pending file, the last success
per service, pauses, quotas, uploads in flight) is read at scrape time by a collector from
the same journal and pipeline the status reply reads, so the two agree at any moment.
What the daemon *did* since it started (uploads by outcome, bytes, requests by code,
retries, durations) is counted as it happens: `Metrics` is the pipeline's `Outcomes` and
the services' request observer.

The server is waitress with a small thread pool, a connection limit and timeouts, like any
other port syncd listens on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncd import __version__
from syncd.httpserver import WaitressServer
from syncd.journal.patience import StorageFault
from syncd.journal.store import Store
from syncd.work.outcomes import DONE, DUPLICATE, FAILED
from syncd.work.progress import Upload

if TYPE_CHECKING:
    from wsgiref.types import StartResponse
    from wsgiref.types import WSGIApplication as WSGIApp

log = logging.getLogger(__name__)

OUTCOMES = (DONE, FAILED, DUPLICATE)
DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
"""Drop to sidecar: from a second (small files) to a day (a long outage)."""
SERVER_THREADS = 2
CONNECTION_LIMIT = 16
CHANNEL_TIMEOUT = 30
"""Seconds a scrape connection may sit idle before waitress drops it."""
MAX_HEADER = 16 * 1024


class FlowView(Protocol):
    """Pauses and quotas, as flow control keeps them."""

    def paused(self) -> set[str]: ...

    def quota_remaining(self) -> dict[tuple[str, str], int]:
        """(service, unit) -> what is left today; unit `files` or `bytes`."""
        ...


Degraded = Callable[[], Iterable[str]]
"""The components that are degraded now (control/degraded.py: journal, sidecars, ...)."""


class NoFlowControl:
    """Until flow control exists nothing is paused and no service has a quota."""

    def paused(self) -> set[str]:
        return set()

    def quota_remaining(self) -> dict[tuple[str, str], int]:
        return {}


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the gauges read what the daemon is, at scrape time."""

    journal: Store
    in_flight: Callable[[], list[Upload]]
    services: Callable[[], Iterable[str]]
    watches: Callable[[], int]
    degraded: Degraded
    flow: FlowView = field(default_factory=NoFlowControl)


class _StateCollector(Collector):
    """The gauges read at scrape time."""

    def __init__(self, sources: Sources) -> None:
        self._journal = sources.journal
        self._in_flight = sources.in_flight
        self._services = sources.services
        self._watches = sources.watches
        self._flow = sources.flow
        self._degraded = sources.degraded

    def collect(self) -> Iterator[Metric]:
        try:
            from_journal = list(self._from_journal())
        except StorageFault:
            from_journal = []  # left out while the journal cannot be read: syncd_degraded says so
        yield from from_journal
        yield from self._from_host()

    def _from_journal(self) -> Iterator[Metric]:
        files = GaugeMetricFamily("syncd_files", "Files in each state.", labels=["state"])
        for state, count in self._journal.counts().items():
            files.add_metric([state], count)
        yield files
        oldest = self._journal.oldest_pending()
        yield GaugeMetricFamily(
            "syncd_oldest_pending_seconds",
            "Age of the oldest file not yet done or failed (0 when none waits).",
            value=0.0 if oldest is None else max(0.0, time.time() - oldest),
        )
        success = GaugeMetricFamily(
            "syncd_last_success_timestamp_seconds",
            "When each service last had a file uploaded (Unix time).",
            labels=["service"],
        )
        for service, at in sorted(self._journal.last_success().items()):
            success.add_metric([service], at)
        yield success
        quota = GaugeMetricFamily(
            "syncd_quota_remaining",
            "What is left of today's quota, per service and unit (files or bytes).",
            labels=["service", "unit"],
        )
        # read from the journal: left out with the rest while it cannot be read
        for (service, unit), left in sorted(self._flow.quota_remaining().items()):
            quota.add_metric([service, unit], left)
        yield quota
        pending, failing = self._journal.outbox.backlog()
        yield GaugeMetricFamily(
            "syncd_webhook_pending", "Webhook deliveries waiting in the outbox.", value=pending
        )
        yield GaugeMetricFamily(
            "syncd_webhook_failing",
            "Webhook deliveries whose last attempt failed (they are retried).",
            value=failing,
        )

    def _from_host(self) -> Iterator[Metric]:
        names = sorted(self._services())
        paused_now = self._flow.paused()
        paused = GaugeMetricFamily(
            "syncd_paused", "1 while a service is paused.", labels=["service"]
        )
        for service in names:
            paused.add_metric([service], 1.0 if service in paused_now else 0.0)
        yield paused
        yield GaugeMetricFamily(
            "syncd_watches", "Watched folders ([[watch]] entries).", value=self._watches()
        )
        uploads = self._in_flight()
        in_flight = GaugeMetricFamily(
            "syncd_uploads_in_flight", "Uploads being sent now.", labels=["service"]
        )
        sent = GaugeMetricFamily(
            "syncd_upload_in_flight_sent_bytes",
            "Bytes of the uploads in flight that the servers have confirmed.",
            labels=["service"],
        )
        for service in names:
            mine = [u for u in uploads if u.service == service]
            in_flight.add_metric([service], len(mine))
            sent.add_metric([service], sum(u.sent for u in mine))
        yield in_flight
        yield sent
        degraded = GaugeMetricFamily(
            "syncd_degraded", "1 while a component is degraded.", labels=["component"]
        )
        for component in sorted(self._degraded()):
            degraded.add_metric([component], 1.0)
        yield degraded


class Metrics:
    """The registry, and the counters the pipeline and the services feed."""

    def __init__(self, sources: Sources) -> None:
        self.registry = registry = CollectorRegistry()
        counter = partial(Counter, registry=registry)
        self._uploads = counter(
            "syncd_uploads",
            "Files finished, by outcome: done (uploaded), failed, duplicate (not sent again).",
            ["service", "outcome"],
        )
        self._bytes = counter("syncd_upload_bytes", "Bytes of the files uploaded.", ["service"])
        self._requests = counter(
            "syncd_requests",
            'Requests to the services, by HTTP status ("none": no reply).',
            ["service", "code"],
        )
        self._retries = counter(
            "syncd_retries", "Attempts that failed and are tried again.", ["service"]
        )
        self._deliveries = counter(
            "syncd_webhook_deliveries",
            "Webhook delivery attempts, by outcome: delivered or failed (retried later).",
            ["outcome"],
        )
        self._duration = Histogram(
            "syncd_upload_duration_seconds",
            "From a file being journaled to its sidecar being written.",
            ["service"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        for outcome in ("delivered", "failed"):
            self._deliveries.labels(outcome)
        Info("syncd_build", "The running syncd.", registry=registry).info({"version": __version__})
        ProcessCollector(registry=registry)
        registry.register(_StateCollector(sources))

    def use(self, services: Iterable[str]) -> None:
        """Every configured service's series start at 0, so the first event is an increase."""
        for service in services:
            for outcome in OUTCOMES:
                self._uploads.labels(service, outcome)
            self._bytes.labels(service)
            self._retries.labels(service)
            self._duration.labels(service)

    # -- Outcomes (the pipeline) and RequestObserver (the services) ---------------------

    def finished(self, service: str, outcome: str, size: int, seconds: float | None) -> None:
        self._uploads.labels(service, outcome).inc()
        if outcome == DONE:
            self._bytes.labels(service).inc(size)
        if outcome != FAILED and seconds is not None:
            self._duration.labels(service).observe(max(0.0, seconds))

    def retrying(self, service: str) -> None:
        self._retries.labels(service).inc()

    def requested(self, service: str, code: str) -> None:
        self._requests.labels(service, code).inc()

    def delivered(self, ok: bool) -> None:
        """A webhook delivery attempt ended (the webhook sender's report)."""
        self._deliveries.labels("delivered" if ok else "failed").inc()


PATH = "/metrics"


def only_at_metrics(app: WSGIApp) -> WSGIApp:
    """The exposition at /metrics and nothing anywhere else (prometheus_client's app answers
    every path with it, and /favicon.ico with an empty 200)."""

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH:
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not Found\n"]

    return serve


class MetricsServer(WaitressServer):
    """/metrics over HTTP (bound when made, so a port in use is a clear error at once)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        super().__init__(
            only_at_metrics(make_wsgi_app(registry)),
            "metrics",
            f"[metrics] listen: cannot listen on {host}:{port}",
            host=host,
            port=port,
            threads=SERVER_THREADS,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=CHANNEL_TIMEOUT,
            max_request_body_size=0,
            max_request_header_size=MAX_HEADER,
            ident="syncd",
        )

    def start(self) -> None:
        super().start()
        host, port = self.address
        log.info("metrics on http://%s:%d/metrics", host, port)

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one picked for port 0)."""
        return self.address[1]
