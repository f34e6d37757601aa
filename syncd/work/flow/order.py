"""Which waiting file a free worker takes: `priority` across watches, `order` within one.

The journal sorts waiting rows by (priority descending, rank ascending); the rank is
computed here when a file is recorded, from its watch's `order`.
"""

from __future__ import annotations

from syncd.files import Identity

Rank = int | bytes
"""Integers for the orders by time and size; the path's bytes for `name`."""


def rank(order: str, path: bytes, identity: Identity) -> Rank:
    if order == "newest":
        return -identity.mtime_ns
    if order == "smallest":
        return identity.size
    if order == "largest":
        return -identity.size
    if order == "name":
        return path
    return identity.mtime_ns
