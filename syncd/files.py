"""A file as syncd sees it: its identity, opening it safely, its media type and caption, its hash.

Nothing here knows the journal or a service: intake compares identities, the pipeline
opens and hashes, services read the media type and caption, all through these functions.
"""

from __future__ import annotations

import errno
import hashlib
import mimetypes
import os
import stat
from collections.abc import Callable
from io import BufferedReader
from pathlib import Path
from typing import NamedTuple

from syncd.errors import PermanentError

CAPTION_SUFFIX = ".caption"
CAPTION_MAX = 64 * 1024
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""Never through a symlink, and never blocking: a FIFO must not hang a worker."""
HASH_PIECE = 1024 * 1024


class Identity(NamedTuple):
    """What tells one version of a file from another without reading it.

    A tuple, not a dataclass: a rescan compares one per file, tens of thousands at a time.
    """

    dev: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def same_version(self, other: Identity) -> bool:
        """The same version of the file whichever host looks: st_dev is left out, as each
        host mounting one shared folder sees its own (inode, size and mtime are the file's)."""
        return self[1:] == other[1:]


class Vanished(Exception):
    """The path no longer names a regular file we may read: nothing to do for it."""


def open_regular(path: Path) -> BufferedReader:
    """`path` opened for reading, blocking reads restored once it is known to be a file.

    Vanished when it is gone, a symlink, or not a regular file; PermanentError when it
    exists but cannot be read (permissions, I/O).
    """
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            raise Vanished(path) from None
        raise PermanentError(f"{path}: cannot read: {exc.strerror}") from None
    file = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        file.close()
        raise Vanished(path)
    os.set_blocking(fd, True)
    return file


def identity_of(file: BufferedReader) -> Identity:
    return Identity.of(os.fstat(file.fileno()))


def media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name, strict=False)[0] or "application/octet-stream"


def read_caption(path: Path) -> str | None:
    """NAME.caption beside the file: a regular file, read as UTF-8, never a symlink."""
    caption = path.with_name(path.name + CAPTION_SUFFIX)
    try:
        fd = os.open(caption, OPEN_FLAGS)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        return file.read(CAPTION_MAX).decode("utf-8", "replace").strip()


def sha256_of(file: BufferedReader, progress: Callable[[int], None] | None = None) -> str:
    """Streamed in 1 MiB pieces (hashlib runs on OpenSSL's SHA instructions), reporting
    how far it got: hashing a 4 GiB file takes seconds, and status should say so."""
    file.seek(0)
    digest = hashlib.sha256()
    # No bigger than the file: a small file must not pay for a fresh 1 MiB of pages.
    view = memoryview(bytearray(max(1, min(HASH_PIECE, os.fstat(file.fileno()).st_size))))
    done = 0
    while count := file.readinto(view):
        digest.update(view[:count])
        done += count
        if progress is not None:
            progress(done)
    return digest.hexdigest()


def mode_if_unchanged(path: Path, identity: Identity) -> int | None:
    """The file's permission bits while it is still the version `identity` names."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_mode if Identity.of(st).same_version(identity) else None
