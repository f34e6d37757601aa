"""What a journal carries beside its files (`Store.carried`, every store), and the fleet's
store adopting it (`syncd journal copy`): ids kept when free, what names a file following it,
flow values merged, nothing twice when the copy runs again."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from syncd.files import Identity
from syncd.journal.after import HookEvent
from syncd.journal.carry import Adoption, Carried
from syncd.journal.sqlite import SqliteStore
from syncd.journal.states import State
from syncd.journal.store import Decision, Row, Store
from syncd.outputs.hooks import rekey
from syncd.work.flow.merge import merge_flow

from .test_after_store import in_trash
from .test_service_events import A, event
from .test_store import hashed


def done_as(store: Store, path: bytes, sha256: str) -> Row:
    """A done file of its own content (not a duplicate of another)."""
    decision = store.begin_upload(hashed(store, path, sha256), lambda result: True)
    assert decision is not None and decision[0] is Decision.UPLOAD
    row = store.mark_uploaded(decision[1], {"location": path.decode()})
    assert row is not None
    store.mark_done(row.id)
    return row


def fill(store: Store) -> dict[str, int]:
    """One of each thing a host's journal holds beside its files; the files' ids by name."""
    trashed, _ = in_trash(store, b"/w/trashed")
    moved = done_as(store, b"/w/moved", "c" * 64)
    store.schedule_action(moved.id, moved.version, "archive", moved.path, b"/w/archive", 0.0)
    waiting = hashed(store, b"/w/waiting", sha256="b" * 64, n=3)
    store.release(waiting.id)
    store.enqueue_hook(
        HookEvent(f"done:{moved.id}:{moved.version}", "done", b"/w/moved", ("true",), {}, 5.0)
    )
    store.outbox.subscribe({A: ("paused", "quota_exhausted")})
    assert store.outbox.emit(event("paused", service="ads"))
    assert store.outbox.emit(event("quota_exhausted", "ads/day-1", service="ads"))
    store.save_flow_state("paused", ["ads"])
    store.save_flow_state("quota:ads", [1000.0, 1, 10, [moved.id]])
    return {"trashed": trashed.id, "moved": moved.id}


def comparable(carried: Carried) -> dict[str, list[dict[str, Any]]]:
    """Without the hooks' cursor, which each journal started when it was made (the fleet's
    only goes back to the host's when that is earlier)."""
    return {t: [dict(r) for r in rows] for t, rows in carried.items() if t != "hook_cursor"}


def test_carried_holds_actions_hooks_deliveries_and_flow_values(store: Store) -> None:
    ids = fill(store)
    carried = store.carried()
    actions = {(a["kind"], a["state"], bytes(a["source"])) for a in carried["actions"]}
    assert actions == {("delete", "moved", b"/w/trashed"), ("archive", "pending", b"/w/moved")}
    assert {a["file_id"] for a in carried["actions"]} == set(ids.values())
    assert [(h["key"], h["state"]) for h in carried["hooks"]] == [
        (f"done:{ids['moved']}:{carried['actions'][1]['version']}", "pending")
    ]
    assert [(d["event"], d["target"]) for d in carried["outbox"]] == [
        ("paused", A),
        ("quota_exhausted", A),
    ]
    assert [k["key"] for k in carried["outbox_once"]] == ["ads/day-1"]
    assert {f["key"]: json.loads(f["value"]) for f in carried["flow_state"]} == {
        "paused": ["ads"],
        "quota:ads": [1000.0, 1, 10, [ids["moved"]]],
    }
    assert len(carried["hook_cursor"]) == 1


ADOPTION = Adoption(lambda row: (0, None), rekey, merge_flow)


def adopt_into(fleet: Any, source: SqliteStore) -> Any:
    rows = [row for state in State for row in source.in_state(state)]
    return fleet.adopt(rows, source.carried(), ADOPTION)


