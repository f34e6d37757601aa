"""Every sandbox test gets its own Sandbox on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.sandbox.server import Sandbox

from .sandbox_client import Box


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    with Sandbox(data_dir=tmp_path / "data") as server:
        client = Box(server.url)
        try:
            yield client
        finally:
            client.http.close()
