"""What the rest of syncd may ask of the journal, whichever database keeps it.

Callers type against `Store`, never against a store class: SQLite under `state_dir` today,
PostgreSQL for a fleet beside it. A row's `version` rises whenever the file changes; writes
that name a row do nothing (and say so) once that version is stale, so a file that changes
mid-upload is never recorded with the old content's hash or result. A claim is held in the
database (owner, expiry, and a fence that rises with every claim), so two workers, or two
hosts, never work the same row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from syncd.files import Identity
from syncd.journal.states import State

if TYPE_CHECKING:
    from syncd.config import Config


@dataclass(frozen=True, slots=True)
class Row:
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


class Store(Protocol):
    """Durable state of every file syncd knows; safe to share between threads."""

    @property
    def changes(self) -> int:
        """Counts committed state changes (status line recomputed only when it can differ)."""

    def close(self) -> None: ...

    def batch(self) -> AbstractContextManager[object]:
        """Group commit: the writes this thread makes inside commit together in one
        transaction, all or none (an exception inside rolls them all back). For several
        moves of one file, or one move of many files, at the price of one commit. Put only
        journal calls inside: other threads' journal calls wait until it ends."""

    def recover(self) -> int:
        """At start: nothing of this host is in flight any more. Uploads resume from their
        saved progress, this host's claims are dropped; the number of uploads resumed."""

    def ping(self) -> bool:
        """The watchdog's proof that the journal still answers."""

    # -- intake's side -----------------------------------------------------------------

    def known(self) -> dict[bytes, tuple[int, int, int, int]]:
        """Every path's identity (dev, inode, size, mtime_ns), for the reconciliation scans:
        plain tuples, which an Identity compares equal to."""

    def record_seen(self, path: bytes, service: str, identity: Identity) -> bool:
        """A complete file: new, or changed since we last saw it. True when there is work."""

    def forget_missing(self, path: bytes) -> None:
        """A file that vanished before it was uploaded: nothing left to do for it."""

    # -- the workers' side -------------------------------------------------------------

    def claim(self, now: float) -> Row | None:
        """The next due claimable row nobody holds, now held by this store until `release`."""

    def release(self, row_id: int) -> None: ...

    def next_due(self) -> float | None:
        """When the earliest unclaimed waiting row becomes due (idle workers sleep till then)."""

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

    def mark_done(self, row_id: int) -> None:
        """The sidecar is written: an `uploaded` row is done (any other is left alone)."""

    def mark_retry(self, row: Row, error: str, due: float) -> bool: ...

    def mark_failed(self, row: Row, error: str) -> bool: ...

    def overdue_callbacks(self, now: float) -> list[Row]:
        """Rows whose callback deadline (kept in `due`) has passed."""

    def in_state(self, state: State) -> list[Row]: ...

    # -- the status socket's side ------------------------------------------------------

    def counts(self) -> dict[State, int]:
        """How many rows are in each state, every state present."""

    def with_error(self, state: State, limit: int) -> list[Row]:
        """The latest rows in `state` that carry an error, newest first."""

    def retry(self, paths: Iterable[bytes] | None) -> int:
        """Failed and retry_wait rows (all of them with None) go back to the queue, counted
        afresh; the number of rows queued."""


def open_store(config: Config) -> Store:
    """The journal the configuration names: SQLite under `state_dir`."""
    from syncd.journal.sqlite import SqliteStore

    return SqliteStore(config.daemon.state_dir / "journal.sqlite")
