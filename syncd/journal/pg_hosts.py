"""One live daemon per host_id: this process's seat in the fleet's `hosts` table.

`host_id` must differ between hosts, but VMs cloned from one image keep one host name, and
a second daemon can be started by mistake with the same configuration. Claims are therefore
owned by the process, not the name: `claim_owner` is `HOST_ID#TOKEN`, the token random per
process, so two processes never hold the same claim nor pass each other's fence.

At start a daemon takes its host_id's row (`join`): free when there is none, when its last
holder stopped cleanly (`instance` NULL), when that holder's heartbeat is older than the
lease (a crash, or a host frozen past its lease, taken over as its claims are), or when the
holder ran on this machine and its process is gone (a crash restarted at once). A holder on
another machine whose heartbeat is fresh is watched until it beats again (alive: refused,
`HostIdTaken`) or goes stale (taken over). Two starts at once are serialised by the row lock.

While it runs, each heartbeat is written only under its own token: a daemon whose row was
taken over (it was frozen past the lease) is displaced. It claims no new work, says so to
its listener (status: degraded), and takes its seat back only once the row is free again.
A clean stop leaves the seat (`instance` NULL), so a restart never waits.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd import __version__
from syncd.errors import SyncdError
from syncd.journal.pg_base import Connected

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.5
"""How often a fresh heartbeat of another machine's holder is read again at start."""
OTHER_INSTANCES = (
    "(claim_owner=%(host)s OR starts_with(claim_owner, %(prefix)s)) AND claim_owner<>%(owner)s"
)
"""A claim of this host_id's other processes (a bare host_id: one from before tokens). A
host_id holds no `#` (config/values.py), so no other host_id's claims match."""
SEATED = (
    "NOT EXISTS (SELECT 1 FROM hosts WHERE host_id=%(host)s"
    " AND instance IS DISTINCT FROM %(instance)s)"
)
"""No other process holds this host_id: the condition of every claim, so a process whose
host_id was taken over claims nothing from the moment it was, before its heartbeat finds out."""


class HostIdTaken(SyncdError):
    """Another live process holds this host_id: a configuration error (exit 2)."""

    exit_code = 2

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder
        """Who holds it: pid, machine, heartbeat age."""


@dataclass(frozen=True, slots=True)
class Process:
    """What identifies a daemon process: a random token, and where its pid means it."""

    token: str
    pid: int
    machine: str
    pid_space: str | None
    """Boot id and pid namespace: two processes with the same can see each other's pids."""
    pid_started: int | None
    """The process's start in clock ticks since boot: a reused pid is another process."""


def this_process() -> Process:
    return Process(
        secrets.token_hex(8), os.getpid(), socket.gethostname(), _pid_space(), _started("self")
    )


def _pid_space() -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _stat(pid: str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold anything), from
    the state (0) to the start time (19) at least."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > 19 else None


