"""How the daemon's threads share the interpreter: how soon a running thread hands the GIL
to a waiting one, and on which CPUs they take their turns.

The daemon's threads mostly wait (on a socket, an fsync, SQLite) and each comes back wanting
the GIL for a moment's work. Python lets the thread that holds it run on for up to 5 ms
before it must hand it over, so a worker back from a journal commit waits for whichever
thread is signing or parsing a request, and waits holding the journal's lock, with the
other workers queued behind it: in a burst of small files, a fifth of a worker's time was
spent waiting for that lock. At 1 ms the hand-over comes five times sooner (measured:
+9 % and +14 % files/s in a burst, tests/bench/README.md).

Every hand-over wakes the thread that takes the GIL. Spread over the machine's CPUs, that
is a wake-up of another CPU (on a virtual machine, an interrupt through the hypervisor)
dozens of times a file, for threads that can only take turns anyway: a burst of small files
cost 2.85 ms of CPU a file and 42 context switches, against 2.07 ms and 13 with the threads
on one CPU, at 1.17x the files/s (tests/bench/README.md). So `syncd run` keeps its threads
on the CPU it starts on (`[daemon] one_cpu`, on by default), and what works at length
without the GIL goes to every CPU: a large file's hashing and upload, the media server
sending videos, and hook commands.

A CPU kept busy by other processes would hold the daemon back, and the scheduler cannot
move threads that are pinned: so the main loop looks at the CPUs' load every few seconds
(`follow_the_load`), and the threads move to another CPU when others take most of theirs
while that one stands idle.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SWITCH_INTERVAL = 0.001
"""Seconds; Python's default is 0.005."""
LARGE = 1 << 20
"""Bytes from which a file's hashing and upload (which let go of the GIL for each piece)
use every CPU."""

LOOK = 5.0
"""Seconds between two looks at the CPUs' load; after a move, twice the pause before it (moves
in a row: 10, 20, 40 s ... up to LONGEST), back to LOOK once a look finds no reason to
move: the threads do not chase a load that follows them."""
LONGEST = 320.0
"""Seconds, the longest pause between two looks."""
CROWDED = 0.5
"""The share of the shared CPU's time other processes take, from which the threads move."""
MARGIN = 0.25
"""How much more of its time the other CPU must stand idle than the shared one leaves the
daemon: a move costs each thread a cold cache, and two busy CPUs are no reason to move."""


@dataclass(frozen=True)
class Load:
    """What /proc/stat and the process's own times said at one moment, in clock ticks."""

    at: float
    busy: dict[int, int]
    """By CPU: time spent on anything (steal included: the hypervisor's, not ours either)."""
    idle: dict[int, int]
    ours: int
    """The daemon's own CPU time, all its threads."""


@dataclass
class _Shared:
    machine: set[int] = field(default_factory=set)
    """The CPUs the daemon may use, once its threads share one of them (empty: they do not)."""
    cpu: int | None = None
    """That one."""
    last: Load | None = None
    pause: float = LOOK
    """Seconds from one look to the next."""


_shared = _Shared()


def quicken() -> None:
    """Set the daemon's switch interval (only `syncd run` does: no other command waits)."""
    sys.setswitchinterval(SWITCH_INTERVAL)


