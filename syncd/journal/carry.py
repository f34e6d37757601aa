"""What a journal holds beside its files that a host joining a fleet must carry with it.

`syncd journal copy` copies a host's `files`, and with them every table whose rows are work
not done yet or state a restart keeps: after-upload actions (moves to come, the trash that
`syncd restore` and the purge read), the hooks' queue, the webhook outbox and its once-keys,
the failed files' cursor and flow control's values (pauses, holds, quota counts). Both
stores read them alike (`Store.carried`), column for column; the PostgreSQL store adopts them
(pg_adopt.py), renumbering what names a file by its id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.journal.store import Row

CARRIED: dict[str, tuple[tuple[str, ...], str]] = {
    "actions": (
        (
            "file_id",
            "version",
            "kind",
            "state",
            "source",
            "target",
            "root",
            "sha256",
            "result",
            "due",
            "error",
            "updated_at",
        ),
        "id",
    ),
    "hooks": (("key", "event", "path", "argv", "env", "timeout", "state", "error", "at"), "id"),
    "outbox": (
        (
            "event_id",
            "target",
            "event",
            "at",
            "path",
            "service",
            "sha256",
            "size",
            "result",
            "error",
            "attempts",
            "due",
            "last_error",
            "detail",
        ),
        "seq",
    ),
    "outbox_once": (("key", "at"), "key"),
    "flow_state": (("key", "value"), "key"),
    "hook_cursor": (("failed_since",), "failed_since"),
}
"""Table -> (the columns carried, in both schemas alike; the order they are read in).
Claims are not carried: a copied row is nobody's."""

Carried = dict[str, list[dict[str, Any]]]
"""Table -> its rows, each a column -> value mapping of the columns CARRIED names."""


def carried_query(table: str) -> str:
    """The same SELECT for either store (constants only)."""
    columns, order = CARRIED[table]
    return f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}"  # noqa: S608


@dataclass(frozen=True, slots=True)
class Adoption:
    """What the journal does not know of the rows it adopts, from the parts that do."""

    place: Callable[[Row], tuple[int, int | bytes | None]]
    """A row's place in this host's queue (priority, rank), as intake gives it."""
    rekey_hook: Callable[[str, Mapping[int, int]], str]
    """A hook's key under the files' new ids (old id -> new)."""
    merge_flow: Callable[[str, Any, Any, Mapping[int, int]], Any]
    """A flow value: (key, the fleet's value or None, the host's, new ids) -> what is kept."""


@dataclass(slots=True)
class Adopted:
    """What `adopt` did."""

    copied: int = 0
    present: int = 0
    """Files the fleet knew already (their path's row is the fleet's; nothing of theirs is
    carried)."""
    ids: dict[int, int] = field(default_factory=dict)
    """Copied files: the host's id -> the fleet's (the same whenever it was free)."""
    known: dict[int, int] = field(default_factory=dict)
    """Every file: the host's id -> the fleet's row of its path, copied or there already."""
    carried: dict[str, int] = field(default_factory=dict)
    """Table -> rows carried."""
    left: dict[str, int] = field(default_factory=dict)
    """Table -> rows not carried, as they belong to a file the fleet knew already."""
    again: bool = False
    """Every file was there already: this journal was copied before, and nothing beside
    its files is carried twice."""
