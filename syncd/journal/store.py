"""What the rest of syncd may ask of the journal, whichever database keeps it.

Callers type against `Store`, never against a store class: SQLite under `state_dir` today,
PostgreSQL for a fleet beside it. A row's `version` rises whenever the file changes; writes
that name a row do nothing (and say so) once that version is stale, so a file that changes
mid-upload is never recorded with the old content's hash or result. A claim is held in the
database (owner, expiry, and a fence that rises with every claim), so two workers, or two
hosts, never work the same row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from syncd.errors import SyncdError
from syncd.files import Identity
from syncd.journal.after import AfterUploadStore
from syncd.journal.patience import StorageFault
from syncd.journal.states import State

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.journal.carry import Carried


T = TypeVar("T")

UNREADABLE = "$unreadable"
"""In a row's progress: the JSON columns of the row that could not be read (the row is
failed, with that reason, by whoever meets it)."""


class JournalUnavailable(StorageFault):
    """The journal's database cannot be reached now (fleet mode: PostgreSQL is down or cut
    off). Nothing was written. A storage fault like a full disk, so it is met the same way
    (journal/patience.py): workers and intake wait with backoff, the row as it was, and the
    journal shows as degraded until a call that failed works again."""


@dataclass(frozen=True, slots=True)
class Row:
    """One file's row, by column name."""

    id: int
    path: bytes
    service: str
    state: State
    version: int
    identity: Identity
    sha256: str | None
    attempts: int
    due: float
    error: str | None
    error_at: float | None
    progress: dict[str, Any]
    result: dict[str, Any] | None
    duplicate_of: bytes | None
    uploaded_at: float | None
    uploaded_sha256: str | None
    fence: int
    """The claim this copy of the row was read under; a write under an older one does nothing."""
    queued_at: float | None = None
    """When this version of the file was journaled (or queued again by `syncd retry`)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one receiver."""

    seq: int
    event_id: str
    """The event's id, the same for every receiver: what a receiver dedups on."""
    target: str
    event: str
    at: float
    path: bytes
    service: str
    sha256: str | None
    size: int
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    due: float
    last_error: str | None
    detail: dict[str, Any] | None = None
    """A service-level event's own fields (component, reason, until, ...); None for a file's
    event, whose path, sha256, size and result or error are the columns above."""


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """An event that is not about a file: paused, resumed, quota_exhausted, degraded."""

    event_id: str
    event: str
    at: float
    service: str | None = None
    detail: dict[str, Any] | None = None
    once: str | None = None
    """A key that makes the event happen once ever: a second event with the same key is not
    written (a quota used up: once per service and quota day, whichever host sees it)."""


class Decision(StrEnum):
    """begin_upload's answer."""

    UPLOAD = "upload"
    """This row is the one to upload."""
    DUPLICATE = "duplicate"
    """The content was uploaded already (another path): its result is reused."""
    UNCHANGED = "unchanged"
    """This very path was uploaded with this content before."""
    WAIT = "wait"
    """Another row with the same content is in flight: try again in a moment."""


class Outbox(Protocol):
    """Webhook deliveries waiting, one per event and receiver: a file's written by the store
    in the transaction of the state change they report (done, failed), the service-level
    ones by `emit`."""

    def subscribe(self, targets: Mapping[str, tuple[str, ...]]) -> int:
        """Receiver URL -> the events it wants, from now on; deliveries to receivers no
        longer configured are dropped (how many is returned)."""

    def due(self, now: float, limit: int) -> list[Delivery]: ...

    def failing(self, limit: int) -> list[Delivery]:
        """Deliveries whose last attempt failed, oldest event first."""

    def backlog(self) -> tuple[int, int]:
        """(deliveries waiting, deliveries whose last attempt failed)."""

    def delivered(self, seq: int) -> None: ...

    def emit(self, event: ServiceEvent) -> bool:
        """Write a service-level event for every receiver subscribed to it, in one
        transaction; False when nobody wants it or its `once` key was written before."""

    def failed(self, seq: int, error: str, due: float) -> None:
        """The delivery failed: nothing more goes to its receiver before `due`, so a receiver
        that is down gets one attempt per backoff step, not one per waiting event."""


