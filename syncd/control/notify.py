"""Telling systemd how the daemon is doing: readiness, status, reload, stop, watchdog.

With systemd-python (the `systemd` extra) the messages go through `systemd.daemon.notify`;
without it syncd speaks the protocol itself, which is one datagram of `KEY=value` lines to
the AF_UNIX socket named by `$NOTIFY_SOCKET` (sd_notify(3)). Outside systemd there is no
socket and every call is a cheap no-op, so the daemon calls them unconditionally.

`listen_fds()` takes over a socket that systemd (or `systemd-socket-activate`) passed in.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
from types import ModuleType

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
"""The first descriptor systemd passes to a socket-activated service (sd_listen_fds(3))."""

SEND_TIMEOUT = 1.0
"""Seconds a fallback send may block: a stalled receiver must not stall the main loop."""
EXTEND_MARGIN = 60.0
"""Seconds a start that waits is given beyond its next try (which may itself take a while:
a database connection times out after 10 s, the pool after 30)."""


def _systemd_daemon() -> ModuleType | None:
    """systemd-python's `systemd.daemon`, or None when the extra is not installed."""
    try:
        return importlib.import_module("systemd.daemon")
    except ImportError:
        return None


class Notifier:
    """Sends sd_notify messages; never raises: a lost message must not stop an upload.

    Safe to call from any thread: each message is one datagram, and the status
    de-duplication is guarded by a lock.
    """

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        *,
        use_systemd_python: bool | None = None,
    ) -> None:
        """`address` is `$NOTIFY_SOCKET` as systemd spells it; None disables notification.

        `use_systemd_python`: None picks systemd-python when it imports, True insists on it
        (ImportError without it), False forces the built-in protocol, so tests exercise both
        paths on one machine. systemd-python reads `$NOTIFY_SOCKET` itself: `from_env()` is
        the way to build a notifier that uses it.
        """
        self._address = address or None
        self._watchdog_usec = watchdog_usec
        # Nobody to notify: systemd-python is not loaded (a few ms of every start elsewhere).
        wanted = use_systemd_python or (use_systemd_python is None and self._address is not None)
        daemon = _systemd_daemon() if wanted else None
        if use_systemd_python and daemon is None:
            raise ImportError("systemd-python is not installed")
        self._daemon = daemon
        self._last_status: str | None = None
        self._status_lock = threading.Lock()

    @classmethod
    def from_env(cls, *, use_systemd_python: bool | None = None) -> Notifier:
        """A notifier for the environment we were started in; outside systemd, a no-op one."""
        return cls(
            os.environ.get("NOTIFY_SOCKET"),
            _watchdog_usec(),
            use_systemd_python=use_systemd_python,
        )

    @property
    def enabled(self) -> bool:
        """Whether anyone listens: False outside a Type=notify unit."""
        return self._address is not None

    @property
    def uses_systemd_python(self) -> bool:
        """Which transport is in use, for the start-up log line and tests."""
        return self._daemon is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings, or None when no watchdog is armed for us.

        Half of `WatchdogSec=`, as sd_watchdog_enabled(3) recommends, so one slow turn of
        the main loop is not fatal. None without a notify socket: nobody would hear a ping.
        """
        if self._watchdog_usec is None or self._address is None:
            return None
        return self._watchdog_usec / 2_000_000

    def ready(self) -> None:
        """Start-up (or a reload) is complete: `systemctl start` / `reload` return now."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """One line for `systemctl status`; an unchanged line is not sent again."""
        if self._address is None:
            return
        # A newline would start a new assignment: a file name must not be able to inject one.
        line = " ".join(text.splitlines())
        with self._status_lock:
            if line != self._last_status and self._send(f"STATUS={line}"):
                self._last_status = line

    def waiting(self, text: str, seconds: float) -> None:
        """Start-up waits `seconds` for what `text` says: STATUS= tells why, and systemd's
        start timeout is pushed past the next try (EXTEND_TIMEOUT_USEC, systemd 236+)."""
        self.status(f"waiting: {text}")
        self._send(f"EXTEND_TIMEOUT_USEC={int((seconds + EXTEND_MARGIN) * 1_000_000)}")

    def reloading(self) -> None:
        """A reload has begun; systemd waits for the next READY=1.

        MONOTONIC_USEC must travel in the same datagram: systemd uses it to tell this reload
        from an earlier one.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """Shutdown has begun: systemd shows "deactivating" rather than a hung service."""
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """Proof of life; call it from the main loop, and only while the daemon is healthy."""
        self._send("WATCHDOG=1")

    def _send(self, message: str) -> bool:
        """Deliver one datagram; False (logged at debug) when nobody got it."""
        if self._address is None:
            return False
        try:
            if self._daemon is not None:
                return bool(self._daemon.notify(message))
            # A socket per message, as sd_notify does: messages are rare, and nothing to close.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(message.encode(), _sockaddr(self._address))
        except (OSError, ValueError) as exc:
            log.debug("sd_notify %r to %s failed: %s", message, self._address, exc)
            return False
        return True


def _sockaddr(address: str) -> str:
    """`$NOTIFY_SOCKET` as a socket address: a leading `@` names the abstract namespace."""
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    # systemd 254+ may also name an AF_VSOCK address; only a service manager in a VM does.
    raise ValueError(f"unsupported NOTIFY_SOCKET address {address!r}")


def _watchdog_usec() -> int | None:
    """`$WATCHDOG_USEC` when it is meant for this process (sd_watchdog_enabled(3))."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def listen_fds(name: str) -> socket.socket | None:
    """The socket systemd passed under `name` (`FileDescriptorName=`), or None.

    Without names, a single passed descriptor is taken as the one wanted (what
    `systemd-socket-activate -l PATH` without `--fdname` does). Like
    `sd_listen_fds(unset_environment=1)` it removes LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES,
    so child processes do not take the sockets for theirs; call it once, at start.
    """
    pid = os.environ.pop("LISTEN_PID", "")
    count_text = os.environ.pop("LISTEN_FDS", "")
    names_text = os.environ.pop("LISTEN_FDNAMES", "")
    if pid != str(os.getpid()):
        return None
    try:
        count = int(count_text)
    except ValueError:
        return None
    if count < 1:
        return None
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
    # sd_listen_fds sets FD_CLOEXEC on every passed descriptor, wanted or not.
    for fd in fds:
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            log.warning("passed descriptor %d is not usable: %s", fd, exc)
            return None
    names = names_text.split(":") if names_text else []
    if names:
        if name not in names[:count]:
            return None
        fd = fds[names.index(name)]
    elif count == 1:
        fd = fds[0]
    else:
        return None
    try:
        return socket.socket(fileno=fd)
    except OSError as exc:
        log.warning("passed descriptor %d (%s) is not a socket: %s", fd, name, exc)
        return None
