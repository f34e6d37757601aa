"""Start-up reconciliation of already-done files: syncd's full scan vs `find -printf`.

At every start syncd walks the watched folders and compares each file's identity with the
journal, so that files dropped while it was down are not missed. With nothing new to find
this should cost little more than listing the tree: the baseline is
`find DIR -type f -printf '%s %T@ %i\\n'` (the same stat fields) over the same tree,
sidecars included, page cache warm, best of 3. syncd's figure is the scan time it reports
(`scan.seconds` in `syncd status`), best of 3 restarts; the time from process start to
the scan's end is shown beside it. Issue 2.
"""

from __future__ import annotations

import time

from common import (
    Daemon,
    Figure,
    best_of,
    parse_args,
    print_table,
    ratio_figure,
    sandbox,
    timed_shell,
    uploaded_tree,
    workdir,
)

TARGET = 2.0
"""syncd's scan time / find's time, at most."""
RESTARTS = 3


def restart_scan(daemon: Daemon, count: int) -> tuple[float, float]:
    """(scan.seconds, process start -> scan seen complete) of one restart."""
    daemon.start(wait=False)
    try:
        reply = daemon.wait_scan(600)
        wall = time.monotonic() - daemon.started_at
        counts = reply["counts"]
        if counts["done"] != count or reply["scan"]["files"] != count:
            raise RuntimeError(f"the restart did not find a clean journal: {reply}")
        return float(reply["scan"]["seconds"]), wall
    finally:
        daemon.stop()


def main() -> None:
    args = parse_args(__doc__)
    folders = 50 if args.quick else 500
    with workdir("scan") as root, sandbox(root) as control:
        daemon, tree, count, populated = uploaded_tree(root, control.url, folders)
        find = f"find {tree} -type f -printf '%s %T@ %i\\n' > /dev/null"
        timed_shell(find)  # warm the dentry and inode caches
        baseline = best_of(3, lambda: timed_shell(find))
        with daemon:
            runs = [restart_scan(daemon, count) for _ in range(RESTARTS)]
    scan = min(r[0] for r in runs)
    wall = min(r[1] for r in runs)
    figures = [
        ratio_figure("scan.seconds", scan, baseline, "s", at_most=TARGET),
        Figure(
            "process start -> scan done",
            f"{wall:.3f} s",
            f"{baseline:.3f} s",
            wall / baseline,
            "-",
            None,
        ),
    ]
    print_table(
        f"start-up scan of {count} done files in {folders} folders (+ their sidecars)",
        figures,
        [
            f"best of {RESTARTS} restarts; all scans: "
            + ", ".join(f"{s:.3f} s / {w:.3f} s" for s, w in runs),
            f"populating (upload of {count} files, workers=8) took {populated:.1f} s",
        ],
    )


if __name__ == "__main__":
    main()