class Store(AfterUploadStore, Protocol):
    """Durable state of every file syncd knows; safe to share between threads."""

    @property
    def changes(self) -> int:
        """Counts committed state changes (status line recomputed only when it can differ)."""

    def close(self) -> None: ...

    def batch(self, work: Callable[[], T]) -> T:
        """Group commit: `work`'s journal calls commit together in one transaction, all or
        none (an exception rolls them all back); what `work` returns. For several moves of
        one file, or one move of many files, at the price of one commit. `work` makes only
        journal calls: other threads' calls wait until it ends, and a storage fault runs it
        again (journal/patience.py)."""
        ...

    def recover(self) -> int:
        """At start: nothing of this host is in flight any more. Uploads resume from their
        saved progress, this host's claims are dropped; the number of uploads resumed."""

    def ping(self) -> bool:
        """The watchdog's proof that the journal still answers."""

    # -- intake's side -----------------------------------------------------------------

    def known_in(self, folder: bytes) -> dict[bytes, tuple[int, int, int, int]]:
        """The identity (dev, inode, size, mtime_ns) of each file directly in `folder` (a
        path ending in "/"), by path, for the reconciliation scans: plain tuples, which an
        Identity compares equal to. A folder at a time, so that a rescan of a million files
        holds one folder's, not the journal's (330 MiB)."""

    def record_seen(
        self,
        path: bytes,
        service: str,
        identity: Identity,
        priority: int = 0,
        rank: int | bytes | None = None,
    ) -> bool:
        """A complete file: new, or changed since we last saw it. True when there is work.
        `priority` and `rank` place it in the queue (work/flow/order.py)."""

    def forget_missing(self, path: bytes) -> None:
        """A file that vanished before it was uploaded: nothing left to do for it."""

    # -- the workers' side -------------------------------------------------------------

    def claim(self, now: float, skip: frozenset[str] = frozenset()) -> Row | None:
        """The next due claimable row nobody holds, of a service not in `skip`, by priority
        and rank; now held by this store until `release`."""

    def release(self, row_id: int) -> None: ...

    def holds(self, row: Row) -> bool:
        """Whether this store may still write for `row`: the claim it was read under is
        unchanged and this store's (an unclaimed row is taken, keeping its fence). Asked
        before each chunk and before a sidecar, so a host whose claim was taken over stops."""

    def next_due(self, skip: frozenset[str] = frozenset()) -> float | None:
        """When the earliest unclaimed waiting row of a service not in `skip` becomes due
        (idle workers sleep till then)."""

    def get(self, row_id: int) -> Row | None: ...

    def mark_hashed(self, row: Row, sha256: str, identity: Identity) -> Row | None:
        """The row as it now stands, or None when the file changed meanwhile."""

    def mark_changed(self, row: Row) -> bool:
        """The file changed under a worker: hash it again before anything else."""

    def begin_upload(
        self, row: Row, still_valid: Callable[[dict[str, Any]], bool]
    ) -> tuple[Decision, Row] | None:
        """Decide atomically whether this row uploads, reuses an upload, or waits; two copies
        of one content arriving together get exactly one UPLOAD. None: the row changed."""

    def save_progress(self, row: Row, progress: dict[str, Any]) -> bool:
        """A stepwise service's durable state (TON session, TwitLonger's post id, ...)."""

    def load_progress(self, row: Row) -> dict[str, Any]: ...

    def mark_uploaded(self, row: Row, result: dict[str, Any]) -> Row | None:
        """The row as it now stands, or None when the file changed meanwhile."""

    def mark_awaiting(self, row: Row, deadline: float) -> bool:
        """Waiting for a service's callback; `due` holds the deadline."""

    def mark_done(self, row_id: int) -> bool:
        """The sidecar is written: an `uploaded` row is done (any other is left alone, and
        False: in a fleet, another host took the row over and finished it)."""

    def mark_retry(self, row: Row, error: str, due: float) -> bool: ...

    def mark_failed(self, row: Row, error: str) -> bool: ...

    def overdue_callbacks(self, now: float) -> list[Row]:
        """Rows whose callback deadline (kept in `due`) has passed."""

    def in_state(self, state: State) -> list[Row]: ...

    def carried(self) -> Carried:
        """Everything beside `files` that a host joining a fleet carries (journal/carry.py):
        actions, hooks, webhook deliveries, flow control's values, ... as they stand."""

    # -- flow control's side (work/flow/) -----------------------------------------------

    def mark_held(self, row: Row, reason: str, until: float | None) -> bool:
        """Held by a pause, a quota or a rate limit: `error` says why, `due` until when
        (0 when a person must resume it)."""

    def hold_waiting(self, service: str, reason: str, until: float | None) -> int:
        """Every unclaimed row of `service` waiting for a worker becomes held."""

    def release_held(self, service: str) -> int:
        """Every held row of `service` waits for a worker again."""

    def shift_retries(self, seconds: float) -> int:
        """The wall clock stepped by `seconds`: every `retry_wait` row's due time moves as
        much, so each waits the delay it was given, not that plus the step."""

    def held(self, limit: int) -> list[Row]:
        """Held rows, those released soonest first."""

    def release_routed(self, reason: str, routes: Callable[[bytes, str], bool]) -> int:
        """Every row held for `reason` whose (path, service) `routes` accepts waits for a
        worker again, where it was (its progress kept); how many. In a fleet, only the
        rows the asking host's configuration routes: another host's are its own."""

    def flow_state(self, key: str) -> Any:
        """A small JSON value flow control keeps across restarts, or None."""

    def save_flow_state(self, key: str, value: Any) -> None: ...

    def change_flow_state(self, key: str, change: Callable[[Any], Any]) -> None:
        """Replace the value by `change(value)` (None when absent), atomically: in a fleet,
        no other host reads or changes it meanwhile."""

    def not_done(self, ids: list[int]) -> set[int]:
        """Those of the files `ids` whose rows are there and not `done` (a quota's count
        keeps only them)."""

    def once_outcome(self, retries: int) -> tuple[int, int]:
        """For `run --once`: rows still to work, and rows failed (a retryable error tried
        more than `retries` times counts as failed)."""

    # -- the status socket's side ------------------------------------------------------

    def counts(self) -> dict[State, int]:
        """How many rows are in each state, every state present."""

    def with_error(self, state: State, limit: int) -> list[Row]:
        """The latest rows in `state` that carry an error, newest first."""

    def retry(self, paths: Iterable[bytes] | None) -> int:
        """Failed and retry_wait rows (all of them with None) go back to the queue, counted
        afresh; the number of rows queued."""

    # -- metrics ---------------------------------------------------------------------------

    def oldest_pending(self) -> float | None:
        """When the longest-waiting file not yet done or failed was queued."""

    def last_success(self) -> dict[str, float]:
        """Per service, when its latest file was uploaded (or recorded as a duplicate)."""

    @property
    def outbox(self) -> Outbox:
        """The webhook outbox, which `mark_done` and `mark_failed` fill."""


