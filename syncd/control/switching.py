"""How soon a running thread hands the GIL to a waiting one, in the daemon.

The daemon's threads mostly wait (on a socket, an fsync, SQLite) and each comes back wanting
the GIL for a moment's work. Python lets the thread that holds it run on for up to 5 ms
before it must hand it over, so a worker back from a journal commit waits for whichever
thread is signing or parsing a request, and waits holding the journal's lock, with the
other workers queued behind it: in a burst of small files, a fifth of a worker's time was
spent waiting for that lock. At 1 ms the hand-over comes five times sooner (measured:
+9 % and +14 % files/s in a burst, tests/bench/README.md). A thread that computes at
length loses little: hashing and compression release the GIL for their large buffers.
"""

from __future__ import annotations

import sys

SWITCH_INTERVAL = 0.001
"""Seconds; Python's default is 0.005."""


def quicken() -> None:
    """Set the daemon's switch interval (only `syncd run` does: no other command waits)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
