"""JSON columns in and out of the database: a datetime survives the round trip."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def encode(value: Any) -> str:
    """JSON for `progress` and `result`; a datetime survives the round trip."""

    def default(obj: object) -> object:
        if isinstance(obj, datetime):
            return {"$datetime": obj.isoformat()}
        raise TypeError(f"cannot journal {type(obj).__name__}")

    return json.dumps(value, default=default)


def decode(text: str | None) -> Any:
    if text is None:
        return None

    def hook(obj: dict[str, Any]) -> Any:
        if obj.keys() == {"$datetime"}:
            return datetime.fromisoformat(obj["$datetime"])
        return obj

    return json.loads(text, object_hook=hook)