@runtime_checkable
class Fleet(Protocol):
    """What a store shared by several hosts adds (PostgresStore, fleet mode)."""

    def shared_key(self, name: str, make: Callable[[], bytes]) -> bytes:
        """A secret every host uses, made by the first that asks."""

    def hosts(self) -> list[dict[str, Any]]:
        """`syncd status`'s fleet: host, pid, heartbeat_age_s, claims."""

    def watch_host_id(self, changed: Callable[[str | None], None]) -> None:
        """`changed(reason)` when another process takes this one's host_id over (it then
        claims no new work), `changed(None)` when this one holds it again."""


def open_store(config: Config) -> Store:
    """The journal the configuration names: SQLite under `state_dir`, or in fleet mode the
    PostgreSQL database of [journal] (psycopg comes with the `fleet` extra), this process
    then its host_id's one live daemon (HostIdTaken, exit 2, while another holds it)."""
    if config.journal is not None:
        try:
            from syncd.journal.postgres import PostgresStore
        except ImportError:
            raise SyncdError(
                f"{config.source}: [journal] url needs the fleet extra: pip install 'syncd[fleet]'"
            ) from None
        from syncd.journal.pg_hosts import HostIdTaken

        journal = config.journal
        store = PostgresStore(
            journal.url,
            journal.password,
            journal.host_id,
            journal.lease,
            connections=config.daemon.workers + 4,
        )
        try:
            store.seat.join()  # before anything listens: a second daemon of one host_id exits
        except HostIdTaken as taken:
            store.close()
            raise HostIdTaken(f"{config.source}: [journal] {taken}", taken.holder) from None
        except BaseException:
            store.close()
            raise
        return store
    from syncd.journal.sqlite import SqliteStore

    return SqliteStore(config.daemon.state_dir / "journal.sqlite")
