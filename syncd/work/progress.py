"""What is moving right now, in memory only: uploads and hashes in flight, with their rates."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Upload:
    """An upload in flight, as `syncd status` shows it."""

    path: str
    service: str
    total: int
    sent: int = 0
    started_sent: int = -1
    started: float = 0.0

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        moved = self.sent - max(self.started_sent, 0)
        return moved / elapsed if elapsed > 0 else 0.0


class InFlight:
    """What the workers are uploading right now; progress is kept in memory only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._uploads: dict[int, Upload] = {}

    def begin(self, row_id: int, upload: Upload) -> Callable[[int], None]:
        upload.started = time.monotonic()
        with self._lock:
            self._uploads[row_id] = upload

        def progress(sent: int) -> None:
            if upload.started_sent < 0:
                upload.started_sent = sent  # where a resumed upload picked up
            upload.sent = sent

        return progress

    def end(self, row_id: int) -> None:
        with self._lock:
            self._uploads.pop(row_id, None)

    def snapshot(self) -> list[Upload]:
        with self._lock:
            return list(self._uploads.values())
