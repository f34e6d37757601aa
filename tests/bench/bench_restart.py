"""Restart over done files, process start to idle, vs `find DIR -printf '%s %T@\\n'`.

A restart with nothing new to do should cost little more than listing the tree. syncd's
figure is the wall time from spawning `python -m syncd run` to idle: the start-up scan
completed and not running (`scan.completed` >= 1, `scan.running` false), nothing
settling, hashing or uploading, every file still `done`. That includes the interpreter's
start and every import the daemon makes before the scan ends. The moment is the scan's
own log line ("scan of N files took"), watched every LOG_POLL seconds, and a status reply
then confirms idle (if it does not, the status is polled until it does, and that moment
counts). Polling the status alone every 10 ms would tax the daemon during the scan: a
reply counts the journal's rows, ~1-3 ms of its CPU each over 20,000 files.
The baseline is `find DIR -printf '%s %T@\\n'` over the same tree (sidecars included),
page cache warm. Each side is measured several times, alternating; the table gives the
best of each, the notes the spread. On a shared machine the wall times swing with the
neighbours' load, so the CPU each side spent (the daemon's utime + stime at idle, all
threads; find's and its shell's) is shown beside them. The restarted daemon is syncd as
`pip install .` leaves it (common.installed_python: bytecode, no editable-install hook).
`--before SRC` restarts a syncd from another source tree too (`git archive COMMIT syncd |
tar -x -C SRC`), in turn with this one and find, on its own copy of the journal as that
version would have it (without the indexes its migrations do not make). Issue 9.
"""

from __future__ import annotations

import argparse
import re
import resource
import runpy
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    Daemon,
    cpu_seconds,
    installed_python,
    parse_args,
    print_table,
    ratio_figure,
    sandbox,
    timed_shell,
    uploaded_tree,
    wait_until,
    workdir,
)

TARGET = 2.0
"""Process start -> idle / find's time, at most."""
LOG_POLL = 0.002
STATUS_POLL = 0.01
SCAN_DONE = re.compile(rb"INFO scan of \d+ files took")


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


def scan_logged(daemon: Daemon, offset: int) -> float | None:
    """When the daemon's log (past `offset`) first showed the end of a full scan."""
    with daemon.log_path.open("rb") as log:
        log.seek(offset)
        return time.monotonic() if SCAN_DONE.search(log.read()) else None


@dataclass(frozen=True, slots=True)
class Round:
    idle: float
    """Process start -> idle, wall seconds."""
    idle_cpu: float
    """The daemon's utime + stime at idle, all threads."""
    scan: float
    """`scan.seconds` as the daemon reports it."""
    find: float
    find_cpu: float


def restart_to_idle(daemon: Daemon, count: int) -> tuple[float, float, float]:
    """(process start -> idle, the daemon's CPU seconds by then, scan.seconds)."""
    offset = daemon.log_path.stat().st_size if daemon.log_path.exists() else 0
    daemon.start(wait=False)
    try:
        logged = wait_until(lambda: scan_logged(daemon, offset), 300, "the scan", LOG_POLL)
        cpu = cpu_seconds(daemon.pid)
        reply = idle(daemon, count)
        if reply is None:
            reply = wait_until(lambda: idle(daemon, count), 300, "idle", STATUS_POLL)
            logged, cpu = time.monotonic(), cpu_seconds(daemon.pid)
        return logged - daemon.started_at, cpu, float(reply["scan"]["seconds"])
    finally:
        daemon.stop()