def shifted(carried: Carried, ids: Mapping[int, int]) -> dict[str, list[dict[str, Any]]]:
    """`carried` as the fleet should hold it, its files under their fleet ids."""
    shown = comparable(carried)
    for action in shown["actions"]:
        action["file_id"] = ids[action["file_id"]]
    for hook in shown["hooks"]:
        hook["key"] = rekey(hook["key"], ids)
    for value in shown["flow_state"]:
        if value["key"] == "quota:ads":
            day, files, sent, counted = json.loads(value["value"])
            value["value"] = json.dumps([day, files, sent, [ids[i] for i in counted]])
    return shown


def test_the_fleet_adopts_it_all_keeping_free_ids_and_nothing_twice(
    tmp_path: Path, postgres_cluster: Any
) -> None:
    from syncd.journal.postgres import PostgresStore

    host = SqliteStore(tmp_path / "journal.sqlite")
    fill(host)
    fleet = PostgresStore(postgres_cluster.database(), postgres_cluster.password, "b", None)
    try:
        adopted = adopt_into(fleet, host)
        assert (adopted.copied, adopted.present) == (3, 0)
        assert all(old == new for old, new in adopted.ids.items()), "free ids are kept"
        assert comparable(fleet.carried()) == shifted(host.carried(), adopted.ids)
        cursor = fleet.carried()["hook_cursor"]
        assert cursor == host.carried()["hook_cursor"], "failures since the host's cursor page"
        before = fleet.carried()
        again = adopt_into(fleet, host)
        assert again.again and again.copied == 0 and again.carried == {}
        assert fleet.carried() == before, "a copy run again carries nothing twice"
        assert fleet.record_seen(b"/w/new", "ads", Identity(1, 99, 5, 6))
        [new] = [r for r in fleet.in_state(State.SEEN) if r.path == b"/w/new"]
        assert new.id > max(adopted.ids), "the fleet's next id is past the ids kept"
    finally:
        fleet.close()
        host.close()


def test_taken_ids_are_renumbered_and_what_names_them_follows(
    tmp_path: Path, postgres_cluster: Any
) -> None:
    """The fleet's own rows hold the host's ids: the host's files get new ones, their actions,
    hooks' keys and quota counts follow; pauses add up, the fleet's quota count too."""
    from syncd.journal.postgres import PostgresStore

    host = SqliteStore(tmp_path / "journal.sqlite")
    ids = fill(host)
    fleet = PostgresStore(postgres_cluster.database(), postgres_cluster.password, "b", None)
    try:
        for n in range(5):
            done_as(fleet, f"/fleet/{n}".encode(), f"{n:064x}")
        fleet.save_flow_state("paused", ["tw"])
        fleet.save_flow_state("quota:ads", [1000.0, 2, 30, [1, 2]])
        adopted = adopt_into(fleet, host)
        assert adopted.copied == 3 and all(old != new for old, new in adopted.ids.items())
        expected = shifted(host.carried(), adopted.ids)
        for value in expected["flow_state"]:
            value["value"] = {
                "paused": json.dumps(["ads", "tw"]),
                "quota:ads": json.dumps([1000.0, 3, 40, [1, 2, adopted.ids[ids["moved"]]]]),
            }[value["key"]]
        assert comparable(fleet.carried()) == expected
        trashed = fleet.trashed(b"/w/trashed")
        assert trashed is not None and trashed.file_id == adopted.ids[ids["trashed"]]
    finally:
        fleet.close()
        host.close()


def test_a_host_count_whose_files_are_all_done_adds_up_and_one_copied_before_does_not() -> None:
    """A count lists only the files that may come back (quota.py): a host whose counted files
    are all done lists none, and its count still joins the fleet's."""
    fleet = [1000.0, 2, 30, [1]]
    assert merge_flow("quota:ads", fleet, [1000.0, 5, 50, []], {}) == [1000.0, 7, 80, [1]]
    copied = [1000.0, 7, 80, [1, 7]]
    assert merge_flow("quota:ads", copied, [1000.0, 5, 50, [3]], {3: 7}) == copied
