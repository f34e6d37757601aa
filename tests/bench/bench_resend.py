"""Bytes re-sent per kill -9 of a large resumable TON upload: at most one chunk each.

One 400 MiB upload in 8 MiB chunks, slowed by a sandbox delay on every PUT so that kills
land mid-upload; the daemon is killed with SIGKILL at random points 20 times (--quick: 5)
and started again each time. The sandbox counts every body byte each session received
(`bytes_received`, re-sent and cut-off bytes included) beside the bytes it kept
(`received`); their difference is the waste. A kill's share is the waste added from just
before it to just before the next kill (or the end): the chunk cut short plus anything the
restart sent again. Issue 3.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from common import (
    Control,
    Daemon,
    Figure,
    MiB,
    base_config,
    fmt_bytes,
    parse_args,
    print_table,
    sandbox,
    sidecar_of,
    wait_until,
    workdir,
    write_random,
)

CHUNK = 8 * MiB
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/\d+")
DELAY_MS = 100
"""Each PUT waits this long at the sandbox before its body is read."""


def session_of(control: Control) -> dict[str, Any] | None:
    sessions = control.ton_sessions()
    if len(sessions) > 1:
        raise RuntimeError(f"a restart opened a new session: {sessions}")
    return sessions[0] if sessions else None


def waste(control: Control) -> int:
    session = session_of(control)
    return 0 if session is None else int(session["bytes_received"]) - int(session["received"])


def confirmed_resent(control: Control) -> int:
    """Bytes of chunks sent again after the server had confirmed them (should be none),
    from the sandbox's request journal."""
    confirmed = 0
    again = 0
    puts = [r for r in control.requests() if r["method"] == "PUT" and r["content_range"]]
    for request in sorted(puts, key=lambda r: r["seq"]):
        found = CONTENT_RANGE.fullmatch(request["content_range"])
        if found is None:  # a status query, `bytes */TOTAL`
            continue
        first, last = int(found[1]), int(found[2])
        again += max(0, min(last + 1, confirmed) - first)
        if request["status"] in (201, 308) and first == confirmed:
            confirmed = last + 1
    return again


def main() -> None:
    args = parse_args(__doc__)
    kills = 5 if args.quick else 20
    total = 400 * MiB
    rng = random.Random(6)
    chunks = total // CHUNK
    # Kill once the server holds this many chunks, then at a random moment of the next
    # chunk's life at the sandbox (its delay, then ~15 ms of reading). The client pushes the
    # body into the loopback socket buffers during the delay: a kill then leaves the sandbox
    # part of a chunk (wasted); a kill once all of it is buffered wastes nothing, as the
    # sandbox still reads and keeps the whole chunk.
    points = sorted(rng.sample(range(1, chunks - 1), kills))
    with workdir("resend") as root, sandbox(root) as control:
        watched = root / "drop"
        config = base_config(
            root,
            control.url,
            [{"path": str(watched)}],
            daemon={"settle_seconds": 0.2},
            service={"chunk_size": CHUNK},
        )
        watched.mkdir()
        control.fault(method="PUT", path="/1.1/ton/", delay_ms=DELAY_MS, count=100_000)
        before: list[int] = []
        with Daemon(root, config) as daemon:
            daemon.start()
            path = watched / "big.mov"
            write_random(path, total)
            for point in points:

                def reached(point: int = point) -> bool:
                    session = session_of(control)
                    return session is not None and session["received"] >= point * CHUNK

                wait_until(reached, 300, f"chunk {point} at the server", interval=0.01)
                time.sleep(rng.uniform(0, 1.15) * DELAY_MS / 1000)
                before.append(waste(control))
                daemon.kill()
                daemon.start()
            daemon.wait_counts(timeout=600, done=1)
        session = session_of(control)
        assert session is not None
        if (
            not (session["complete"] and session["received"] == total)
            or not sidecar_of(path).exists()
        ):
            raise RuntimeError(f"the upload did not complete: {session}")
        final = int(session["bytes_received"]) - total
        again = confirmed_resent(control)
    per_kill = [b - a for a, b in zip(before, [*before[1:], final], strict=True)]
    mean = sum(per_kill) / kills
    worst = max(per_kill)
    print_table(
        f"kill -9 x{kills} during a {fmt_bytes(total)} upload, chunk {fmt_bytes(CHUNK)}",
        [
            Figure("mean re-sent per kill", fmt_bytes(mean), "-", None, "-", None),
            Figure(
                "max re-sent per kill",
                fmt_bytes(worst),
                "-",
                None,
                f"<= {fmt_bytes(CHUNK)}",
                worst <= CHUNK,
            ),
        ],
        [
            f"total re-sent {fmt_bytes(final)} ({final} bytes) over {kills} kills; one session;"
            f" bytes of confirmed chunks sent again: {again}",
            "per kill (MiB): " + ", ".join(f"{b / MiB:.1f}" for b in per_kill),
        ],
    )


if __name__ == "__main__":
    main()
