"""Helpers for the flow-control tests: the daemon's clock knob, files, and measured rates.

The daemon reads `SYNCD_CLOCK_OFFSET_FILE` (seconds added to its clock) for schedules,
quota days and holds; with TZ=UTC its local time is predictable.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import SandboxClient

MiB = 1024 * 1024
SLOT = 0.1
"""The sandbox sums arrivals per tenth of a second."""


class ClockKnob:
    """Moves the daemon's notion of the time; the environment to start it with."""

    def __init__(self, root: Path) -> None:
        self.file = root / "clock-offset"
        self.file.write_text("0")
        self.env = {"SYNCD_CLOCK_OFFSET_FILE": str(self.file), "TZ": "UTC"}

    @property
    def offset(self) -> float:
        return float(self.file.read_text())

    def set_utc(self, hour: int, minute: int, second: int = 0) -> datetime:
        """From now on the daemon's clock reads today's HH:MM:SS UTC (and runs on)."""
        now = time.time()
        target = datetime.fromtimestamp(now, UTC).replace(
            hour=hour, minute=minute, second=second, microsecond=0
        )
        self._write(target.timestamp() - now)
        return target

    def advance(self, seconds: float) -> None:
        self._write(self.offset + seconds)

    def _write(self, offset: float) -> None:
        temporary = self.file.with_suffix(".tmp")
        temporary.write_text(repr(offset))
        os.replace(temporary, self.file)


def make_file(path: Path, size: int, seed: int, mtime: float | None = None) -> Path:
    """`size` pseudo-random bytes (distinct per seed), written before anyone watches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with path.open("wb") as out:
        left = size
        while left:
            piece = rng.randbytes(min(left, 4 * MiB))
            out.write(piece)
            left -= len(piece)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def arrivals_by_slot(
    sandbox: SandboxClient, wanted: Callable[[dict[str, Any]], bool] = lambda r: True
) -> dict[int, int]:
    """Body bytes the sandbox received per slot (its index), over the requests `wanted`."""
    slots: dict[int, int] = defaultdict(int)
    for request in sandbox.get("arrivals"):
        if wanted(request):
            for start, amount in request["slots"]:
                slots[round(start / SLOT)] += amount
    return dict(slots)


def window_rates(
    slots: dict[int, int], start: float, end: float, window: float = 5.0
) -> list[tuple[float, float]]:
    """(window start, bytes/s) for every `window`-long span inside [start, end], in 0.1 s steps."""
    width = round(window / SLOT)
    first, last = round(start / SLOT), round(end / SLOT) - width
    return [
        (index * SLOT, sum(slots.get(i, 0) for i in range(index, index + width)) / window)
        for index in range(first, last + 1)
    ]


def rate_between(slots: dict[int, int], start: float, end: float) -> float:
    first, last = round(start / SLOT), round(end / SLOT)
    return sum(slots.get(i, 0) for i in range(first, last)) / (end - start)


def span(slots: dict[int, int]) -> tuple[float, float]:
    """When the first and the last counted bytes arrived."""
    return min(slots) * SLOT, (max(slots) + 1) * SLOT
