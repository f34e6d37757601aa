"""Moving a file without ever overwriting anything or leaving it in two places for long.

On one file system a move is one `renameat2(RENAME_NOREPLACE)`: atomic, and it refuses a
taken name instead of replacing it (where the file system lacks it: link, then unlink).
Across file systems the bytes are copied to a hidden partial name beside the target,
fsynced, read back and hashed, and only then renamed into place and the source removed:
a crash leaves the source whole, and a copy at the target only once it is verified.

`carry` is the move as an idempotent step, the same whether it runs the first time or
after a crash at any point of an earlier run: it looks at both ends and finishes the job.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import stat
from pathlib import Path

from syncd.files import OPEN_FLAGS, sha256_of
from syncd.outputs.sidecar import sidecar_path

AT_FDCWD = -100
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
    """`folder` and its parents up to `root`, each new one made durable in its parent; a
    symlink on the way (someone swapped a folder) is refused rather than followed."""
    missing: list[Path] = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    if os.path.realpath(current) != str(current) or not (folder == root or root in folder.parents):
        raise OSError(errno.ELOOP, "a folder on the way is a symlink", str(folder))
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o755)
        fsync_folder(path.parent)
    if os.path.realpath(folder) != str(folder):
        raise OSError(errno.ELOOP, "a folder on the way is a symlink", str(folder))


def rename_noreplace(source: Path, target: Path) -> None:
    """Atomic rename that raises FileExistsError rather than replace `target`."""
    if _renameat2 is not None:
        done = _renameat2(
            AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE
        )
        if done == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(code, os.strerror(code), str(source), None, str(target))
    os.link(source, target)
    os.unlink(source)


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


def _digest(path: Path) -> str:
    with os.fdopen(os.open(path, OPEN_FLAGS), "rb") as file:
        os.set_blocking(file.fileno(), True)
        return sha256_of(file)


def _copy_verified(source: Path, target: Path, sha256: str) -> None:
    """Copy, fsync, read back and compare, then rename into place (never over a file)."""
    partial = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
    with os.fdopen(os.open(source, OPEN_FLAGS), "rb") as src:
        os.set_blocking(src.fileno(), True)
        st = os.fstat(src.fileno())
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(partial, flags, stat.S_IMODE(st.st_mode)), "wb") as out:
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
        partial.unlink(missing_ok=True)
        raise OSError(errno.EIO, "the copy does not read back as the original", str(target))
    try:
        rename_noreplace(partial, target)
    except FileExistsError:
        partial.unlink(missing_ok=True)
        raise Taken(target) from None
    fsync_folder(target.parent)


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def carry(source: Path, target: Path, sha256: str | None = None) -> bool:
    """Bring the file at `source` to `target`; False when it is at neither (someone
    removed it). `sha256` is the content it must have (None: whatever `source` holds).

    Safe to run again after a crash anywhere inside it. Raises Taken when `target` holds
    something else, so that nothing is ever overwritten.
    """
    partial = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
    partial.unlink(missing_ok=True)
    at_source, at_target = _lstat(source), _lstat(target)
    if at_source is None:
        return at_target is not None
    if at_target is not None:
        if _same_inode(at_source, at_target):
            os.unlink(source)  # a link-then-unlink move cut short
        elif at_target.st_size == at_source.st_size and _digest(target) == (
            sha256 or _digest(source)
        ):
            os.unlink(source)  # a verified copy renamed into place, the source not yet removed
        else:
            raise Taken(target)
        fsync_folder(source.parent)
        return True
    try:
        rename_noreplace(source, target)
    except FileExistsError:
        raise Taken(target) from None
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_verified(source, target, sha256 or _digest(source))
        os.unlink(source)
    fsync_folder(target.parent)
    fsync_folder(source.parent)
    return True
