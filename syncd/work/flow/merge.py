"""Flow control's values when a host's journal joins a fleet's (`syncd journal copy`).

The fleet's values are the whole fleet's, so the host's are merged into them, never over
them: a service paused on either side stays paused, a hold the fleet has is kept (the
host's hold of a service the fleet does not hold comes along), and today's quota counts add
up, each file counted under the id it has in the fleet. Merging again changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncd.work.flow.gate import PAUSED_KEY
from syncd.work.flow.holds import HOLDS_KEY
from syncd.work.flow.quota import QUOTA_PREFIX


def merge_flow(key: str, fleet: Any, host: Any, ids: Mapping[int, int]) -> Any:
    """The value of `key` to keep; `ids`: the host's file ids -> the fleet's."""
    if key == PAUSED_KEY:
        return sorted({*(fleet or ()), *(host or ())})
    if key == HOLDS_KEY:
        return {**(host or {}), **(fleet or {})}
    if key.startswith(QUOTA_PREFIX):
        return _merge_quota(fleet, host, ids)
    return host if fleet is None else fleet


def _merge_quota(fleet: Any, host: Any, ids: Mapping[int, int]) -> Any:
    """[day, files, bytes, ids] of the later day; of one day, the sum, unless the fleet
    counted the host's files already (a copy run again). The ids are those that may still
    come back (quota.py drops the done ones): a host that lists none adds its count."""
    if not _is_count(host):
        return fleet
    day, files, sent, counted = host
    mine = [ids[i] for i in counted if i in ids]
    if not _is_count(fleet) or fleet[0] < day:
        return [day, files, sent, mine]
    if fleet[0] > day or (mine and set(mine) <= set(fleet[3])):
        return fleet
    return [day, fleet[1] + files, fleet[2] + sent, [*fleet[3], *mine]]


def _is_count(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and isinstance(value[3], list)
