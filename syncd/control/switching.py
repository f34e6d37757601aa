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
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

SWITCH_INTERVAL = 0.001
"""Seconds; Python's default is 0.005."""
LARGE = 1 << 20
"""Bytes from which a file's hashing and upload (which let go of the GIL for each piece)
use every CPU."""

_machine: set[int] = set()
"""The CPUs the daemon may use, once its threads share one of them (empty: they do not)."""


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
    os.sched_setaffinity(0, {current if current in allowed else min(allowed)})
    _machine.update(allowed)


@contextmanager
def every_cpu() -> Iterator[None]:
    """The calling thread on every CPU the daemon may use while inside; threads and
    processes started inside keep that for good (the HTTP deadline watcher, started on
    demand, may so run wide until it next leaves for want of work: it wakes rarely)."""
    if not _machine:
        yield
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, _machine)
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


def cpus_for(size: int) -> AbstractContextManager[None]:
    """Where a job on a file of `size` bytes runs: a large one on every CPU."""
    return every_cpu() if size >= LARGE else nullcontext()


def _current_cpu() -> int | None:
    """The CPU the calling thread last ran on (field 39 of its stat; the name, field 2, may
    hold spaces and parentheses, so fields are counted from its closing one); None without
    /proc."""
    try:
        stat = Path("/proc/thread-self/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[36])
