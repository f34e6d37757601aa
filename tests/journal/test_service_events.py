"""Service-level webhook events in every store's outbox: written for subscribers only, with
their own fields, once per `once` key (whichever host sees it), kept across a restart."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from syncd.journal.codec import new_event_id
from syncd.journal.store import ServiceEvent, Store

from .test_store import FAR

A = "https://a.example"
B = "https://b.example"


def event(name: str, once: str | None = None, **detail: object) -> ServiceEvent:
    service = str(detail.pop("service")) if "service" in detail else None
    return ServiceEvent(str(uuid.uuid4()), name, 1000.0, service, dict(detail), once)


def test_a_service_event_goes_to_its_subscribers_with_its_fields(store: Store) -> None:
    outbox = store.outbox
    assert not outbox.emit(event("paused", service="ads")), "nobody subscribed"
    assert outbox.backlog() == (0, 0)
    outbox.subscribe({A: ("paused", "degraded"), B: ("done", "degraded")})
    paused = event("paused", service="ads")
    degraded = event("degraded", component="sidecars", reason="No space left on device")
    assert outbox.emit(paused) and outbox.emit(degraded)
    assert not outbox.emit(event("resumed", service="ads")), "nobody wants resumed"
    due = outbox.due(FAR, 10)
    assert [(d.event, d.target) for d in due] == [
        ("paused", A),
        ("degraded", A),
        ("degraded", B),
    ]
    first = due[0]
    assert (first.event_id, first.service, first.at) == (paused.event_id, "ads", 1000.0)
    assert first.detail == {} and first.path == b"" and first.sha256 is None
    assert due[1].event_id == due[2].event_id == degraded.event_id
    assert due[1].service == ""
    assert due[1].detail == {"component": "sidecars", "reason": "No space left on device"}
    outbox.delivered(first.seq)
    assert outbox.backlog() == (2, 0)


def test_an_event_with_a_once_key_is_written_once(open_store: Callable[..., Store]) -> None:
    one, other = open_store("host-a"), open_store("host-b")
    for store in (one, other):
        store.outbox.subscribe({A: ("quota_exhausted",)})
    key = "quota_exhausted:ads:86400"
    assert one.outbox.emit(event("quota_exhausted", key, service="ads"))
    assert not one.outbox.emit(event("quota_exhausted", key, service="ads"))
    assert not other.outbox.emit(event("quota_exhausted", key, service="ads")), "another host"
    assert one.outbox.emit(event("quota_exhausted", "quota_exhausted:ads:172800", service="ads"))
    assert one.outbox.emit(event("quota_exhausted", "quota_exhausted:pics:86400", service="pics"))
    assert [d.service for d in one.outbox.due(FAR, 10)] == ["ads", "ads", "pics"]


def test_service_events_outlive_a_restart(open_store: Callable[..., Store]) -> None:
    store = open_store()
    store.outbox.subscribe({A: ("resumed",)})
    resumed = event("resumed", service="ads")
    assert store.outbox.emit(resumed)
    store.close()
    again = open_store()
    again.outbox.subscribe({A: ("resumed",)})
    [delivery] = again.outbox.due(FAR, 10)
    assert (delivery.event_id, delivery.event, delivery.service) == (
        resumed.event_id,
        "resumed",
        "ads",
    )


def test_event_ids_are_random_version_4_uuids() -> None:
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
