"""`NAME.syncd.toml` beside each uploaded file, written so that it is whole or absent.

Temp file in the same folder, fsync, rename over, fsync the folder: a crash at any moment
leaves either no sidecar or a complete one, never half of one. Every step goes through the
descriptor of the file's folder (files.Place), never through a path, so a folder swapped
for a symlink cannot send the sidecar anywhere else.

A sidecar that cannot be written is either *permanent* (its name is too long, a folder
stands in its place, the folder refuses us: a person must act) or *transient* (the disk is
full, an I/O error: it will pass by itself); `SidecarError.permanent` tells which.
"""

from __future__ import annotations

import errno
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.files import Place

SUFFIX = ".syncd.toml"
MAX_MODE = 0o644
"""Never more than this, whatever the file's own mode: a sidecar nobody else may change."""
TRANSIENT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EAGAIN})
"""Errors that pass by themselves (space freed, the device back); any other needs a person."""


class SidecarError(Exception):
    """The sidecar could not be written; the message says why, for `syncd status`."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


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


def write(place: Place, text: str, mode: int = MAX_MODE) -> Path:
    """Atomically put `text` at the sidecar of `place`'s file; returns the sidecar's path.

    `mode` is meant to be the file's own: whoever may read the file may read its sidecar,
    but nobody else may write it (at most 0644).
    """
    target = place.name + SUFFIX
    try:
        temp, fd = _create_temp(place.folder)
    except OSError as exc:
        raise _error(place, exc) from None
    try:
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fchmod(out.fileno(), mode & MAX_MODE)
                os.fsync(out.fileno())
            os.replace(temp, target, src_dir_fd=place.folder, dst_dir_fd=place.folder)
        except BaseException:
            os.unlink(temp, dir_fd=place.folder)
            raise
        os.fsync(place.folder)
    except OSError as exc:
        raise _error(place, exc) from None
    return sidecar_path(place.path)


def _create_temp(folder: int) -> tuple[str, int]:
    """A fresh hidden name in `folder` (ignored by intake as a dot-file), created exclusively.

    Short whatever the file's name: the file's own name may leave no room for a suffix.
    """
    while True:
        name = f".syncd-{secrets.token_hex(8)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return name, os.open(name, flags, 0o600, dir_fd=folder)
        except FileExistsError:
            continue


def _error(place: Place, exc: OSError) -> SidecarError:
    target = sidecar_path(place.path)
    if exc.errno == errno.ENAMETOOLONG:
        why = "its name is too long for the file system (rename the file)"
    elif exc.errno in (errno.EISDIR, errno.ENOTEMPTY):
        why = "a folder stands in its place"
    else:
        why = exc.strerror or str(exc)
    return SidecarError(f"cannot write the sidecar {target}: {why}", exc.errno not in TRANSIENT)
