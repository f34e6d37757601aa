"""`syncd status` for people: the daemon's reply as a few readable lines.

Every text from the reply goes through `_text` (control/printable.py): a file name, a host
or a service's message is data, and must not be able to add a line or move the terminal's
cursor. `render_status` reads the reply through `_Shown`, which escapes every text it
hands out, so no line can forget to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from syncd.control.printable import printable


def _text(value: object) -> str:
    return printable(str(value))


def _shown(value: object) -> Any:
    """`value` as a line may print it: texts escaped, numbers and None as they are."""
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, Mapping):
        return _Shown(value)
    if isinstance(value, list):
        return [_shown(item) for item in value]
    return _text(value)


class _Shown(Mapping[str, Any]):
    """A table of the reply whose values come out escaped (`_shown`); its keys do not."""

    def __init__(self, table: Mapping[str, Any]) -> None:
        self._table = table

    def __getitem__(self, key: str) -> Any:
        return _shown(self._table[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


def human_size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def human_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def counts_line(counts: dict[str, int]) -> str:
    """`files: 3 uploading, 10 done, ...`: the states that hold any file."""
    shown = ", ".join(f"{_text(n)} {_text(state)}" for state, n in counts.items() if n)
    return "files: " + (shown or "none")


def render_status(raw: dict[str, Any]) -> str:
    """The status reply for people: what is watched, moving, waiting and broken."""
    reply = _Shown(raw)
    if "error" in reply:
        return f"error: {reply['error']}"
    lines = [
        f"syncd {reply.get('version')} (pid {reply.get('pid')}),"
        f" up {human_duration(float(reply.get('uptime_s', 0)))}",
        counts_line(raw.get("counts", {})),
    ]
    lines += [
        f"DEGRADED {fault['component']}: {fault['reason']} (since {fault['since']})"
        for fault in reply.get("degraded", [])
    ]
    limit = reply.get("bandwidth", {}).get("total")
    if limit is not None:
        lines.append(f"bandwidth: {human_size(limit) + '/s' if limit else 'unlimited'}")
    if reply.get("paused"):
        lines.append(f"paused (syncd resume): {', '.join(reply['paused'])}")
    if reply.get("settling"):
        lines.append(f"settling: {reply['settling']} files being written")
    lines += _section(
        "watching:",
        reply.get("watches", []),
        lambda w: f"{w['path']} -> {w['service']}",
        always=True,
    )
    lines += _section("uploading:", reply.get("uploads", []), _upload)
    lines += _section(
        "hashing:",
        reply.get("hashing", []),
        lambda h: (
            f"{h['path']} ({h['service']}): {human_size(h['hashed'])} of {human_size(h['total'])}"
        ),
    )
    lines += _section(
        "retrying:",
        reply.get("retrying", []),
        lambda r: f"{r['path']} ({r['service']}) at {r['next_at']}: {r['error']}",
    )
    webhooks = reply.get("webhooks") or {}
    lines += _section(
        f"webhook deliveries failing ({webhooks.get('pending', 0)} waiting):",
        webhooks.get("failing", []),
        lambda d: (
            f"{d['receiver']} {d['event']} of {_subject(d)}"
            f" (attempt {d['attempts']}, next at {d['next_at']}): {d['error']}"
        ),
    )
    lines += _after_upload(reply)
    lines += _section(
        "fleet:",
        reply.get("fleet", []),
        lambda h: (
            f"{h['host']} (pid {h['pid']}): heartbeat {h['heartbeat_age_s']:.1f} s ago,"
            f" {h['claims']} claims"
        ),
    )
    lines += _section(
        "services held:",
        reply.get("service_holds", []),
        lambda h: f"{h['service']} until {h['until']}: {h['reason']}",
    )
    lines += _section(
        "held:",
        reply.get("held", []),
        lambda h: (
            f"{h['path']} ({h['service']}): {h['reason']}"
            + (f", until {h['until']}" if h.get("until") else "")
        ),
    )
    lines += _section(
        "failed (syncd retry PATH, or --all-failed):", reply.get("failures", []), _failure
    )
    return "\n".join(lines)


def _section(
    heading: str,
    items: Iterable[_Shown],
    line: Callable[[_Shown], str],
    always: bool = False,
) -> list[str]:
    """`heading`, then each item's `line`, indented; nothing when there are no items
    (unless `always`)."""
    shown = [f"  {line(item)}" for item in items]
    return [heading, *shown] if shown or always else []


def _upload(upload: _Shown) -> str:
    total = max(int(upload["total"]), 1)
    rate = f", {human_size(upload['rate'])}/s" if upload.get("rate") else ""
    return (
        f"{upload['path']} ({upload['service']}):"
        f" {human_size(upload['sent'])} of {human_size(upload['total'])}"
        f" ({100 * upload['sent'] // total}%{rate})"
    )


def _failure(failure: _Shown) -> str:
    """The failure's line, and what was uploaded before it failed on a line of its own."""
    line = f"{failure['at']} {failure['path']} ({failure['service']}): {failure['error']}"
    if not failure.get("result"):
        return line
    shown = ", ".join(f"{_text(key)}={value}" for key, value in failure["result"].items())
    return f"{line}\n    uploaded: {shown}"


def _after_upload(reply: _Shown) -> list[str]:
    """Archive / delete actions still to do, the trash, and hooks that failed."""
    lines = []
    if reply.get("pending_actions") or reply.get("trash"):
        lines.append(
            f"after upload: {reply.get('pending_actions', 0)} actions pending,"
            f" {reply.get('trash', 0)} files in the trash (syncd restore PATH)"
        )
    lines += [f"  {a['path']}: {a['action']}: {a['error']}" for a in reply.get("action_errors", [])]
    lines += _section(
        "failing hooks:",
        reply.get("failing_hooks", []),
        lambda h: f"{h['at']} {h['event']} {h['command']} for {h['path']}: {h['error']}",
    )
    return lines


def _subject(delivery: Any) -> str:
    """What an event is about: its file, else its service or component (paused, degraded)."""
    return str(
        delivery.get("path") or delivery.get("service") or delivery.get("component") or "syncd"
    )
