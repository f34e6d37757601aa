"""What happens to a file once it is done: archive, delete into the trash, restore, purge.

Nothing leaves a folder unless the server's copy is proven to be this file's bytes: an
action runs only on a `done` row whose sidecar is durable and says the row's sha256, and
whose bytes, re-read just before, hash to that same sha256. A file changed since is a new
version: intake uploads it again and it gets an action of its own; this one is skipped.

Each action is journaled intent -> act -> done (journal/after.py), and the act is
`moves.carry`, which a crash at any point leaves finishable: at start, and whenever the
thread finds one, an action cut short is taken up where it stood. So after kill -9 or a
power cut every file is exactly once where it was or where it was going.

One thread does the actions (hashing is the slow part, and never holds an upload worker).
Restore (from the status socket) and purge both take a trashed file out of the trash, so
they share a lock; neither waits for a hash.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from syncd.config import ServiceConfig, WatchConfig
from syncd.control.logs import log_fields
from syncd.errors import PermanentError
from syncd.files import Identity, Place, Vanished, identity_of, locate, sha256_of
from syncd.intake.routing import route
from syncd.journal.after import Action, ActionTaken, HookEvent
from syncd.journal.codec import storable
from syncd.journal.states import State
from syncd.journal.store import Row, Store
from syncd.outputs.hooks import done_event
from syncd.outputs.sidecar import SUFFIX, sidecar_path
from syncd.work.loop import Loop
from syncd.work.moves import Taken, carry, free_name, make_folders, sidecar_of

log = logging.getLogger(__name__)

TRASH = ".syncd-trash"
"""The trash inside each watch: a dot-folder, so intake never takes anything in it."""
RETRY_AFTER = 30.0
"""An action that hit an error (a full disk, an unwritable archive) is tried again then."""
PURGE_EVERY = 1.0
RESTORE_WAIT = 1.0
"""Seconds a restore (on the status socket's one thread) waits for a purge under way: a
purge's journal writes wait out a full disk, and no status reply may wait with them."""
HISTORY_KEPT = 7 * 86400.0
"""Finished actions stay in the journal this long (looked at every HISTORY_KEPT / 24)."""
NOT_YET = 0.2
"""An action scheduled a moment before its row is marked done looks again this soon."""
DELAY_ENV = "SYNCD_TEST_ACTION_DELAY"
"""Seconds an action waits after its file is done, as the daemon was started with. For
tests only: it opens the window in which a file can change between its upload and its
action, and lets a test upload everything before the actions begin."""


class Skip(Exception):
    """This action will not happen (the file changed or vanished); the reason says why."""


class NotYet(Exception):
    """The row is not done yet (its sidecar is being written): try again shortly."""


class AfterUpload:
    """Schedules, performs and recovers the after-upload actions of every watch."""

    def __init__(
        self,
        journal: Store,
        watches: Callable[[], tuple[WatchConfig, ...]],
        services: Callable[[], dict[str, ServiceConfig]],
        changed: Callable[[Path], None],
    ) -> None:
        self._journal = journal
        self._watches = watches
        self._services = services
        self._changed = changed
        """Tells intake that a file is not what its row says: it becomes a new version."""
        self._delay = float(os.environ.get(DELAY_ENV, "0") or 0)
        self._lock = threading.Lock()
        self._next_forget = 0.0
        self.loop = Loop("actions", self._step)
        """One thread: start, stop, wake."""

    def recover(self) -> None:
        """Finish what a crash cut short, before intake looks at any folder."""
        with self._lock:
            for action in self._journal.due_actions(float("inf")):
                if action.state != "pending":
                    self._perform(action)

    # -- the pipeline's side -------------------------------------------------------------

    def completed(self, row: Row) -> None:
        """A file's sidecar is durable and its row made `done` in this same commit: schedule
        its action, or (keep) its done hook. Idempotent, so a crash before `done` costs
        nothing."""
        path = Path(os.fsdecode(row.path))
        watch = route(self._watches(), path)
        if watch is None:
            return
        if watch.after_upload == "keep":
            event = done_event(row, watch, self._type(row.service), path)
            if event is not None:
                self._journal.enqueue_hook(event)
            return
        root = watch.archive_to if watch.after_upload == "archive" else watch.path / TRASH
        assert root is not None
        self._journal.schedule_action(
            row.id, row.version, watch.after_upload, row.path, os.fsencode(root), time.time()
        )
        self.loop.wake()

    def _type(self, service: str) -> str:
        config = self._services().get(service)
        return config.type if config is not None else ""

    # -- the thread ----------------------------------------------------------------------

    def _step(self) -> float:
        for action in self._journal.due_actions(time.time() - self._delay):
            if self.loop.stopping():
                return 0
            self._perform(action)
        self._purge()
        if time.monotonic() >= self._next_forget:
            self._next_forget = time.monotonic() + HISTORY_KEPT / 24
            self._journal.forget_actions(time.time() - HISTORY_KEPT)
        due = self._journal.next_action_due()
        return PURGE_EVERY if due is None else min(PURGE_EVERY, due + self._delay - time.time())

    def _perform(self, action: Action) -> None:
        source = Path(os.fsdecode(action.source))
        fields = log_fields(source, None)
        try:
            if action.state == "restoring":
                self._put_back(action)
                return
            row = self._journal.get(action.file_id)
            if action.state == "pending" or _unmoved(action):
                self._verify(action, row, source)
            if action.state == "pending":
                target = self._target(action, source)
                self._journal.action_intent(action, os.fsencode(target))
                action = _with_target(action, target)
            self._move(action, row)
        except NotYet:
            self._journal.action_later(action, None, time.time() + NOT_YET)
        except ActionTaken as why:
            log.info("%s: %s", source, why, extra=fields)
        except Skip as why:
            log.info("%s: not %sd: %s", source, action.kind, why, extra=fields)
            row = self._journal.get(action.file_id)
            self._journal.action_skipped(action, str(why), self._done_event(row, source))
        except OSError as exc:
            self._later(action, f"{source}: cannot {action.kind}: {exc.strerror or exc}")
        except PermanentError as exc:
            self._later(action, f"{exc}: not {action.kind}d")

    def _later(self, action: Action, reason: str) -> None:
        source = Path(os.fsdecode(action.source))
        log.error("%s; trying again in %g s", reason, RETRY_AFTER, extra=log_fields(source, None))
        self._journal.action_later(action, storable(reason), time.time() + RETRY_AFTER)

    def _verify(self, action: Action, row: Row | None, source: Path) -> None:
        """Proof that the bytes at `source` are the ones the server has, just before acting."""
        if row is None or row.version != action.version or row.path != action.source:
            raise Skip("it changed after its upload; the new version is handled on its own")
        if row.state == State.UPLOADED:
            raise NotYet
        if row.state != State.DONE:
            raise Skip(f"it is {row.state}, not done")
        watch = route(self._watches(), source)
        if watch is None or watch.after_upload != action.kind:
            raise Skip("its watch's after_upload changed")
        try:
            with locate(watch.path, source) as place, place.open_regular() as file:
                _check_sidecar(place, action.sha256)
                identity = identity_of(file)
                if not identity.same_version(row.identity) or sha256_of(file) != action.sha256:
                    self._changed(source)
                    raise Skip("it changed since its upload: uploaded again as a new version")
                if identity_of(file) != identity:
                    self._changed(source)
                    raise Skip("it is being written to")
        except Vanished:
            raise Skip("it is gone") from None

    def _target(self, action: Action, source: Path) -> Path:
        """Its path below the watch, under the archive or the trash; never a taken name."""
        watch = route(self._watches(), source)
        assert watch is not None
        root = Path(os.fsdecode(action.root))
        below = source.parent.relative_to(watch.path)
        return free_name(root / below, source.name)

    def _move(self, action: Action, row: Row | None) -> None:
        assert action.target is not None
        source, target = Path(os.fsdecode(action.source)), Path(os.fsdecode(action.target))
        root = Path(os.fsdecode(action.root))
        make_folders(target.parent, root)
        with self._place(source) as here, _locate(root, target) as there:
            try:
                if not carry(here, there, action.sha256):
                    raise Skip("it vanished before it was moved")
            except Taken:
                moved = free_name(target.parent, source.name, {target.name})
                self._journal.action_intent(action, os.fsencode(moved))
                self._move(_with_target(action, moved), row)
                return
            carry(sidecar_of(here), sidecar_of(there))
            if row is not None and _written_since(there, row.identity):
                # A writer got in between the hash and the move: this is not what was uploaded.
                carry(there, here)
                carry(sidecar_of(there), sidecar_of(here))
                self._changed(source)
                raise Skip("it was written to while being moved: uploaded again as a new version")
        self._journal.action_moved(action, self._done_event(row, target))
        log.info("%sd %s to %s", action.kind, source, target, extra=log_fields(source, None))
        self.loop.wake()

    def _place(self, path: Path) -> Place:
        """`path`'s folder opened from its watch root (or, for a watch no longer configured,
        from the folder itself), never through a symlink."""
        watch = route(self._watches(), path)
        return _locate(watch.path if watch is not None else path.parent, path)

    def _done_event(self, row: Row | None, where: Path) -> HookEvent | None:
        """The done hook waits for the action, so that it is told where the file is now."""
        if row is None:
            return None
        watch = route(self._watches(), Path(os.fsdecode(row.path)))
        if watch is None:
            return None
        return done_event(row, watch, self._type(row.service), where)

    # -- the trash -----------------------------------------------------------------------

    def _purge(self) -> None:
        """Files in a watch's trash for longer than its `trash_retention` (the one in force
        now, also for files trashed under another) are removed; also in the trash of a
        watch that no longer deletes."""
        watches = {os.fsencode(w.path / TRASH): w for w in self._watches()}
        for root, oldest in self._journal.trash_ages().items():
            watch = watches.get(root)
            if watch is None or oldest > time.time() - watch.trash_retention:
                continue  # a watch no longer configured: its folder is not ours to touch
            trash = Path(os.fsdecode(root))
            before = time.time() - watch.trash_retention
            with self._lock:  # what a restore has taken out is not in the list
                for action in self._journal.purgeable(root, before):
                    assert action.target is not None
                    target = Path(os.fsdecode(action.target))
                    _remove_from_trash(trash, target)
                    _prune_folders(target.parent, trash)
                    self._journal.action_purged(action)
                    log.info("purged %s from the trash", target, extra=log_fields(target, None))

    def restore(self, path: str) -> str | None:
        """Put a trashed file back where it was, not to be uploaded again; an error or None."""
        if not self._lock.acquire(timeout=RESTORE_WAIT):
            return f"{path}: the trash is being purged and the journal is slow to answer; try again"
        try:
            return self._restore(path)
        finally:
            self._lock.release()

    def _restore(self, path: str) -> str | None:
        action = self._journal.trashed(os.fsencode(os.path.abspath(path)))
        if action is None or action.target is None:
            return f"{path}: not in the trash"
        source = Path(os.fsdecode(action.source))
        target = Path(os.fsdecode(action.target))
        if os.path.lexists(source) or os.path.lexists(sidecar_path(source)):
            return f"{source}: a file is there now; move it away first"
        try:
            identity = Identity.of(os.lstat(target))
        except OSError:
            return f"{target}: gone from the trash"
        refused = self._journal.restore_intent(action, identity)
        if refused is not None:
            return f"{source}: not restored: its path is {refused}"
        try:
            self._put_back(action)
        except OSError as exc:
            return f"{source}: cannot restore: {exc.strerror or exc}"
        except PermanentError as exc:
            return f"{source}: cannot restore: {exc}"
        return None

    def _put_back(self, action: Action) -> None:
        assert action.target is not None
        source, target = Path(os.fsdecode(action.source)), Path(os.fsdecode(action.target))
        watch = route(self._watches(), source)
        make_folders(source.parent, watch.path if watch is not None else source.parent)
        with _locate(Path(os.fsdecode(action.root)), target) as there, self._place(source) as here:
            carry(there, here)
            carry(sidecar_of(there), sidecar_of(here))
        self._journal.action_restored(action)
        _prune_folders(target.parent, Path(os.fsdecode(action.root)))
        log.info("restored %s from the trash", source, extra=log_fields(source, None))


def _with_target(action: Action, target: Path) -> Action:
    return replace(action, target=os.fsencode(target), state="moving")


def _unmoved(action: Action) -> bool:
    """An intent whose move has not begun: the file must be proven again (a crash, then
    who knows what while syncd was down)."""
    return (
        action.state == "moving"
        and action.target is not None
        and os.path.lexists(os.fsdecode(action.source))
        and not os.path.lexists(os.fsdecode(action.target))
    )


def _check_sidecar(place: Place, sha256: str) -> None:
    """The sidecar must say this content, and be on disk (fsync: durable, whoever wrote it)."""
    try:
        fd = os.open(
            place.name + SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=place.folder
        )
    except OSError:
        raise Skip("its sidecar is missing") from None
    with os.fdopen(fd, "rb") as file:
        os.fsync(file.fileno())
        try:
            recorded = tomllib.loads(file.read(1024 * 1024).decode("utf-8")).get("sha256")
        except (ValueError, RecursionError):  # not UTF-8, not TOML, [[[[… nested too deep
            recorded = None
    if recorded != sha256:
        raise Skip("its sidecar does not describe this content")


def _locate(root: Path, path: Path) -> Place:
    """files.locate, with a folder on the way gone or swapped for a symlink as an OSError:
    the action is tried again later, and never follows it."""
    try:
        return locate(root, path)
    except Vanished:
        gone = OSError(errno.ELOOP, "a folder on the way is gone or a symlink", str(path))
        raise gone from None


def _written_since(place: Place, identity: Identity) -> bool:
    """Size or mtime moved on (a rename keeps both; so does a verified copy)."""
    try:
        st = os.stat(place.name, dir_fd=place.folder, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) != (identity.size, identity.mtime_ns)


def _remove_from_trash(trash: Path, target: Path) -> None:
    """A trashed file and its sidecar, reached from the trash down without following a
    symlink: a trash folder swapped for one leads nowhere, and what was there counts as gone."""
    try:
        place = locate(trash, target)
    except (Vanished, PermanentError):
        return
    with place:
        for name in (place.name, place.name + SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=place.folder)
        os.fsync(place.folder)


def _prune_folders(folder: Path, root: Path) -> None:
    """Empty folders left in the trash go, up to the trash itself, each removed from the
    folder above it opened from the trash down (never through a symlink)."""
    while folder != root and root in folder.parents:
        try:
            with locate(root, folder) as place:
                os.rmdir(place.name, dir_fd=place.folder)
                os.fsync(place.folder)
        except (OSError, Vanished, PermanentError):
            return
        folder = folder.parent
