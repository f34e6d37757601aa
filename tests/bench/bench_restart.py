"""Restart over done files, process start to idle, vs `find DIR -printf '%s %T@\\n'`.

A restart with nothing new to do should cost little more than listing the tree. syncd's
figure is the wall time from spawning `python -m syncd run` to the first status reply
that shows it idle: the start-up scan completed and not running (`scan.completed` >= 1,
`scan.running` false), nothing settling, hashing or uploading, every file still `done`.
That includes the interpreter's start and every import the daemon makes before the scan
ends. The status is polled every POLL seconds, so the figure is late by up to one poll.
The baseline is `find DIR -printf '%s %T@\\n'` over the same tree (sidecars included),
page cache warm. Each side is measured several times, alternating; the table gives the
best of each, the notes the spread. Issue 9.
"""

from __future__ import annotations

import time
from typing import Any

from common import (
    Daemon,
    Figure,
    base_config,
    parse_args,
    populate,
    print_table,
    ratio_figure,
    sandbox,
    timed_shell,
    wait_until,
    workdir,
)

TARGET = 2.0
"""Process start -> idle / find's time, at most."""
POLL = 0.01


def idle(daemon: Daemon, count: int) -> dict[str, Any] | None:
    reply = daemon.poll_status()
    if reply is None:
        return None
    scan = reply["scan"]
    if scan["completed"] < 1 or scan["running"]:
        return None
    if reply["settling"] or reply["uploads"] or reply["hashing"]:
        return None
    if reply["counts"]["done"] != count or scan["files"] != count:
        raise RuntimeError(f"the restart did not find a clean journal: {reply}")
    return reply


def restart_to_idle(daemon: Daemon, count: int) -> tuple[float, float]:
    """(process start -> idle, scan.seconds) of one restart."""
    daemon.start(wait=False)
    try:
        reply = wait_until(lambda: idle(daemon, count), 300, "idle", interval=POLL)
        return time.monotonic() - daemon.started_at, float(reply["scan"]["seconds"])
    finally:
        daemon.stop()


def spread(values: list[float]) -> str:
    return f"best {min(values):.3f} s, worst {max(values):.3f} s"


def main() -> None:
    args = parse_args(__doc__)
    folders, rounds = (20, 5) if args.quick else (200, 7)
    with workdir("restart") as root, sandbox(root) as control:
        tree = root / "tree"
        count = populate(tree, folders)
        config = base_config(
            root,
            control.url,
            [{"path": str(tree)}],
            daemon={"workers": 8, "settle_seconds": 0.2},
        )
        daemon = Daemon(root, config)
        with daemon:
            started = time.monotonic()
            daemon.start()
            daemon.wait_counts(timeout=1800, interval=1.0, done=count)
            populated = time.monotonic() - started
        find = f"find {tree} -printf '%s %T@\\n' > /dev/null"
        timed_shell(find)  # warm the dentry and inode caches
        restart_to_idle(daemon, count)  # and the interpreter's files
        finds: list[float] = []
        restarts: list[tuple[float, float]] = []
        for _ in range(rounds):
            finds.append(timed_shell(find))
            restarts.append(restart_to_idle(daemon, count))
    walls = [wall for wall, _ in restarts]
    scans = [scan for _, scan in restarts]
    best = min(walls)
    baseline = min(finds)
    print_table(
        f"restart over {count} done files in {folders} folders (+ their sidecars) to idle",
        [
            ratio_figure("process start -> idle", best, baseline, "s", at_most=TARGET),
            Figure(
                "scan.seconds",
                f"{min(scans):.3f} s",
                f"{baseline:.3f} s",
                min(scans) / baseline,
                "-",
                None,
            ),
        ],
        [
            f"{rounds} rounds, alternating; to idle: {spread(walls)}; find: {spread(finds)}",
            "ratios per round: "
            + ", ".join(f"{w / f:.2f}x" for w, f in zip(walls, finds, strict=True)),
            f"status polled every {POLL * 1000:.0f} ms",
            f"populating (upload of {count} files, workers=8) took {populated:.1f} s",
        ],
    )


if __name__ == "__main__":
    main()
