"""On which CPUs the daemon's threads run (control/switching.py), read from /proc: its
threads share the CPU it started on, a large file's job and hook commands get every CPU
the daemon may use, the threads move off a CPU that another process keeps busy, and
`one_cpu = false` leaves every thread to the scheduler."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import base_config, wait_until
from harness import RunningDaemon

from syncd.control import switching
from syncd.control.switching import Load, less_crowded

MACHINE = os.sched_getaffinity(0)

pytestmark = pytest.mark.skipif(len(MACHINE) < 2, reason="needs two CPUs to choose from")


def cpus_of(status: str) -> set[int]:
    """The set a `Cpus_allowed_list:` line of /proc/.../status names ("0-3,5")."""
    line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list:"))
    cpus: set[int] = set()
    for part in line.split(":", 1)[1].strip().split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def threads_cpus(pid: int) -> dict[int, set[int]]:
    """Each of the process's threads, by id: the CPUs it may run on."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(task.name)] = cpus_of((task / "status").read_text())
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return found


def narrow_threads(daemon: RunningDaemon) -> set[int]:
    return {tid for tid, cpus in threads_cpus(daemon.pid).items() if cpus != MACHINE}


def widened(daemon: RunningDaemon, tids: set[int]) -> set[int]:
    """Those of `tids` still running and now on every CPU."""
    return {
        tid for tid, cpus in threads_cpus(daemon.pid).items() if tid in tids and cpus == MACHINE
    }


def config_for(tmp_path: Path, sandbox_url: str, **daemon: object) -> dict[str, object]:
    drop = tmp_path / "drop"
    drop.mkdir()
    report = tmp_path / "hook-cpus"
    hook = ["sh", "-c", 'cat /proc/self/status > "$0.part" && mv "$0.part" "$0"', str(report)]
    return base_config(tmp_path, sandbox_url, [{"path": str(drop), "on_done": hook}], **daemon)


def test_the_threads_share_one_cpu_a_large_file_and_the_hooks_get_every_cpu(
    tmp_path, sandbox, make_daemon
):
    daemon = make_daemon(config_for(tmp_path, sandbox.url, workers=2)).start()
    wait_until(lambda: "watching 1 folders" in daemon.log(), 30, "every thread started")
    cpus = threads_cpus(daemon.pid)
    [cpu] = cpus[daemon.pid]  # the main thread: one CPU, which every thread it started keeps
    assert cpu in MACHINE
    assert all(c in ({cpu}, MACHINE) for c in cpus.values()), cpus
    assert sum(c == {cpu} for c in cpus.values()) >= 6, "workers, watcher, settler, status..."
    (tmp_path / "drop" / "small.bin").write_bytes(b"small")
    report = tmp_path / "hook-cpus"
    wait_until(report.exists, 60, "the done hook's report")
    assert cpus_of(report.read_text()) == MACHINE, "a hook command is started with every CPU"
    wait_until(lambda: "hook ran for" in daemon.log(), 30, "the hook's end")
    report.unlink()
    narrow = narrow_threads(daemon)

    # A file of 1 MiB and more: its worker on every CPU while it hashes and uploads it
    # (threads are told apart by id: a thread started on demand meanwhile is no worker).
    sandbox.fault(method="POST", path="/ton/bucket/", delay_ms=3000, count=1)
    (tmp_path / "drop" / "large.bin").write_bytes(os.urandom(2 << 20))
    wait_until(lambda: daemon.status()["uploads"], 30, "the large file's upload")
    assert len(widened(daemon, narrow)) == 1, "one worker"
    wait_until(report.exists, 60, "the large file done")
    wait_until(lambda: not widened(daemon, narrow), 10, "its worker back on the one CPU")
    assert threads_cpus(daemon.pid)[daemon.pid] == {cpu} or "threads moved" in daemon.log()
    assert daemon.stop() == 0