def share_one_cpu() -> None:
    """Keep the calling thread, and every thread it starts from now on, on the CPU it runs
    on; nothing to do where the daemon may use only one."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        return
    current = _current_cpu()
    _shared.cpu = current if current in allowed else min(allowed)
    os.sched_setaffinity(0, {_shared.cpu})
    _shared.machine = allowed


@contextmanager
def every_cpu() -> Iterator[None]:
    """The calling thread on every CPU the daemon may use while inside; threads and
    processes started inside keep that for good (the HTTP deadline watcher, started on
    demand, may so run wide until it next leaves for want of work: it wakes rarely)."""
    machine = _shared.machine
    if not machine:
        yield
        return
    own = os.sched_getaffinity(0)
    _pin(0, machine)
    try:
        yield
    finally:  # back to the shared CPU, which may have moved meanwhile
        shared = _shared.cpu
        _pin(0, own if own == machine or shared is None else {shared})


def cpus_for(size: int) -> AbstractContextManager[None]:
    """Where a job on a file of `size` bytes runs: a large one on every CPU."""
    return every_cpu() if size >= LARGE else nullcontext()


def follow_the_load(now: float) -> None:
    """Called on every tick of the main loop: every LOOK seconds or so, moves the threads
    that share one CPU to another when other processes crowd theirs (`less_crowded`)."""
    cpu = _shared.cpu
    if cpu is None or (_shared.last is not None and now - _shared.last.at < _shared.pause):
        return
    before, after = _shared.last, _load(now)
    _shared.last = after
    if before is None or after is None:
        return
    target = less_crowded(cpu, _shared.machine, before, after)
    _shared.pause = LOOK if target is None else min(2 * _shared.pause, LONGEST)
    if target is not None and _move(cpu, target):
        log.info(
            "the daemon's threads moved from CPU %d to CPU %d: other processes took %.0f %%"
            " of CPU %d",
            cpu,
            target,
            100 * others_share(cpu, before, after),
            cpu,
        )


def less_crowded(cpu: int, allowed: set[int], before: Load, after: Load) -> int | None:
    """The CPU of `allowed` to move to from `cpu`, judged over the span from `before` to
    `after`, if any: other processes took more than CROWDED of `cpu`, and that one stood
    idle MARGIN more of the time than they left."""
    others = others_share(cpu, before, after)
    if others <= CROWDED:
        return None
    idle = {
        other: _part(other, after.idle[other] - before.idle[other], before, after)
        for other in allowed - {cpu}
        if other in before.idle and other in after.idle
    }
    best = max(idle, key=idle.__getitem__, default=None)
    return best if best is not None and idle[best] > 1 - others + MARGIN else None


def others_share(cpu: int, before: Load, after: Load) -> float:
    """The share of `cpu`'s time that other processes took. The daemon's own time all
    counts as spent there (a large file's worker spends some elsewhere: an overestimate,
    so a move comes later, never sooner)."""
    if cpu not in before.busy or cpu not in after.busy:
        return 0.0
    busy = after.busy[cpu] - before.busy[cpu]
    return _part(cpu, busy - (after.ours - before.ours), before, after)


def _part(cpu: int, ticks: int, before: Load, after: Load) -> float:
    """The share of `cpu`'s time from `before` to `after` that `ticks` are."""
    elapsed = after.busy[cpu] + after.idle[cpu] - before.busy[cpu] - before.idle[cpu]
    return ticks / elapsed if elapsed > 0 else 0.0


def _load(now: float) -> Load | None:
    """None without /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy, idle = {}, {}
    for line in lines:
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        # user nice system idle iowait irq softirq steal (guest time is within user)
        ticks = [int(field) for field in fields[:8]]
        cpu = int(name[3:])
        idle[cpu] = ticks[3] + ticks[4]
        busy[cpu] = sum(ticks) - idle[cpu]
    times = os.times()
    return Load(now, busy, idle, round((times.user + times.system) * os.sysconf("SC_CLK_TCK")))


def _move(old: int, new: int) -> bool:
    """Every thread on `old` alone to `new`, the calling one first (False: it may not go
    there, none goes). One started meanwhile by a thread not moved yet inherits `old`: so
    again, until none is left there."""
    if not _pin(0, {new}):
        return False
    _shared.cpu = new  # before the others: a thread leaving `every_cpu` comes to `new`
    for _ in range(3):
        moved = False
        for task in os.listdir("/proc/self/task"):
            try:
                there = os.sched_getaffinity(int(task)) == {old}
            except OSError:  # it ended meanwhile
                continue
            moved |= there and _pin(int(task), {new})
        if not moved:
            break
    return True


def _pin(tid: int, cpus: set[int]) -> bool:
    """Where a thread runs is a matter of speed, never of correctness: refused (a cpuset
    that shrank meanwhile, a thread that ended), it stays where it is."""
    try:
        os.sched_setaffinity(tid, cpus)
    except OSError:
        return False
    return True


def _current_cpu() -> int | None:
    """The CPU the calling thread last ran on (field 39 of its stat; the name, field 2, may
    hold spaces and parentheses, so fields are counted from its closing one); None without
    /proc."""
    try:
        stat = Path("/proc/thread-self/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[36])
