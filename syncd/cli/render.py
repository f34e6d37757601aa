"""`syncd status` for people: the daemon's reply as a few readable lines."""

from __future__ import annotations

from typing import Any


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
    return "files: " + (", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none")


def render_status(reply: dict[str, Any]) -> str:
    """The status reply for people: what is watched, moving, waiting and broken."""
    if "error" in reply:
        return f"error: {reply['error']}"
    counts: dict[str, int] = reply.get("counts", {})
    lines = [
        f"syncd {reply.get('version')} (pid {reply.get('pid')}),"
        f" up {human_duration(float(reply.get('uptime_s', 0)))}",
        counts_line(counts),
    ]
    limit = reply.get("bandwidth", {}).get("total")
    if limit is not None:
        lines.append(f"bandwidth: {human_size(limit) + '/s' if limit else 'unlimited'}")
    if reply.get("paused"):
        lines.append(f"paused (syncd resume): {', '.join(reply['paused'])}")
    if reply.get("settling"):
        lines.append(f"settling: {reply['settling']} files being written")
    lines.append("watching:")
    lines += [f"  {w['path']} -> {w['service']}" for w in reply.get("watches", [])]
    if reply.get("uploads"):
        lines.append("uploading:")
        for upload in reply["uploads"]:
            total = max(int(upload["total"]), 1)
            rate = f", {human_size(upload['rate'])}/s" if upload.get("rate") else ""
            lines.append(
                f"  {upload['path']} ({upload['service']}): {human_size(upload['sent'])}"
                f" of {human_size(upload['total'])} ({100 * upload['sent'] // total}%{rate})"
            )
    if reply.get("hashing"):
        lines.append("hashing:")
        lines += [
            f"  {h['path']} ({h['service']}): {human_size(h['hashed'])} of {human_size(h['total'])}"
            for h in reply["hashing"]
        ]
    if reply.get("retrying"):
        lines.append("retrying:")
        lines += [
            f"  {r['path']} ({r['service']}) at {r['next_at']}: {r['error']}"
            for r in reply["retrying"]
        ]
    webhooks = reply.get("webhooks") or {}
    if webhooks.get("failing"):
        lines.append(f"webhook deliveries failing ({webhooks.get('pending', 0)} waiting):")
        lines += [
            f"  {d['receiver']} {d['event']} of {d['path']} (attempt {d['attempts']},"
            f" next at {d['next_at']}): {d['error']}"
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
        lines += [
            f"  {f['at']} {f['path']} ({f['service']}): {f['error']}" for f in reply["failures"]
        ]
    return "\n".join(lines)


def _after_upload(reply: dict[str, Any]) -> list[str]:
    """Archive / delete actions still to do, the trash, and hooks that failed."""
    lines = []
    if reply.get("pending_actions") or reply.get("trash"):
        lines.append(
            f"after upload: {reply.get('pending_actions', 0)} actions pending,"
            f" {reply.get('trash', 0)} files in the trash (syncd restore PATH)"
        )
    lines += [f"  {a['path']}: {a['action']}: {a['error']}" for a in reply.get("action_errors", [])]
    if reply.get("failing_hooks"):
        lines.append("failing hooks:")
        lines += [
            f"  {h['at']} {h['event']} {h['command']} for {h['path']}: {h['error']}"
            for h in reply["failing_hooks"]
        ]
    return lines
