"""Signals taken in by a thread of their own, never acted on inside a signal handler.

Python runs a signal handler in the main thread between any two of its steps: also while
that thread holds a lock (an Event's, inside `Event.wait`) or is running another handler.
A handler that takes a lock (`Event.set` does) then waits for itself, and the daemon never
stops. So the handlers installed here do nothing: the interpreter's C-level handler writes
each signal's number to a pipe (`signal.set_wakeup_fd`), and the "signals" thread reads
them and calls `act` like any other thread would.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType


def take(signums: Iterable[int], act: Callable[[int], None]) -> None:
    """From now on, `act(signum)` on the "signals" thread for each of `signums` received.
    Called from the main thread (as `signal.signal` must be)."""
    reader, writer = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(writer, False)  # a full pipe drops a number: the thread is reading
    signal.set_wakeup_fd(writer, warn_on_full_buffer=False)
    for signum in signums:
        signal.signal(signum, _nothing)  # a Python handler is what makes the C one write
    threading.Thread(target=_relay, args=(reader, act), name="signals", daemon=True).start()


def _nothing(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: its work is done on the signals thread."""


def _relay(reader: int, act: Callable[[int], None]) -> None:
    while received := os.read(reader, 64):
        for signum in received:
            act(signum)
