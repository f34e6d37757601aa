"""`NAME.syncd.toml` beside each uploaded file, written so that it is whole or absent.

The content is written and fsync'd in an unnamed file in the same folder (O_TMPFILE) and
linked under its name only then, or, where a sidecar is there already or the filesystem has
no O_TMPFILE, in a named temp file renamed over; then the folder is fsync'd. A crash at any
moment leaves either no sidecar or a complete one, never half of one. The unnamed file also
spares the watcher three of the four inotify events a temp file and its rename cost.
`place` leaves the folder's fsync to `sync_folder`, so that one fsync covers a folder's batch.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

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
    return tomli_w.dumps(document)


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    """Atomically put `text` at the sidecar of `path`, durable; returns the sidecar's path.

    `mode` is meant to be the file's own: whoever may read the file may read its sidecar.
    """
    target = place(path, text, mode)
    sync_folder(target.parent)
    return target


def place(path: Path, text: str, mode: int = 0o644) -> Path:
    """`write` but for the folder's fsync: the sidecar is whole, its content durable, its
    name durable only once `sync_folder` has run on its folder."""
    target = sidecar_path(path)
    data = text.encode("utf-8")
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not _link_unnamed(dir_fd, target.name, data, mode):
            _rename_temp(target, data, mode)
    finally:
        os.close(dir_fd)
    return target


def sync_folder(folder: Path) -> None:
    """Makes the names placed in `folder` so far durable."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _link_unnamed(dir_fd: int, name: str, data: bytes, mode: int) -> bool:
    """False, having left nothing behind, where the name exists or O_TMPFILE is missing."""
    try:
        fd = os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.fchmod(fd, mode & 0o666)
        try:
            # link() does not follow the /proc symlink, linkat(AT_SYMLINK_FOLLOW) does: a
            # dst_dir_fd makes os.link use linkat. Refused (the name exists, no /proc):
            # the temp file's way; a real error (a full disk) shows there again.
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
        except OSError:
            return False
    finally:
        os.close(fd)
    return True


def _rename_temp(target: Path, data: bytes, mode: int) -> None:
    fd, temp = tempfile.mkstemp(prefix=".", suffix=".syncd.tmp", dir=target.parent)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
            os.fchmod(fd, mode & 0o666)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
