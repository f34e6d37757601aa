"""`NAME.syncd.toml` beside each uploaded file, written so that it is whole or absent.

Temp file in the same folder, fsync, rename over, fsync the folder: a crash at any moment
leaves either no sidecar or a complete one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SUFFIX = ".syncd.toml"


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


class _Utc(datetime):
    """A UTC time that tomli-w writes as the contract spells it: 2026-11-22T10:00:00Z
    (tomli-w writes str(value), which for a plain datetime is "2026-11-22 10:00:00+00:00")."""

    def __str__(self) -> str:
        return self.strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(when: float | datetime) -> _Utc:
    seconds = when.timestamp() if isinstance(when, datetime) else when
    return _Utc.fromtimestamp(int(seconds), UTC)


def render(
    *,
    service: str,
    service_type: str,
    sha256: str,
    size: int,
    uploaded_at: float,
    result: dict[str, Any],
    duplicate_of: Path | None = None,
) -> str:
    document: dict[str, Any] = {
        "service": service,
        "type": service_type,
        "sha256": sha256,
        "size": size,
        "uploaded_at": _utc(uploaded_at),
    }
    if duplicate_of is not None:
        document["duplicate_of"] = (
            os.fsdecode(duplicate_of).encode("utf-8", "backslashreplace").decode("utf-8")
        )
    document["result"] = {
        k: _utc(v) if isinstance(v, datetime) else v for k, v in result.items() if v is not None
    }
    import tomli_w  # not needed until the first upload is done

    return tomli_w.dumps(document)


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    """Atomically put `text` at the sidecar of `path`; returns the sidecar's path.

    `mode` is meant to be the file's own: whoever may read the file may read its sidecar.
    """
    target = sidecar_path(path)
    folder = target.parent
    fd, temp = tempfile.mkstemp(prefix=".", suffix=".syncd.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode & 0o666)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target
