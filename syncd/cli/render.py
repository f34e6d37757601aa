"""`syncd status` for people: the daemon's reply as a few readable lines.

Every text from the reply goes through `_text` (control/printable.py): a file name is
data, and must not be able to add a line or move the terminal's cursor.
"""

from __future__ import annotations

from typing import Any

from syncd.control.printable import printable


def _text(value: object) -> str:
    return printable(str(value))


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


def render_status(reply: dict[str, Any]) -> str:
    """The status reply for people: what is watched, moving, waiting and broken."""
    if "error" in reply:
        return f"error: {_text(reply['error'])}"
    counts: dict[str, int] = reply.get("counts", {})
    lines = [
        f"syncd {_text(reply.get('version'))} (pid {_text(reply.get('pid'))}),"
        f" up {human_duration(float(reply.get('uptime_s', 0)))}",
        counts_line(counts),
    ]
    for fault in reply.get("degraded", []):
        lines.append(
            f"DEGRADED {_text(fault['component'])}: {_text(fault['reason'])}"
            f" (since {_text(fault['since'])})"
        )
    limit = reply.get("bandwidth", {}).get("total")
    if limit is not None:
        lines.append(f"bandwidth: {human_size(limit) + '/s' if limit else 'unlimited'}")
    if reply.get("paused"):
        lines.append(f"paused (syncd resume): {', '.join(reply['paused'])}")
    if reply.get("settling"):
        lines.append(f"settling: {_text(reply['settling'])} files being written")
    lines.append("watching:")
    lines += [f"  {_text(w['path'])} -> {_text(w['service'])}" for w in reply.get("watches", [])]
    if reply.get("uploads"):
        lines.append("uploading:")
        for upload in reply["uploads"]:
            total = max(int(upload["total"]), 1)
            rate = f", {human_size(upload['rate'])}/s" if upload.get("rate") else ""
            lines.append(
                f"  {_text(upload['path'])} ({_text(upload['service'])}):"
                f" {human_size(upload['sent'])} of {human_size(upload['total'])}"
                f" ({100 * upload['sent'] // total}%{rate})"
            )
    if reply.get("hashing"):
        lines.append("hashing:")
        lines += [
            f"  {_text(h['path'])} ({_text(h['service'])}):"
            f" {human_size(h['hashed'])} of {human_size(h['total'])}"
            for h in reply["hashing"]
        ]
    if reply.get("retrying"):
        lines.append("retrying:")
        lines += [
            f"  {_text(r['path'])} ({_text(r['service'])}) at {_text(r['next_at'])}:"
            f" {_text(r['error'])}"
            for r in reply["retrying"]
        ]
    webhooks = reply.get("webhooks") or {}
    if webhooks.get("failing"):
        lines.append(f"webhook deliveries failing ({_text(webhooks.get('pending', 0))} waiting):")
        lines += [
            f"  {_text(d['receiver'])} {_text(d['event'])} of {_text(d['path'])}"
            f" (attempt {_text(d['attempts'])}, next at {_text(d['next_at'])}):"
            f" {_text(d['error'])}"
            for d in webhooks["failing"]
        ]
    lines += _after_upload(reply)
    if reply.get("fleet"):
        lines.append("fleet:")
        lines += [
            f"  {h['host']} (pid {h['pid']}): heartbeat {h['heartbeat_age_s']:.1f} s ago,"
            f" {h['claims']} claims"
            for h in reply["fleet"]
        ]
    if reply.get("service_holds"):
        lines.append("services held:")
        lines += [
            f"  {h['service']} until {h['until']}: {h['reason']}" for h in reply["service_holds"]
        ]
    if reply.get("held"):
        lines.append("held:")
        lines += [
            f"  {h['path']} ({h['service']}): {h['reason']}"
            + (f", until {h['until']}" if h.get("until") else "")
            for h in reply["held"]
        ]
    if reply.get("failures"):
        lines.append("failed (syncd retry PATH, or --all-failed):")
        for failure in reply["failures"]:
            lines.append(
                f"  {_text(failure['at'])} {_text(failure['path'])} ({_text(failure['service'])}):"
                f" {_text(failure['error'])}"
            )
            if failure.get("result"):
                shown = ", ".join(f"{_text(k)}={_text(v)}" for k, v in failure["result"].items())
                lines.append(f"    uploaded: {shown}")
    return "\n".join(lines)


def _after_upload(reply: dict[str, Any]) -> list[str]:
    """Archive / delete actions still to do, the trash, and hooks that failed."""
    lines = []
    if reply.get("pending_actions") or reply.get("trash"):
        lines.append(
            f"after upload: {_text(reply.get('pending_actions', 0))} actions pending,"
            f" {_text(reply.get('trash', 0))} files in the trash (syncd restore PATH)"
        )
    lines += [
        f"  {_text(a['path'])}: {_text(a['action'])}: {_text(a['error'])}"
        for a in reply.get("action_errors", [])
    ]
    if reply.get("failing_hooks"):
        lines.append("failing hooks:")
        lines += [
            f"  {_text(h['at'])} {_text(h['event'])} {_text(h['command'])}"
            f" for {_text(h['path'])}: {_text(h['error'])}"
            for h in reply["failing_hooks"]
        ]
    return lines
