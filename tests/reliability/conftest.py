"""The reliability suite: crashes, faults and hostile input (issue 11).

`RELIABILITY_SCALE` (default 1) multiplies the work: files, kills, clients, loop rounds.
CI runs scale 1 (the whole suite in a few minutes on 2 cores); a soak runs it higher, e.g.
`RELIABILITY_SCALE=20 pytest -p no:cacheprovider tests/reliability -s`. Each test records
its figures with `figures`; they are printed at the end of the run (and with -s as they
come), and written as JSON to $RELIABILITY_FIGURES when that is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

SCALE = max(1, int(os.environ.get("RELIABILITY_SCALE", "1")))
_RECORDED: list[tuple[str, dict[str, Any]]] = []


class Figures:
    """What one test measured, printed as `name: key=value ...`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[str, Any] = {"scale": SCALE}

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value
        print(f"{self.name}: {key} = {value}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    recorded = Figures(request.node.name)
    yield recorded
    _RECORDED.append((recorded.name, recorded.values))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _RECORDED:
        return
    terminalreporter.section(f"reliability figures (RELIABILITY_SCALE={SCALE})")
    for name, values in _RECORDED:
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        terminalreporter.write_line(f"{name}: {shown}")
    if target := os.environ.get("RELIABILITY_FIGURES"):
        with open(target, "w") as out:
            json.dump(dict(_RECORDED), out, indent=2)
