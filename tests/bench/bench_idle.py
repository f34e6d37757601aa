"""Idle CPU of the daemon watching 1,000 folders: no polling, so next to nothing.

One recursive [[watch]] over a tree of 1,000 folders (100 of them holding a file that is
uploaded first). Once the start-up scan is over and every file is done, the daemon's
utime + stime (all threads, /proc/PID/stat) is read before and after a quiet minute;
CPU % = CPU seconds / wall seconds x 100. The wake-ups (context switches of all its
threads) tell what keeps it busy if it misses. Issue 2.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from common import (
    Daemon,
    Figure,
    base_config,
    cpu_seconds,
    parse_args,
    print_table,
    proc_status_kib,
    sandbox,
    workdir,
)

TARGET_PERCENT = 0.2
TOP_FOLDERS = 10
SUB_FOLDERS = 99
"""10 + 10 x 99 = 1,000 folders below the watched root."""
FILES = 100


def make_tree(root: Path) -> None:
    for t in range(TOP_FOLDERS):
        for s in range(SUB_FOLDERS):
            (root / f"t{t}" / f"s{s:02d}").mkdir(parents=True)
    for n in range(FILES):
        folder = root / f"t{n % TOP_FOLDERS}" / f"s{n // TOP_FOLDERS:02d}"
        (folder / f"file{n:03d}.csv").write_bytes(os.urandom(512))


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of all of a process's threads."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total


def main() -> None:
    args = parse_args(__doc__)
    window = 15.0 if args.quick else 60.0
    with workdir("idle") as root, sandbox(root) as control:
        tree = root / "tree"
        make_tree(tree)
        folders = sum(1 for _ in tree.rglob("*") if _.is_dir())
        config = base_config(
            root, control.url, [{"path": str(tree)}], daemon={"settle_seconds": 0.5}
        )
        with Daemon(root, config) as daemon:
            daemon.start()
            daemon.wait_scan(60)
            daemon.wait_counts(timeout=120, done=FILES)
            time.sleep(2.0)  # let the sidecars' own events drain
            pid = daemon.pid
            threads = len(os.listdir(f"/proc/{pid}/task"))
            rss = proc_status_kib(pid, "VmRSS")
            cpu0, switches0, wall0 = cpu_seconds(pid), context_switches(pid), time.monotonic()
            time.sleep(window)
            cpu1, switches1, wall1 = cpu_seconds(pid), context_switches(pid), time.monotonic()
    wall = wall1 - wall0
    percent = (cpu1 - cpu0) / wall * 100
    print_table(
        f"idle daemon, {folders} watched folders, {wall:.0f} s",
        [
            Figure(
                "idle CPU",
                f"{percent:.3f} %",
                "-",
                None,
                f"<= {TARGET_PERCENT:g} %",
                percent <= TARGET_PERCENT,
            )
        ],
        [
            f"CPU {cpu1 - cpu0:.2f} s in {wall:.1f} s (resolution: one clock tick, "
            f"{1 / os.sysconf('SC_CLK_TCK'):g} s)",
            f"{(switches1 - switches0) / wall:.1f} context switches/s over {threads} threads; "
            f"RSS {rss / 1024:.1f} MiB",
        ],
    )


if __name__ == "__main__":
    main()
