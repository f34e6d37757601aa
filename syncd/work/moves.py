"""Moving a file without ever overwriting anything or leaving it in two places for long.

On one file system a move is one `renameat2(RENAME_NOREPLACE)`: atomic, and it refuses a
taken name instead of replacing it (where the file system lacks it: link, then unlink).
Across file systems the bytes are copied to a hidden partial name beside the target,
fsynced, read back and hashed, and only then renamed into place and the source removed:
a crash leaves the source whole, and a copy at the target only once it is verified.

`carry` is the move as an idempotent step, the same whether it runs the first time or
after a crash at any point of an earlier run: it looks at both ends and finishes the job.
Both ends are `files.Place`s, folders opened from their root one component at a time
without following symlinks, and every name is used relative to them: a folder swapped for
a symlink never makes a move read or write outside the watch, the archive or the trash.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from pathlib import Path

from syncd.files import FOLDER_FLAGS, OPEN_FLAGS, Place, sha256_of
from syncd.outputs.sidecar import SUFFIX, sidecar_path

RENAME_NOREPLACE = 1
PARTIAL_SUFFIX = ".syncd-partial"
COPY_PIECE = 1024 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


class Taken(Exception):
    """The target name holds a file that is not ours: the caller picks another name."""


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folders(folder: Path, root: Path) -> None:
    """`folder` and its parents from `root` on (`root`'s own parent must exist), each new one
    made durable in its parent. They are walked one at a time from `root`'s parent, each
    opened below the one before without following a symlink (as `files.locate` does): a
    folder swapped for a symlink on the way is refused rather than followed."""
    if folder != root and root not in folder.parents:
        raise OSError(errno.EXDEV, "not below its root", str(folder))
    parts = (root.name, *folder.relative_to(root).parts)
    current = os.open(root.parent, FOLDER_FLAGS)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=current)
            except FileExistsError:
                made = False
            else:
                made = True
            try:
                below = os.open(part, FOLDER_FLAGS, dir_fd=current)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    symlink = OSError(errno.ELOOP, "a folder on the way is a symlink", str(folder))
                    raise symlink from None
                raise
            if made:
                os.fsync(current)
            os.close(current)
            current = below
    finally:
        os.close(current)


def beside(place: Place, name: str) -> Place:
    """Another name in `place`'s folder, sharing its descriptor (closed with `place` only)."""
    return Place(place.path.with_name(name), place.folder, name)


def sidecar_of(place: Place) -> Place:
    return beside(place, place.name + SUFFIX)


def rename_noreplace(source: Place, target: Place) -> None:
    """Atomic rename that raises FileExistsError rather than replace `target`."""
    if _renameat2 is not None:
        done = _renameat2(
            source.folder,
            os.fsencode(source.name),
            target.folder,
            os.fsencode(target.name),
            RENAME_NOREPLACE,
        )
        if done == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(code, os.strerror(code), str(source.path), None, str(target.path))
    os.link(
        source.name,
        target.name,
        src_dir_fd=source.folder,
        dst_dir_fd=target.folder,
        follow_symlinks=False,
    )
    os.unlink(source.name, dir_fd=source.folder)


def free_name(folder: Path, name: str, taken: set[str] | None = None) -> Path:
    """`name` in `folder`, or `stem (1).suffix`, `stem (2).suffix`, ... : the first whose
    own name and sidecar's name are both free."""
    stem, dot, suffix = name.rpartition(".")
    if not stem:
        stem, dot, suffix = name, "", ""
    number = 0
    while True:
        candidate = name if number == 0 else f"{stem} ({number}){dot}{suffix}"
        path = folder / candidate
        busy = taken is not None and candidate in taken
        if not busy and not os.path.lexists(path) and not os.path.lexists(sidecar_path(path)):
            return path
        number += 1


def _digest(place: Place) -> str:
    with os.fdopen(os.open(place.name, OPEN_FLAGS, dir_fd=place.folder), "rb") as file:
        os.set_blocking(file.fileno(), True)
        return sha256_of(file)


def _unlink(place: Place) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(place.name, dir_fd=place.folder)


def _copy_verified(source: Place, target: Place, sha256: str) -> None:
    """Copy, fsync, read back and compare, then rename into place (never over a file)."""
    import hashlib  # OpenSSL takes a while to load, and most starts move nothing

    partial = beside(target, f".{target.name}{PARTIAL_SUFFIX}")
    with os.fdopen(os.open(source.name, OPEN_FLAGS, dir_fd=source.folder), "rb") as src:
        os.set_blocking(src.fileno(), True)
        st = os.fstat(src.fileno())
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(partial.name, flags, stat.S_IMODE(st.st_mode), dir_fd=partial.folder)
        with os.fdopen(fd, "wb") as out:
            digest = hashlib.sha256()
            while piece := src.read(COPY_PIECE):
                digest.update(piece)
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
            os.utime(out.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
            # Read back what the disk holds, not what the page cache remembers writing.
            os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if digest.hexdigest() != sha256 or _digest(partial) != sha256:
        _unlink(partial)
        raise OSError(errno.EIO, "the copy does not read back as the original", str(target.path))
    try:
        rename_noreplace(partial, target)
    except FileExistsError:
        _unlink(partial)
        raise Taken(target.path) from None
    os.fsync(target.folder)


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _lstat(place: Place) -> os.stat_result | None:
    try:
        return os.stat(place.name, dir_fd=place.folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def carry(source: Place, target: Place, sha256: str | None = None) -> bool:
    """Bring the file at `source` to `target`; False when it is at neither (someone
    removed it). `sha256` is the content it must have (None: whatever `source` holds).

    Safe to run again after a crash anywhere inside it. Raises Taken when `target` holds
    something else, so that nothing is ever overwritten.
    """
    _unlink(beside(target, f".{target.name}{PARTIAL_SUFFIX}"))
    at_source, at_target = _lstat(source), _lstat(target)
    if at_source is None:
        return at_target is not None
    if at_target is not None:
        if _same_inode(at_source, at_target):
            os.unlink(source.name, dir_fd=source.folder)  # a link-then-unlink move cut short
        elif at_target.st_size == at_source.st_size and _digest(target) == (
            sha256 or _digest(source)
        ):
            # a verified copy renamed into place, the source not yet removed
            os.unlink(source.name, dir_fd=source.folder)
        else:
            raise Taken(target.path)
        os.fsync(source.folder)
        return True
    try:
        rename_noreplace(source, target)
    except FileExistsError:
        raise Taken(target.path) from None
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_verified(source, target, sha256 or _digest(source))
        os.unlink(source.name, dir_fd=source.folder)
    os.fsync(target.folder)
    os.fsync(source.folder)
    return True
