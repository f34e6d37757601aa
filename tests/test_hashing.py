"""Streamed hashing reports how far it got, and gets the same digest as hashlib."""

from __future__ import annotations

import hashlib
import os

from syncd.files import HASH_PIECE, sha256_of


def test_sha256_of_reports_progress_and_matches_hashlib(tmp_path):
    data = os.urandom(3 * HASH_PIECE + 12345)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    seen: list[int] = []
    with path.open("rb") as file:
        assert sha256_of(file, seen.append) == hashlib.sha256(data).hexdigest()
    assert seen == [HASH_PIECE, 2 * HASH_PIECE, 3 * HASH_PIECE, len(data)]