def timed_find(command: str) -> tuple[float, float]:
    """(wall, CPU seconds) of the baseline."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed_shell(command)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def one_round(daemon: Daemon, count: int, find: str) -> Round:
    find_wall, find_cpu = timed_find(find)
    idle_wall, idle_cpu, scan = restart_to_idle(daemon, count)
    return Round(idle_wall, idle_cpu, scan, find_wall, find_cpu)


def spread(values: list[float]) -> str:
    return f"best {min(values):.3f} s, worst {max(values):.3f} s"


def installed(daemon: Daemon, root: Path, source: Path | None) -> Daemon:
    """`daemon` restarting an installed copy of this checkout's syncd, or of `source`'s."""
    if source is not None:
        daemon.python = installed_python(root, source / "syncd")
    else:
        daemon.python = installed_python(root)
    daemon.env["PYTHONSAFEPATH"] = "1"  # the installed copy, not ./syncd of the checkout
    return daemon


def before_daemon(populated: Daemon, root: Path, source: Path) -> Daemon:
    """A daemon of `source` on its own copy of the populated journal, without the indexes
    that `source`'s migrations do not create (so it reads its rows as it always did), at
    the schema version it knows (only indexes were added since the benchmark's first
    `--before`: migrations 9, 10 and 11)."""
    root.mkdir()
    state = root / "state"
    shutil.copytree(Path(populated.config["daemon"]["state_dir"]), state)
    module = source / "syncd" / "journal" / "migrations.py"
    migrations = module.read_text()
    version = len(runpy.run_path(str(module))["MIGRATIONS"])
    with sqlite3.connect(state / "journal.sqlite") as db:
        names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")]
        for name in names:
            if not name.startswith("sqlite_") and name not in migrations:
                db.execute(f"DROP INDEX {name}")
        db.execute(f"PRAGMA user_version={version}")
    config = {**populated.config, "daemon": {**populated.config["daemon"], "state_dir": str(state)}}
    config["daemon"]["status_socket"] = str(root / "status.sock")
    return installed(Daemon(root, config), root, source)


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--before", type=Path, help="a syncd source tree to compare")

    args = parse_args(__doc__, options)
    folders, rounds = (20, 5) if args.quick else (200, 15)
    with workdir("restart") as root, sandbox(root) as control:
        daemon, tree, count, populated = uploaded_tree(root, control.url, folders)
        daemons = {"syncd": installed(daemon, root, None)}
        if args.before is not None:
            daemons = {"before": before_daemon(daemon, root / "before", args.before), **daemons}
        find = f"find {tree} -printf '%s %T@\\n' > /dev/null"
        results: dict[str, list[Round]] = {name: [] for name in daemons}
        for each in daemons.values():
            one_round(each, count, find)  # warm the caches: dentries, inodes, the interpreter's
        for _ in range(rounds):
            for name, each in daemons.items():
                results[name].append(one_round(each, count, find))
    baseline = min(r.find for rounds_of in results.values() for r in rounds_of)
    figures = []
    notes = []
    for name, rounds_of in results.items():
        label = "" if len(results) == 1 else f"{name}: "
        figures += [
            ratio_figure(
                f"{label}process start -> idle",
                min(r.idle for r in rounds_of),
                baseline,
                "s",
                at_most=TARGET,
            ),
            ratio_figure(
                f"{label}CPU to idle (daemon vs find)",
                min(r.idle_cpu for r in rounds_of),
                min(r.find_cpu for r in rounds_of),
                "s",
            ),
            ratio_figure(f"{label}scan.seconds", min(r.scan for r in rounds_of), baseline, "s"),
        ]
        notes += [
            f"{label}to idle: {spread([r.idle for r in rounds_of])};"
            f" find before each: {spread([r.find for r in rounds_of])}",
            f"{label}ratios per round: " + ", ".join(f"{r.idle / r.find:.2f}x" for r in rounds_of),
        ]
    print_table(
        f"restart over {count} done files in {folders} folders (+ their sidecars) to idle",
        figures,
        [
            f"{rounds} rounds, each version in turn, find before each restart",
            *notes,
            f"the log watched every {LOG_POLL * 1000:.0f} ms for the scan's end, then idle"
            " confirmed by the status",
            f"populating (upload of {count} files, workers=8) took {populated:.1f} s",
        ],
    )


if __name__ == "__main__":
    main()
