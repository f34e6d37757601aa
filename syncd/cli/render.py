"""`syncd status` for people: the daemon's reply as a few readable lines."""

from __future__ import annotations

from typing import Any


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def render_status(reply: dict[str, Any]) -> str:
    """The status reply for people: what is watched, moving, waiting and broken."""
    if "error" in reply:
        return f"error: {reply['error']}"
    counts: dict[str, int] = reply.get("counts", {})
    lines = [
        f"syncd {reply.get('version')} (pid {reply.get('pid')}),"
        f" up {_duration(float(reply.get('uptime_s', 0)))}",
        "files: " + (", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none"),
    ]
    if reply.get("settling"):
        lines.append(f"settling: {reply['settling']} files being written")
    lines.append("watching:")
    lines += [f"  {w['path']} -> {w['service']}" for w in reply.get("watches", [])]
    if reply.get("uploads"):
        lines.append("uploading:")
        for upload in reply["uploads"]:
            total = max(int(upload["total"]), 1)
            rate = f", {_size(upload['rate'])}/s" if upload.get("rate") else ""
            lines.append(
                f"  {upload['path']} ({upload['service']}): {_size(upload['sent'])}"
                f" of {_size(upload['total'])} ({100 * upload['sent'] // total}%{rate})"
            )
    if reply.get("hashing"):
        lines.append("hashing:")
        lines += [
            f"  {h['path']} ({h['service']}): {_size(h['hashed'])} of {_size(h['total'])}"
            for h in reply["hashing"]
        ]
    if reply.get("retrying"):
        lines.append("retrying:")
        lines += [
            f"  {r['path']} ({r['service']}) at {r['next_at']}: {r['error']}"
            for r in reply["retrying"]
        ]
    if reply.get("fleet"):
        lines.append("fleet:")
        lines += [
            f"  {h['host']} (pid {h['pid']}): heartbeat {h['heartbeat_age_s']:.1f} s ago,"
            f" {h['claims']} claims"
            for h in reply["fleet"]
        ]
    if reply.get("failures"):
        lines.append("failed (syncd retry PATH, or --all-failed):")
        lines += [
            f"  {f['at']} {f['path']} ({f['service']}): {f['error']}" for f in reply["failures"]
        ]
    return "\n".join(lines)
