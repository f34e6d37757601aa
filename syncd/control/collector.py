"""Python's cycle collector, paused while the command line loads and the daemon starts.

Importing the daemon's modules and comparing a large tree with the journal's identities
allocate a few hundred thousand containers and next to no garbage, and the collector, run
every 700 allocations, walks them again and again: over 20,000 done files, ~75 collections
and 20-25 ms of a restart whose whole budget is twice what `find` takes. So it is paused
while the command line's modules load (anyone importing them gets it back at the end), and
again from `syncd run` until the daemon's start-up scan is done, or the start has taken
`START_LIMIT` (the daemon's main loop asks, `resume_once_started`). What was built by then
stays for the process's life, so it is moved out of later full collections (`gc.freeze`).
Reference counting frees everything acyclic meanwhile, as always.
"""

from __future__ import annotations

import gc
import time

START_LIMIT = 10.0
"""A start-up scan of millions of files takes minutes: the collector resumes after this
many seconds even so, uploads being under way by then."""

_paused_at: float | None = None


def pause() -> None:
    global _paused_at
    gc.disable()
    _paused_at = time.monotonic()


def resume() -> None:
    global _paused_at
    if _paused_at is not None:
        _paused_at = None
        gc.freeze()
        gc.enable()


def resume_once_started(scanned: bool) -> None:
    """Resume once the start-up scan is done (`scanned`) or the start took `START_LIMIT`."""
    if _paused_at is not None and (scanned or time.monotonic() - _paused_at >= START_LIMIT):
        resume()
