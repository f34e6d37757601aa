"""`NAME.syncd.toml` beside each uploaded file, written so that it is whole or absent.

The content is written and fsync'd in an unnamed file in the folder (O_TMPFILE) and linked
under its name only then, or, where a sidecar is there already or the file system has no
O_TMPFILE, in a named temp file renamed over; then the folder is fsync'd. A crash at any
moment leaves either no sidecar or a complete one, never half of one. The unnamed file also
spares the watcher three of the four inotify events a temp file and its rename cost. `put`
leaves the folder's fsync to `sync_folder`, so that one fsync covers a folder's batch.
Every step goes through the descriptor of the file's folder (files.Place), never through a
path, so a folder swapped for a symlink cannot send the sidecar anywhere else.

A sidecar that cannot be written is either *permanent* (its name is too long, a folder
stands in its place, the folder refuses us: a person must act) or *transient* (the disk is
full, an I/O error: it will pass by itself); `SidecarError.permanent` tells which.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.files import SCARCE, Place

SUFFIX = ".syncd.toml"
TEMP_PREFIX, TEMP_SUFFIX, TEMP_HEX_BYTES = ".syncd-", ".tmp", 8
"""The named temp file a sidecar is written in where O_TMPFILE cannot serve."""
TEMP_NAME = re.compile(
    re.escape(TEMP_PREFIX.encode())
    + rb"[0-9a-f]{%d}" % (2 * TEMP_HEX_BYTES)
    + re.escape(TEMP_SUFFIX.encode())
)
"""Such a file's name, as a scan meets it."""
LEFT_AFTER = 60.0
"""Seconds a temp file is left alone before a scan may take it for one a write that was cut
short (kill -9, power loss) left behind: a write holds its temp for milliseconds."""
MAX_MODE = 0o644
"""Never more than this, whatever the file's own mode: a sidecar nobody else may change."""
TRANSIENT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EAGAIN}) | SCARCE
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
    """Atomically put `text` at the sidecar of `place`'s file, durable; returns its path.

    `mode` is meant to be the file's own: whoever may read the file may read its sidecar,
    but nobody else may write it (at most 0644).
    """
    target = put(place, text, mode)
    sync_folder(place.folder, place.path)
    return target


def put(place: Place, text: str, mode: int = MAX_MODE) -> Path:
    """`write` but for the folder's fsync: the sidecar is whole, its content durable, its
    name durable only once `sync_folder` has run on its folder."""
    name = place.name + SUFFIX
    data = text.encode("utf-8")
    try:
        if not _link_unnamed(place.folder, name, data, mode & MAX_MODE):
            _rename_temp(place.folder, name, data, mode & MAX_MODE)
    except OSError as exc:
        raise failure(place.path, exc) from None
    return sidecar_path(place.path)


def sync_folder(folder: int, path: Path) -> None:
    """Makes the sidecars put in `folder` (the folder of `path`) so far durable."""
    try:
        os.fsync(folder)
    except OSError as exc:
        raise failure(path, exc) from None


def _link_unnamed(folder: int, name: str, data: bytes, mode: int) -> bool:
    """False, having left nothing behind, where the name exists or O_TMPFILE is missing."""
    try:
        fd = os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o600, dir_fd=folder)
    except OSError:
        return False
    try:
        _write_all(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
        try:
            # link() does not follow the /proc symlink, linkat(AT_SYMLINK_FOLLOW) does: a
            # dst_dir_fd makes os.link use linkat. Refused (the name exists, no /proc):
            # the temp file's way; a real error (a full disk) shows there again.
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=folder, follow_symlinks=True)
        except OSError:
            return False
    finally:
        os.close(fd)
    return True


def _rename_temp(folder: int, name: str, data: bytes, mode: int) -> None:
    temp, fd = _create_temp(folder)
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        os.unlink(temp, dir_fd=folder)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _create_temp(folder: int) -> tuple[str, int]:
    """A fresh hidden name in `folder` (ignored by intake as a dot-file), created exclusively.

    Short whatever the file's name: the file's own name may leave no room for a suffix.
    """
    while True:
        name = f"{TEMP_PREFIX}{os.urandom(TEMP_HEX_BYTES).hex()}{TEMP_SUFFIX}"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return name, os.open(name, flags, 0o600, dir_fd=folder)
        except FileExistsError:
            continue


def remove_left_temp(folder: int, name: bytes) -> bool:
    """Removes `name` from `folder` when it is a sidecar's temp file that a cut-short write
    left: ours by its name and owner, a regular file, untouched for `LEFT_AFTER`. Otherwise
    it stays, whatever it is (the scans ignore it as a dot-file). True when removed."""
    if not TEMP_NAME.fullmatch(name):
        return False
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid != os.geteuid()
            or time.time() - st.st_mtime < LEFT_AFTER
        ):
            return False
        os.unlink(name, dir_fd=folder)
    except OSError:
        return False
    return True


def failure(path: Path, exc: OSError) -> SidecarError:
    """What stopped the sidecar of `path` from being written, for status, and whether it
    passes by itself."""
    target = sidecar_path(path)
    if exc.errno == errno.ENAMETOOLONG:
        why = "its name is too long for the file system (rename the file)"
    elif exc.errno in (errno.EISDIR, errno.ENOTEMPTY):
        why = "a folder stands in its place"
    else:
        why = exc.strerror or str(exc)
    return SidecarError(f"cannot write the sidecar {target}: {why}", exc.errno not in TRANSIENT)
