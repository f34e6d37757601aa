"""A file as syncd sees it: its identity, opening it safely, its media type and caption, its hash.

Nothing here knows the journal or a service: intake compares identities, the pipeline
opens and hashes, services read the media type and caption, all through these functions.
"""

from __future__ import annotations

import errno
import fcntl
import mimetypes
import os
import signal
import stat
from collections.abc import Callable, Sequence
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


LEASE_BREAK_SIGNAL = signal.SIGURG
"""Sent to us if a writer opens the file in the instant we hold its lease; ignored by
default, where the default signal, SIGIO, would end the process."""
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""A folder on the way down from a watch root: a symlink in its place fails with ELOOP."""
GONE = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)
"""What opening a name fails with when it is missing, a symlink, or not what it should be."""
SCARCE = frozenset({errno.EMFILE, errno.ENFILE})
"""No descriptor to spare, in the process (EMFILE: LimitNOFILE=, ulimit -n) or the system
(ENFILE): passes once others are closed, so a file that meets it waits, never fails."""


def scarce_import(exc: ImportError) -> OSError | None:
    """The shortage an extension module loaded at first use met (OpenSSL's _hashlib, _csv
    under requests): dlopen says so only in words, as an ImportError. None for any other."""
    message = str(exc)
    return next((OSError(c, os.strerror(c)) for c in SCARCE if os.strerror(c) in message), None)


class Place:
    """A file's folder, opened from its watch root one component at a time, and its name.

    Nothing is ever opened by a path that the kernel resolves: every folder on the way is
    opened relative to the one above it with O_NOFOLLOW, so a folder swapped for a symlink
    at any moment (before, during or after the walk) leads nowhere. The file, its caption
    and its sidecar are all reached through `folder`, the descriptor the walk ended on.
    """

    def __init__(self, path: Path, folder: int, name: str) -> None:
        self.path = path
        """For messages only: never opened."""
        self.folder = folder
        self.name = name

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.folder >= 0:
            os.close(self.folder)
            self.folder = -1

    def open_regular(self) -> BufferedReader:
        """The file opened for reading, blocking reads restored once it is known to be a file.

        Vanished when it is gone, a symlink, or not a regular file; PermanentError when it
        exists but cannot be read (permissions, I/O); OSError when SCARCE.
        """
        try:
            fd = os.open(self.name, OPEN_FLAGS, dir_fd=self.folder)
        except OSError as exc:
            if exc.errno in GONE:
                raise Vanished(self.path) from None
            if exc.errno in SCARCE:
                raise
            raise PermanentError(f"{self.path}: cannot read: {exc.strerror}") from None
        file = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            file.close()
            raise Vanished(self.path)
        os.set_blocking(fd, True)
        return file

    def read_caption(self) -> str | None:
        """NAME.caption beside the file: a regular file, read as UTF-8, never a symlink."""
        try:
            fd = os.open(self.name + CAPTION_SUFFIX, OPEN_FLAGS, dir_fd=self.folder)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                return None
            return file.read(CAPTION_MAX).decode("utf-8", "replace").strip()

    def being_written(self) -> bool:
        """Whether some process holds the file open for writing, as the kernel's leases
        tell: a read lease is refused exactly then. False when leases cannot tell (a file
        neither ours nor root's to lease, a network file system): stability decides alone.

        A writer that pauses for longer than `settle_seconds` leaves a file that stands
        still but is not complete; this keeps it from being uploaded half-written.
        """
        try:
            fd = os.open(self.name, OPEN_FLAGS, dir_fd=self.folder)
        except OSError:
            return False  # gone or unreadable: the worker will say which
        try:
            fcntl.fcntl(fd, fcntl.F_SETSIG, LEASE_BREAK_SIGNAL)
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError as exc:
            return exc.errno == errno.EAGAIN
        finally:
            os.close(fd)  # releases the lease at once
        return False

    def mode_if_unchanged(self, identity: Identity) -> int | None:
        """The file's permission bits while it is still the version `identity` names."""
        try:
            st = os.stat(self.name, dir_fd=self.folder, follow_symlinks=False)
        except OSError:
            return None
        return st.st_mode if Identity.of(st).same_version(identity) else None


PROC_FD = b"/proc/self/fd/"
"""The kernel's own name of an open descriptor: what a folder opened by path really is."""


def open_folder(path: bytes) -> int:
    """A folder a scan or a poll is about to list, opened so that no symlink leads it out.

    `path` is canonical (a watch root has its symlinks resolved at load, the rest is names
    listed below it), so the kernel's name of what was opened is `path` itself unless a
    folder on the way was swapped for a symlink: then this raises ELOOP, and nothing is
    listed. Without /proc, the folders on the way are opened one at a time from `/`, as
    `locate` does. OSError when it cannot be opened.
    """
    folder = os.open(path, FOLDER_FLAGS)
    try:
        real = os.readlink(PROC_FD + b"%d" % folder)
    except FileNotFoundError:  # no /proc mounted
        os.close(folder)
        return _descend(os.open(b"/", FOLDER_FLAGS), path.split(b"/"))
    if real != path:
        os.close(folder)
        if real.endswith(b" (deleted)"):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), os.fsdecode(path))
        raise OSError(errno.ELOOP, "a folder on its path is a symlink", os.fsdecode(path))
    return folder


def _descend(folder: int, parts: Sequence[str | bytes]) -> int:
    """Open `parts` below the open `folder` one at a time, never through a symlink;
    `folder` is consumed, the last one opened returned."""
    try:
        for part in parts:
            if part:
                below = os.open(part, FOLDER_FLAGS, dir_fd=folder)
                os.close(folder)
                folder = below
    except OSError:
        os.close(folder)
        raise
    return folder


def locate(root: Path, path: Path) -> Place:
    """`path`'s folder opened from `root` down, never through a symlink (see Place).

    Vanished when `path` does not lie below `root` or a folder on the way is missing, a
    symlink or not a folder; PermanentError when one exists but cannot be opened; OSError
    when SCARCE.
    """
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise Vanished(path) from None
    if not parts or any(part in ("..", ".") for part in parts):
        raise Vanished(path)
    try:
        folder = _descend(os.open(root, FOLDER_FLAGS), parts[:-1])
    except OSError as exc:
        raise _refusal(path, exc) from None
    return Place(path, folder, parts[-1])


def _refusal(path: Path, exc: OSError) -> Exception:
    if exc.errno in GONE:
        return Vanished(path)
    if exc.errno in SCARCE:
        return exc
    return PermanentError(f"{path}: cannot open its folder: {exc.strerror}")


def identity_of(file: BufferedReader) -> Identity:
    return Identity.of(os.fstat(file.fileno()))


def media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name, strict=False)[0] or "application/octet-stream"


def sha256_of(file: BufferedReader, progress: Callable[[int], None] | None = None) -> str:
    """Streamed in 1 MiB pieces (hashlib runs on OpenSSL's SHA instructions), reporting
    how far it got: hashing a 4 GiB file takes seconds, and status should say so."""
    import hashlib  # OpenSSL takes a while to load, and a restart may hash nothing

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
