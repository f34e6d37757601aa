"""Python's cycle collector, paused while the command line loads and the daemon starts.

Importing the daemon's modules and comparing a large tree with the journal's identities
allocate a few hundred thousand containers and next to no garbage, and the collector, run
every 700 allocations, walks them again and again: over 20,000 done files, ~75 collections
and 20-25 ms of a restart whose whole budget is twice what `find` takes. So it is paused
while the command line's modules load (anyone importing them gets it back at the end), and
again from `syncd run` until the daemon's start-up scan is done, or `START_LIMIT` has passed
(a scan of millions of files, a fleet host waiting at boot for its database). What was
built by then stays for the process's life, so it is moved out of later full collections
(`gc.freeze`). Reference counting frees everything acyclic meanwhile, as always.
"""

from __future__ import annotations

import gc
import threading

START_LIMIT = 10.0
"""The longest pause of `syncd run`, in seconds."""

_lock = threading.Lock()
_paused = False


def pause(limit: float | None = None) -> None:
    """Until `resume`, or for `limit` seconds at most (a timer thread resumes it then)."""
    global _paused
    with _lock:
        gc.disable()
        _paused = True
    if limit is not None:
        timer = threading.Timer(limit, resume)
        timer.daemon = True
        timer.start()


def resume() -> None:
    global _paused
    with _lock:
        if _paused:
            _paused = False
            gc.freeze()
            gc.enable()
