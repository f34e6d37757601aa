"""One inotify(7) instance: its three system calls, and a thread reading its events.

watchdog's binding (`InotifyFD`) did this job, but importing it costs every start ~20 ms,
5 % of a restart over 20,000 done files: its module imports `ctypes.util` (and with it
subprocess, shutil, tempfile and random) to find a libc it then loads by `CDLL(None)`
anyway, and `watchdog.observers` imports the whole inotify observer first. The calls are
the C library's, through ctypes, which releases the GIL while they run.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import threading
from collections.abc import Callable
from typing import Protocol

IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_CLOSE_WRITE = 0x8
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
IN_ISDIR = 0x40000000

_HEADER = struct.Struct("iIII")
"""struct inotify_event without its name: wd, mask, cookie, len (the name's, padded)."""
READ_SIZE = 64 * 1024
"""Room for hundreds of events a read; the kernel needs one event's header and NAME_MAX+1."""

_libc = ctypes.CDLL(None, use_errno=True)
_init1 = _libc.inotify_init1
_init1.argtypes, _init1.restype = (ctypes.c_int,), ctypes.c_int
_add_watch = _libc.inotify_add_watch
_add_watch.argtypes, _add_watch.restype = (
    (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32),
    ctypes.c_int,
)
_rm_watch = _libc.inotify_rm_watch
_rm_watch.argtypes, _rm_watch.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int


class Listener(Protocol):
    """Called on the reader thread, in the order the kernel queued the events."""

    def on_event(self, wd: int, mask: int, name: bytes) -> None: ...

    def on_watch_deleted(self, wd: int) -> None:
        """The kernel dropped the watch `wd` (its folder deleted or unmounted, or removed)."""

    def on_queue_overflow(self) -> None:
        """Events were lost: more were queued than the kernel keeps."""


class InotifyFD(threading.Thread):
    """An inotify instance (close-on-exec) and the thread that reads it until `stop`."""

    def __init__(self, listener: Listener) -> None:
        super().__init__(name="inotify", daemon=True)
        self._listener = listener
        self._fd = _call(_init1, os.O_CLOEXEC)
        self._wake_read, self._wake_write = os.pipe2(os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._closed = False
        """Set (under the lock) before the descriptors close: their numbers are reused."""

    def add_watch(self, path: bytes, mask: int) -> int:
        """The watch of `path` (the one it has already, if watched): its descriptor."""
        with self._lock:
            if self._closed:
                raise _error(errno.EBADF, path)
            return _call(_add_watch, self._fd, path, mask, path=path)

    def rm_watch(self, wd: int) -> None:
        """Ends watch `wd`; one the kernel dropped already (or a closed instance's) is
        no error."""
        with self._lock:
            if self._closed or _rm_watch(self._fd, wd) != -1:
                return
            if ctypes.get_errno() != errno.EINVAL:
                raise _error(ctypes.get_errno())

    def stop(self) -> None:
        """The thread ends after the events it has read; closing the instance then drops
        its watches."""
        with self._lock:
            if not self._closed:
                os.write(self._wake_write, b"!")

    def run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        try:
            while all(fd != self._wake_read for fd, _ in poller.poll()):
                self._dispatch(os.read(self._fd, READ_SIZE))
        finally:
            with self._lock:
                self._closed = True
                for fd in (self._fd, self._wake_read, self._wake_write):
                    os.close(fd)

    def _dispatch(self, events: bytes) -> None:
        listener = self._listener
        offset = 0
        while offset < len(events):
            wd, mask, _cookie, length = _HEADER.unpack_from(events, offset)
            offset += _HEADER.size
            name = events[offset : offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                listener.on_queue_overflow()
            elif mask & IN_IGNORED:
                listener.on_watch_deleted(wd)
            else:
                listener.on_event(wd, mask, name)


def _call(function: Callable[..., int], *args: object, path: bytes | None = None) -> int:
    result = function(*args)
    if result == -1:
        raise _error(ctypes.get_errno(), path)
    return result


def _error(code: int, path: bytes | None = None) -> OSError:
    return OSError(code, os.strerror(code), path)
