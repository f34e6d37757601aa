"""The after-upload part of the Store protocol, for every store: actions and the hooks' queue."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from syncd.files import Identity
from syncd.journal.after import Action, HookEvent
from syncd.journal.states import State
from syncd.journal.store import Row, Store

from .test_store import FAR, ident, uploaded

EXPIRES = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def done(store: Store, path: bytes) -> Row:
    row = uploaded(store, path, {"location": "/x", "expires": EXPIRES})
    store.mark_done(row.id)
    return row


def in_trash(store: Store, path: bytes) -> tuple[Row, Action]:
    """A done file, deleted into the trash."""
    row = done(store, path)
    store.schedule_action(row.id, row.version, "delete", row.path, b"/w/.syncd-trash", 0.0)
    store.action_intent(store.due_actions(FAR)[0], b"/w/.syncd-trash/" + path.split(b"/")[-1])
    store.action_moved(store.due_actions(FAR)[0], None)
    action = store.trashed(path)
    assert action is not None
    return row, action


def hook(key: str) -> HookEvent:
    return HookEvent(key, "done", b"/w/f", ("true",), {"SYNCD_EVENT": "done"}, 5.0)


def test_an_action_is_scheduled_once_per_version_with_the_rows_content(store):
    row = done(store, b"/w/a")
    for _ in range(2):
        store.schedule_action(row.id, row.version, "delete", row.path, b"/w/.syncd-trash", 1.0)
    [action] = store.due_actions(FAR)
    assert (action.kind, action.state, action.sha256) == ("delete", "pending", row.sha256)
    assert action.result == {"location": "/x", "expires": EXPIRES}
    assert store.due_actions(0.5) == [] and store.next_action_due() == 1.0
    assert store.action_counts() == {"pending": 1, "trash": 0}


def test_a_deleted_file_is_in_the_trash_until_purged(store):
    row = done(store, b"/w/a")
    store.schedule_action(row.id, row.version, "delete", row.path, b"/w/.syncd-trash", 0.0)
    [action] = store.due_actions(FAR)
    store.action_intent(action, b"/w/.syncd-trash/a")
    [moving] = store.due_actions(FAR)
    assert (moving.state, moving.target) == ("moving", b"/w/.syncd-trash/a")
    store.action_moved(moving, hook("done:1"))
    assert store.due_actions(FAR) == []
    assert store.action_counts() == {"pending": 0, "trash": 1}
    assert store.trashed(b"/w/a") == store.trashed(b"/w/.syncd-trash/a") is not None
    assert [h.event.key for h in store.pending_hooks([], 10)] == ["done:1"]
    assert store.purgeable(b"/w/.syncd-trash", time.time() - 60) == []
    [purge] = store.purgeable(b"/w/.syncd-trash", time.time() + 1)
    store.action_purged(purge)
    assert store.trashed(b"/w/a") is None
    assert store.action_counts() == {"pending": 0, "trash": 0}


def test_a_restore_makes_the_row_done_with_the_restored_identity(store):
    row, trashed = in_trash(store, b"/w/a")
    identity = Identity(1, 99, row.identity.size, 5)
    assert store.restore_intent(trashed, identity) is None
    restored = store.get(row.id)
    assert restored is not None and restored.state is State.DONE
    assert restored.identity == identity and restored.version == row.version + 1
    assert restored.uploaded_sha256 == row.sha256
    assert store.known_in(b"/w/")[b"/w/a"] == tuple(identity)
    # Its own record: the restored version is never scheduled again.
    store.schedule_action(row.id, restored.version, "delete", row.path, b"/w/.syncd-trash", 0)
    [restoring] = store.due_actions(FAR)
    assert restoring.state == "restoring"
    store.action_restored(restoring)
    assert store.due_actions(FAR) == [] and store.trashed(b"/w/a") is None


def test_a_restore_is_refused_while_the_path_holds_other_work(store):
    _, trashed = in_trash(store, b"/w/a")
    assert store.record_seen(b"/w/a", "ads", ident(7))  # a new file at the path
    assert store.restore_intent(trashed, ident(1)) == "seen in the journal"


def test_hooks_are_queued_once_per_event_and_failures_shown(store):
    store.enqueue_hook(hook("done:1"))
    store.enqueue_hook(hook("done:1"))
    store.enqueue_hook(hook("done:2"))
    first, second = store.pending_hooks([], 10)
    assert [h.event.key for h in store.pending_hooks([first.id], 10)] == ["done:2"]
    assert first.event == hook("done:1")
    store.hook_finished(first.id, None)
    store.hook_finished(second.id, "exited with 3")
    store.enqueue_hook(hook("done:1"))  # after a crash: still recognised
    assert store.pending_hooks([], 10) == []
    [failing] = store.failing_hooks(10)
    assert (failing.event.key, failing.error) == ("done:2", "exited with 3")


def test_failures_after_the_cursor_are_found_once(store):
    row = uploaded(store, b"/w/a", {"location": "/x"})
    store.mark_failed(row, "refused")
    [(file_id, error_at)] = store.failures_since_cursor()
    assert file_id == row.id
    store.failures_enqueued([hook(f"failed:{file_id}")], error_at)
    assert store.failures_since_cursor() == []
    assert [h.event.key for h in store.pending_hooks([], 10)] == [f"failed:{file_id}"]
