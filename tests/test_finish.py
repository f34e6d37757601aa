"""The committer, with a real journal. A sidecar it cannot make durable for good fails its
file, and gives back the claim the worker handed over with the row: otherwise `syncd retry`
could never take the file again (no worker claims a claimed row). A row that another host
finished while the batch waited is not this host's upload: not counted, logged or completed
here."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from syncd.control.degraded import Degraded
from syncd.files import Identity, Place
from syncd.journal.sqlite import SqliteStore
from syncd.journal.states import State
from syncd.journal.store import Decision, Row
from syncd.work.finish import Finisher
from syncd.work.outcomes import DONE
from syncd.work.sidecars import Finished

FAR = 10.0**10


class _Outcomes:
    def finished(self, service: str, outcome: str, size: int, seconds: float | None) -> None:
        raise AssertionError("a file whose sidecar failed is not finished")

    def retrying(self, service: str) -> None:
        raise AssertionError("nothing is retried here")


def _uploaded(store: SqliteStore) -> Row:
    identity = Identity(1, 2, 3, 4)
    assert store.record_seen(b"/w/a", "ads", identity)
    claimed = store.claim(FAR)
    assert claimed is not None
    hashed = store.mark_hashed(claimed, "a" * 64, identity)
    assert hashed is not None
    decision = store.begin_upload(hashed, lambda result: True)
    assert decision is not None and decision[0] is Decision.UPLOAD
    row = store.mark_uploaded(decision[1], {"url": "u"})
    assert row is not None
    return row


def _no_place(path: Path) -> Place:
    raise AssertionError("the sidecar was put already")


def test_a_folder_that_cannot_be_fsynced_for_good_fails_the_file_and_frees_its_claim(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "journal.sqlite", "host-a", None)
    row = _uploaded(store)
    finisher = Finisher(
        store, _no_place, _Outcomes(), lambda row: None, store.mark_failed, Degraded()
    )
    not_a_folder, other_end = os.pipe()  # fsync refuses a pipe (EINVAL): no passing fault
    os.close(other_end)
    finisher.committer.start()
    finisher.committer.submit(Finished(row, DONE, not_a_folder))
    finisher.committer.stop()
    assert finisher.committer.join(10)
    [failed] = store.in_state(State.FAILED)
    assert "cannot write the sidecar" in (failed.error or "")
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        assert db.execute("SELECT claim_owner FROM files").fetchall() == [(None,)]
    store.close()


def test_a_row_finished_elsewhere_meanwhile_is_not_counted_as_this_hosts_upload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In a fleet: the batch waited out the database, the claim ran out, and the host that
    took the row over wrote its sidecar and made it `done`. The first host's commit then
    finds the row done: it counted it, logged "uploaded" and scheduled its after-upload
    work all the same (two hosts each logging the one upload)."""
    store = SqliteStore(tmp_path / "journal.sqlite", "host-a", None)
    row = _uploaded(store)
    assert store.mark_done(row.id)  # the other host's commit
    assert not store.mark_done(row.id)
    completed: list[Row] = []
    finisher = Finisher(
        store, _no_place, _Outcomes(), completed.append, store.mark_failed, Degraded()
    )
    caplog.set_level(logging.INFO, logger="syncd.work.finish")
    finisher.committer.start()
    finisher.committer.submit(Finished(row, DONE, os.open(tmp_path, os.O_RDONLY)))
    finisher.committer.stop()
    assert finisher.committer.join(10)
    assert completed == []
    assert "uploaded /w/a" not in caplog.text
    assert "/w/a: finished by another host" in caplog.text
    store.close()
