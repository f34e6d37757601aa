"""Work an emulator does after it has answered (OneAll's video callbacks, protocols.md 6.4).

Each task runs on its own thread and is handed a `cancelled` event that it waits on instead
of sleeping. Reset and stop cancel every task and join its thread, so nothing an earlier
test scheduled fires into a later one and a stopped sandbox leaves no thread behind.
`wait_idle` lets tests (and `POST /_sandbox/idle`) wait for the work to finish without
sleeping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("syncd.sandbox")

JOIN_TIMEOUT = 30.0
"""How long cancelling waits for one task: a task in the middle of an HTTP request ends
when that request's own timeout does (every request it makes has one)."""

Task = Callable[[threading.Event], None]
"""`task(cancelled)`: returns soon after `cancelled` is set."""


class Background:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._cancelled = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def start(self, name: str, task: Task) -> bool:
        """Run `task` on a new thread; False (and nothing runs) once closed."""
        with self._cond:
            if self._closed:
                return False
            thread = threading.Thread(
                target=self._run, args=(task, self._cancelled), name=name, daemon=True
            )
            self._threads.add(thread)
            thread.start()
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._threads)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no task is running; False when `timeout` seconds pass first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._threads, timeout)

    def cancel(self, *, close: bool = False) -> None:
        """Cancel every task and join its thread; with `close`, start nothing afterwards."""
        with self._cond:
            self._cancelled.set()
            self._cancelled = threading.Event()  # tasks started from now on run normally
            self._closed = self._closed or close
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                log.warning("background task %s did not stop in time", thread.name)

    def _run(self, task: Task, cancelled: threading.Event) -> None:
        try:
            task(cancelled)
        except Exception:
            log.exception("sandbox bug in background task %s", threading.current_thread().name)
        finally:
            with self._cond:
                self._threads.discard(threading.current_thread())
                self._cond.notify_all()
