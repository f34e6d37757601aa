"""Signals taken in by a thread of their own, never acted on inside a signal handler.

Python runs a signal handler in the main thread between any two of its steps: also while
that thread holds a lock (an Event's, inside `Event.wait`) or is running another handler.
A handler that takes a lock (`Event.set` does) then waits for itself, and the daemon never
stops. So the handlers installed here do nothing: the interpreter's C-level handler writes
each signal's number to a pipe (`signal.set_wakeup_fd`), and the "signals" thread reads
them and calls `act` like any other thread would.

Before that, from the command line's first import: a SIGHUP's default action ends the
process, and a daemon still starting (importing, or waiting at boot for its database) is
asked to reload as readily as a running one. `hold` keeps such a SIGHUP for `take`, which
acts on it once it can; `release` gives a command that is not the daemon its default back.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

HELD = signal.SIGHUP
_held: set[int] = set()
"""Signals received between `hold` and `take` (or `release`)."""


def hold() -> None:
    """Keep a SIGHUP for `take` from now on. Only the main thread may set a handler: a
    command line imported elsewhere (a test's thread) has nothing to hold."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(HELD, _keep)


def release() -> None:
    """Not the daemon after all (`syncd status`, …): SIGHUP ends the process again, and one
    received meanwhile does now."""
    if signal.getsignal(HELD) is _keep:
        signal.signal(HELD, signal.SIG_DFL)
        for signum in sorted(_held):
            signal.raise_signal(signum)


def take(signums: Iterable[int], act: Callable[[int], None]) -> None:
    """From now on, `act(signum)` on the "signals" thread for each of `signums` received,
    including one held since `hold`. Called from the main thread (as `signal.signal` must
    be)."""
    wanted = set(signums)
    reader, writer = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(writer, False)  # a full pipe drops a number: the thread is reading
    signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    for signum in wanted:
        signal.signal(signum, _nothing)  # a Python handler is what makes the C one write
    os.write(writer, bytes(sorted(wanted & _held)))
    _held.clear()
    threading.Thread(target=_relay, args=(reader, act), name="signals", daemon=True).start()


def _keep(signum: int, frame: FrameType | None) -> None:
    """The handler between `hold` and `take`: a set's add takes no lock of Python's."""
    _held.add(signum)


def _nothing(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: its work is done on the signals thread."""


def _relay(reader: int, act: Callable[[int], None]) -> None:
    while received := os.read(reader, 64):
        for signum in received:
            act(signum)
