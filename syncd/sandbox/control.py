"""The control API's shared endpoints under `/_sandbox/` (JSON, no auth).

Requests journal, faults, settings, clock, waiting for background work and reset live
here; each service adds its own inspection endpoints (e.g. `/_sandbox/ton/sessions`) with
its routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.sandbox.web import Exchange, Reply, Route, control_error, http_date, json_reply, route

if TYPE_CHECKING:
    from syncd.sandbox.app import App

OK = {"ok": True}
IDLE_WAIT_MAX = 600
"""The longest `POST /_sandbox/idle` waits: under the server's idle connection timeout."""
CLOCK_USAGE = 'give {"advance": s} or {"offset": s}, and/or {"skew": s} (seconds)'


def control_routes(app: App) -> list[Route]:
    def requests(ex: Exchange) -> Reply:
        return json_reply(200, app.journal.entries())

    def arrivals(ex: Exchange) -> Reply:
        return json_reply(200, app.journal.arrivals())

    def clear_requests(ex: Exchange) -> Reply:
        app.journal.clear()
        return json_reply(200, OK)

    def faults(ex: Exchange) -> Reply:
        return json_reply(200, app.faults.active())

    def add_fault(ex: Exchange) -> Reply:
        try:
            fault = app.faults.add(ex.json())
        except ValueError as exc:
            raise control_error(str(exc)) from None
        return json_reply(200, {"id": fault.id})

    def clear_faults(ex: Exchange) -> Reply:
        app.faults.clear()
        return json_reply(200, OK)

    def settings(ex: Exchange) -> Reply:
        return json_reply(200, app.settings.as_dict())

    def merge_settings(ex: Exchange) -> Reply:
        try:
            app.settings.merge(ex.json())
        except ValueError as exc:
            raise control_error(str(exc)) from None
        return settings(ex)

    def clock(ex: Exchange) -> Reply:
        now = app.clock.now()
        shown = {"now": now, "offset": app.clock.offset, "skew": app.clock.skew}
        return json_reply(200, {**shown, "date": http_date(now)})

    def move_clock(ex: Exchange) -> Reply:
        spec = ex.json()
        if (
            not isinstance(spec, dict)
            or not spec
            or not set(spec) <= {"advance", "offset", "skew"}
            or {"advance", "offset"} <= set(spec)
            or any(type(value) not in (int, float) for value in spec.values())
        ):
            raise control_error(CLOCK_USAGE)
        app.clock.offset = spec.get("offset", app.clock.offset) + spec.get("advance", 0)
        app.clock.skew = spec.get("skew", app.clock.skew)
        return clock(ex)

    def idle(ex: Exchange) -> Reply:
        """Wait (at most `timeout` s, default 10) for background work such as OneAll
        callbacks to finish: tests synchronise on this instead of sleeping."""
        spec = ex.json()
        timeout = spec.get("timeout", 10) if isinstance(spec, dict) else None
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 <= timeout <= IDLE_WAIT_MAX
        ):
            raise control_error(f'give {{"timeout": s}} with 0 <= s <= {IDLE_WAIT_MAX}')
        idle = app.background.wait_idle(float(timeout))
        return json_reply(200, {"idle": idle, "pending": app.background.pending()})

    def reset(ex: Exchange) -> Reply:
        app.reset()
        return json_reply(200, OK)

    return [
        route("GET", "/_sandbox/requests", requests),
        route("DELETE", "/_sandbox/requests", clear_requests),
        route("GET", "/_sandbox/arrivals", arrivals),
        route("GET", "/_sandbox/faults", faults),
        route("POST", "/_sandbox/faults", add_fault),
        route("DELETE", "/_sandbox/faults", clear_faults),
        route("GET", "/_sandbox/settings", settings),
        route("POST", "/_sandbox/settings", merge_settings),
        route("GET", "/_sandbox/clock", clock),
        route("POST", "/_sandbox/clock", move_clock),
        route("POST", "/_sandbox/idle", idle),
        route("POST", "/_sandbox/reset", reset),
    ]