def _started(pid: str) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def running(pid: int, started: int | None) -> bool:
    """Whether the process `pid` that started at `started` still runs (a zombie does not)."""
    fields = _stat(str(pid))
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a host_id, as its row says."""

    instance: str | None
    pid: int
    machine: str | None
    pid_space: str | None
    pid_started: int | None
    heartbeat_at: float

    def describe(self, now: float) -> str:
        where = f" on {self.machine}" if self.machine else ""
        age = max(0.0, now - self.heartbeat_at)
        return f"pid {self.pid}{where} (its heartbeat {age:.0f} s ago)"


_HOLDER = "SELECT instance, pid, machine, pid_space, pid_started, heartbeat_at FROM hosts"


class Seat:
    """This process's hold on its host_id; `owner` names its claims."""

    def __init__(self, store: Connected, host_id: str, stale_after: float) -> None:
        self._store = store
        self.host_id = host_id
        self.me = this_process()
        self.owner = f"{host_id}#{self.me.token}"
        self.stale_after = stale_after
        self.joined = False
        self.displaced: str | None = None
        """Why this process lost its host_id to another, while it has."""
        self._listeners: list[Callable[[str | None], None]] = []

    def values(self, **more: Any) -> dict[str, Any]:
        """The parameters of OTHER_INSTANCES and SEATED (and of this seat's row)."""
        return {
            "host": self.host_id,
            "prefix": f"{self.host_id}#",
            "owner": self.owner,
            "instance": self.me.token,
            **more,
        }

    def listen(self, changed: Callable[[str | None], None]) -> None:
        """`changed(reason)` when another process takes this host_id over, `changed(None)`
        when this one holds it again."""
        self._listeners.append(changed)
        if self.displaced is not None:
            changed(self.displaced)

    # -- taking the seat -----------------------------------------------------------------

    def join(self, wait: bool = True) -> Holder | None:
        """Take the host_id's row; the holder taken over, if any. HostIdTaken while another
        live process holds it (without `wait`, also while that is not known yet)."""
        watched: float | None = None
        while True:
            now = time.time()
            taken, holder = self._take(now)
            if taken:
                self.joined = True
                if holder is not None and holder.instance not in (None, self.me.token):
                    log.warning(
                        'took host_id "%s" over from %s', self.host_id, holder.describe(now)
                    )
                return holder
            assert holder is not None
            if not wait or self._visible(holder):
                raise self._refusal(holder, now)
            if watched is None:
                watched = holder.heartbeat_at
                log.warning(
                    'host_id "%s" is held by %s: waiting up to %.0f s for it to beat again'
                    " (alive) or go silent (taken over)",
                    self.host_id,
                    holder.describe(now),
                    self.stale_after,
                )
            elif holder.heartbeat_at != watched:
                raise self._refusal(holder, now)
            time.sleep(WATCH_INTERVAL)

    def _take(self, now: float) -> tuple[bool, Holder | None]:
        """In one transaction: the row inserted or taken over (True), or left to its live
        holder; the holder found."""
        values = self._row(now)
        with self._store._write() as db:
            if db.execute(
                "INSERT INTO hosts (host_id, pid, version, started_at, heartbeat_at, instance,"
                " machine, pid_space, pid_started) VALUES (%(host)s, %(pid)s, %(version)s,"
                " %(now)s, %(now)s, %(instance)s, %(machine)s, %(pid_space)s, %(pid_started)s)"
                " ON CONFLICT (host_id) DO NOTHING RETURNING host_id",
                values,
            ).fetchall():
                return True, None
            found = db.execute(f"{_HOLDER} WHERE host_id=%(host)s FOR UPDATE", values).fetchone()
            assert found is not None
            holder = Holder(**found)
            if not self._free(holder, now):
                return False, holder
            db.execute(
                "UPDATE hosts SET pid=%(pid)s, version=%(version)s, started_at=%(now)s,"
                " heartbeat_at=%(now)s, instance=%(instance)s, machine=%(machine)s,"
                " pid_space=%(pid_space)s, pid_started=%(pid_started)s WHERE host_id=%(host)s",
                values,
            )
            return True, holder

    def _row(self, now: float) -> dict[str, Any]:
        me = self.me
        return self.values(
            pid=me.pid,
            version=__version__,
            now=now,
            instance=me.token,
            machine=me.machine,
            pid_space=me.pid_space,
            pid_started=me.pid_started,
        )

    def _free(self, holder: Holder, now: float) -> bool:
        if holder.instance in (None, self.me.token) or now - holder.heartbeat_at > self.stale_after:
            return True
        if not self._visible(holder):
            return False
        # This very process (a store opened again in it) is no other daemon.
        return holder.pid == self.me.pid or not running(holder.pid, holder.pid_started)

    def _visible(self, holder: Holder) -> bool:
        """Whether the holder's pid can be looked up here (same machine, same namespace)."""
        return self.me.pid_space is not None and holder.pid_space == self.me.pid_space

    def _refusal(self, holder: Holder, now: float) -> HostIdTaken:
        who = holder.describe(now)
        return HostIdTaken(
            f'host_id "{self.host_id}" is in use by another running syncd: {who};'
            " each daemon of a fleet needs a host_id of its own",
            who,
        )

    # -- holding it --------------------------------------------------------------------

    def beat(self) -> bool:
        """The heartbeat, under this process's token. When the row is another's, it is taken
        back if free; else this process is displaced (told once) and False."""
        if self.displaced is None and self._store.execute(
            "UPDATE hosts SET heartbeat_at=%(now)s WHERE host_id=%(host)s"
            " AND instance=%(instance)s RETURNING host_id",
            self.values(now=time.time()),
        ):
            return True
        try:
            self.join(wait=False)
        except HostIdTaken as taken:
            if self.displaced is None:
                self._tell(
                    f'host_id "{self.host_id}" was taken over by {taken.holder}; taking no new work'
                )
            return False
        if self.displaced is not None:
            self._tell(None)
        return True

    def _tell(self, reason: str | None) -> None:
        self.displaced = reason
        for listener in self._listeners:
            listener(reason)

    def leave(self) -> None:
        """At a clean stop: the seat is free for the next start at once."""
        if self.joined and self.displaced is None:
            self._store.execute(
                "UPDATE hosts SET instance=NULL WHERE host_id=%(host)s AND instance=%(instance)s",
                {"host": self.host_id, "instance": self.me.token},
            )
