"""A file's states and every move between them; a move not in the table is a bug.

The README's "How a file moves through the journal" lists this table line for line (a test
holds them together). Every store checks each state-changing write with `check_move`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum


class State(StrEnum):
    SEEN = "seen"
    """Complete on disk, not hashed yet."""
    HASHED = "hashed"
    UPLOADING = "uploading"
    RETRY_WAIT = "retry_wait"
    """A retryable error; claimable again once `due`."""
    HELD = "held"
    """Held back by a quota or a pause: not a failure, costs no request."""
    UPLOADED = "uploaded"
    """The service has it; the sidecar is not written yet."""
    AWAITING_CALLBACK = "awaiting_callback"
    """A OneAll video: the outcome comes later, by callback, before `due`."""
    DONE = "done"
    FAILED = "failed"
    """A permanent error; stays until `syncd retry`."""


CLAIMABLE = frozenset({State.SEEN, State.HASHED, State.RETRY_WAIT})
"""States a worker may claim once the row is due."""
IN_FLIGHT = frozenset({State.UPLOADING, State.AWAITING_CALLBACK})
"""States in which a service holds the content (dedup waits for them)."""

_S = State
TRANSITIONS: Mapping[State, frozenset[State]] = {
    # Any state goes back to `seen` when the file changes (intake, or a worker noticing).
    _S.SEEN: frozenset({_S.SEEN, _S.HASHED, _S.HELD, _S.FAILED}),
    # hashed -> hashed: the file was hashed again (its identity moved under the worker).
    # hashed -> uploaded: a duplicate, or the same content this path already uploaded.
    _S.HASHED: frozenset({_S.SEEN, _S.HASHED, _S.UPLOADING, _S.UPLOADED, _S.HELD, _S.FAILED}),
    # -> hashed: recovery after a crash; -> retry_wait: retryable error or a stop signal.
    _S.UPLOADING: frozenset(
        {
            _S.SEEN,
            _S.HASHED,
            _S.RETRY_WAIT,
            _S.HELD,
            _S.UPLOADED,
            _S.AWAITING_CALLBACK,
            _S.FAILED,
        }
    ),
    # -> seen / hashed: `syncd retry`, or hashed again once due.
    _S.RETRY_WAIT: frozenset({_S.SEEN, _S.HASHED, _S.UPLOADING, _S.UPLOADED, _S.HELD, _S.FAILED}),
    # Released when the quota resets or the pause ends, to where it was held from.
    _S.HELD: frozenset({_S.SEEN, _S.HASHED, _S.RETRY_WAIT}),
    # -> failed: the sidecar cannot be written for good (a name too long, a folder in its
    # place), or a bug; the result stays, and `syncd retry` writes it without uploading.
    _S.UPLOADED: frozenset({_S.SEEN, _S.DONE, _S.FAILED}),
    _S.AWAITING_CALLBACK: frozenset({_S.SEEN, _S.UPLOADED, _S.FAILED}),
    # done -> done: `syncd restore` brings a trashed version back, done as it was.
    _S.DONE: frozenset({_S.SEEN, _S.DONE}),
    # -> seen / hashed: `syncd retry`.
    _S.FAILED: frozenset({_S.SEEN, _S.HASHED}),
}


class IllegalTransition(Exception):
    """A write tried a move the table does not allow: a bug in syncd, never a user's error."""

    def __init__(self, source: State, target: State) -> None:
        super().__init__(f"illegal journal transition {source} -> {target}")
        self.source = source
        self.target = target


def allowed(source: State, target: State) -> bool:
    return target in TRANSITIONS[source]


def check_move(source: State, target: State) -> None:
    """Raises IllegalTransition unless `source -> target` is in the table."""
    if not allowed(source, target):
        raise IllegalTransition(source, target)


def check_moves(sources: Iterable[State], target: State) -> None:
    """The same for a write over many rows, from any of `sources`."""
    for source in sources:
        check_move(source, target)