def test_the_threads_move_off_a_cpu_another_process_keeps_busy_and_do_not_chase_it(
    tmp_path, sandbox, make_daemon
):
    daemon = make_daemon(config_for(tmp_path, sandbox.url)).start()
    wait_until(lambda: "watching 1 folders" in daemon.log(), 30, "every thread started")
    [cpu] = threads_cpus(daemon.pid)[daemon.pid]
    narrow = narrow_threads(daemon)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {cpu})
        wait_until(lambda: threads_cpus(daemon.pid)[daemon.pid] != {cpu}, 60, "a move")
        moved = time.monotonic()
        [moved_to] = threads_cpus(daemon.pid)[daemon.pid]
        assert moved_to != cpu
        still = {tid: cpus for tid, cpus in threads_cpus(daemon.pid).items() if tid in narrow}
        assert set(map(frozenset, still.values())) == {frozenset({moved_to})}, "all of them"
        assert f"moved from CPU {moved_to}" not in daemon.log()

        # The busy process follows: the threads move back, but look twice as long first.
        os.sched_setaffinity(hog.pid, {moved_to})
        wait_until(lambda: threads_cpus(daemon.pid)[daemon.pid] != {moved_to}, 60, "again")
        assert time.monotonic() - moved >= 2 * switching.LOOK - 1
    finally:
        hog.kill()
        hog.wait()
    log = daemon.log()
    assert f"moved from CPU {cpu} to CPU {moved_to}" in log
    assert f"moved from CPU {moved_to} to CPU" in log
    (tmp_path / "drop" / "a.bin").write_bytes(b"a")
    wait_until((tmp_path / "hook-cpus").exists, 60, "the done hook's report: it still works")
    assert daemon.stop() == 0


def load(at: float, busy: tuple[int, int], idle: tuple[int, int], ours: int) -> Load:
    return Load(at, dict(enumerate(busy)), dict(enumerate(idle)), ours)


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (load(5, (500, 50), (0, 450), 0), 1),  # another process took all of CPU 0; 1 idle
        (load(5, (500, 50), (0, 450), 400), None),  # the daemon itself kept CPU 0 busy
        (load(5, (300, 50), (200, 450), 0), 1),  # others took 60 %; CPU 1 idle 90 %
        (load(5, (250, 50), (250, 450), 0), None),  # others took 50 %: not crowded
        (load(5, (500, 400), (0, 100), 0), None),  # both CPUs busy: no better place
        (load(5, (500, 300), (0, 200), 0), 1),  # CPU 1 idle 40 %, CPU 0 left none: worth it
        (load(5, (400, 300), (100, 200), 0), None),  # 80 % taken, CPU 1 idle 40 %: < margin
        (load(5, (0, 0), (0, 0), 0), None),  # no time passed (ticks) at all
    ],
)
def test_a_move_needs_a_crowded_cpu_and_a_clearly_idler_one(after: Load, expected: int | None):
    before = load(0, (0, 0), (0, 0), 0)
    assert less_crowded(0, {0, 1}, before, after) == expected
    assert less_crowded(0, {0}, before, after) is None, "only CPUs the daemon may use"


def test_one_cpu_false_leaves_every_thread_to_the_scheduler(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(config_for(tmp_path, sandbox.url, one_cpu=False)).start()
    wait_until(lambda: "watching 1 folders" in daemon.log(), 30, "every thread started")
    (tmp_path / "drop" / "a.bin").write_bytes(b"a")
    wait_until((tmp_path / "hook-cpus").exists, 60, "the done hook's report")
    assert set(map(frozenset, threads_cpus(daemon.pid).values())) == {frozenset(MACHINE)}
    assert daemon.stop() == 0


def test_a_thread_started_by_a_pinned_one_keeps_its_cpu_and_every_cpu_is_given_back():
    """switching's own promises, in a process of their own (they pin the calling thread)."""
    script = """
import os, threading
from syncd.control import switching
switching.share_one_cpu()
pinned = os.sched_getaffinity(0)
seen = {}
def look(name):
    seen[name] = os.sched_getaffinity(0)
threading.Thread(target=look, args=("after",)).start()
with switching.every_cpu():
    seen["inside"] = os.sched_getaffinity(0)
    wide = threading.Thread(target=lambda: (threading.Event().wait(0.2), look("started inside")))
    wide.start()
with switching.cpus_for(switching.LARGE - 1):
    seen["small job"] = os.sched_getaffinity(0)
with switching.cpus_for(switching.LARGE):
    seen["large job"] = os.sched_getaffinity(0)
wide.join()
seen["back"] = os.sched_getaffinity(0)
assert not switching._move(min(pinned), 1 << 20)  # no such CPU: nobody moves, no error
seen["not moved"] = os.sched_getaffinity(0)
print(len(pinned), *(f"{k}={sorted(v)}" for k, v in seen.items()), sep="\\n")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    every, one = str(sorted(MACHINE)), out[1].split("=")[1]
    assert out[0] == "1" and one != every
    assert dict(line.split("=") for line in out[1:]) == {
        "after": one,
        "inside": every,
        "started inside": every,
        "small job": one,
        "large job": every,
        "back": one,
        "not moved": one,
    }
