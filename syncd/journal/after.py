"""The journal's after-upload tables: actions on uploaded files, and the hooks' queue.

An action row is the intent -> act -> done record of one archive or delete: `pending`
(scheduled when its file became done), `moving` (the target name chosen, committed before
anything moves), `moved` (the file and sidecar are there; for a delete, in the trash until
`trash_retention` is over), then `restoring` -> `restored` or `purged`; `skipped` when
the file changed or vanished first. An intent is committed with synchronous=FULL before
anything moves, so a power cut cannot forget a move that began; what follows it may be
lost and is then redone (every step is idempotent), as is an enqueue lost together with
the state change that followed it.

A hook row is one event's hook, enqueued in the same transaction as what caused it (or,
for failures, found by a cursor over failed files), and run at least once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from syncd.files import Identity

HOOKS_KEPT = 86400.0
"""Finished hooks are kept this long: a failed one is shown in status meanwhile, and the key
of a done event enqueued again after a crash must still be there to be recognised."""

UNFINISHED = "state IN ('pending', 'moving', 'restoring')"
"""SQL, the same for every store: actions not finished yet."""
IN_TRASH = "kind='delete' AND state='moved'"
"""SQL: actions whose file is in the trash."""
FINISHED = "(state IN ('skipped', 'restored', 'purged') OR (kind='archive' AND state='moved'))"
"""SQL: actions that are history."""


class ActionTaken(Exception):
    """A fleet's other host took this action over: this host does nothing more for it."""


@dataclass(frozen=True, slots=True)
class Action:
    """One after-upload action, as its journal row stands."""

    id: int
    file_id: int
    version: int
    kind: str
    state: str
    source: bytes
    target: bytes | None
    root: bytes
    sha256: str
    result: dict[str, Any] | None
    due: float
    error: str | None


@dataclass(frozen=True, slots=True)
class HookEvent:
    """One event's hook, everything it needs frozen at the moment of the event."""

    key: str
    """Unique per event: enqueuing the same event twice (after a crash) keeps one."""
    event: str
    path: bytes
    argv: tuple[str, ...]
    env: dict[str, str]
    timeout: float


@dataclass(frozen=True, slots=True)
class HookRow:
    """A queued hook and how it went: pending, ok or failed."""

    id: int
    event: HookEvent
    state: str
    error: str | None
    at: float


class AfterUploadStore(Protocol):
    """The journal's after-upload side (part of Store): actions and the hooks' queue."""

    # -- actions -----------------------------------------------------------------------

    def schedule_action(
        self, file_id: int, version: int, kind: str, source: bytes, root: bytes, due: float
    ) -> None:
        """Once per version of a file (again: nothing); its sha256 and result are copied."""

    def due_actions(self, now: float) -> list[Action]:
        """Moves cut short first, then pending actions due by `now`."""

    def next_action_due(self) -> float | None: ...

    def action_intent(self, action: Action, target: bytes) -> None:
        """`moving` to `target`, synced to disk before anything moves."""

    def action_moved(self, action: Action, hook: HookEvent | None) -> None:
        """Done (for a delete: in the trash from now on), with its done hook enqueued."""

    def action_skipped(self, action: Action, reason: str, hook: HookEvent | None) -> None: ...

    def action_later(self, action: Action, error: str | None, due: float) -> None:
        """Tried again at `due`; `error` is shown in status meanwhile."""

    def trashed(self, path: bytes) -> Action | None:
        """The latest file in the trash that came from `path` (or lies at `path` in it)."""

    def restore_intent(self, action: Action, identity: Identity) -> str | None:
        """Before a trashed file goes back: its path's row says done with the file's
        identity and uploaded content (intake finds nothing new, nothing uploads again), a
        version of its own whose record is this action (nothing acts on it again). Synced
        to disk. The state of the path's row when it refuses (anything but done)."""

    def action_restored(self, action: Action) -> None: ...

    def purgeable(self, trash: bytes, trashed_before: float) -> list[Action]:
        """What went into the trash folder `trash` before then (the retention in force now
        applies, also to what was trashed under another)."""

    def trash_ages(self) -> dict[bytes, float]:
        """Each trash folder that holds files, with when its oldest went in."""

    def action_purged(self, action: Action) -> None: ...

    def action_counts(self) -> dict[str, int]:
        """ "pending": actions not finished yet; "trash": files in the trash."""

    def forget_actions(self, finished_before: float) -> None:
        """Finished actions are history: those finished before then go (not the trash's)."""

    def actions_with_error(self, limit: int) -> list[Action]:
        """Unfinished actions whose last try failed, newest first."""

    # -- hooks -------------------------------------------------------------------------

    def enqueue_hook(self, hook: HookEvent) -> None:
        """Once per event key (again: nothing)."""

    def pending_hooks(self, exclude: Iterable[int], limit: int) -> list[HookRow]:
        """Hooks not run yet, oldest first, but those in `exclude` (being run)."""

    def hook_finished(self, hook_id: int, error: str | None) -> None:
        """Ran (error None) or failed; finished hooks are forgotten after a day."""

    def failing_hooks(self, limit: int) -> list[HookRow]:
        """Hooks that failed, newest first."""

    def failures_since_cursor(self) -> list[tuple[int, float]]:
        """The failed files (id, error_at) since the cursor; the caller enqueues their
        hooks and moves the cursor on with `failures_enqueued`."""

    def failures_enqueued(self, hooks: list[HookEvent], cursor: float) -> None: ...
