"""A throwaway PostgreSQL cluster for fleet tests and benchmarks: initdb, pg_ctl, a database
per test, everything removed at the end.

It runs Debian's `postgresql` binaries (/usr/lib/postgresql/N/bin, or whatever `initdb` is on
PATH, or $SYNCD_PG_BIN). PostgreSQL refuses to run as root, so as root the cluster belongs
to the `postgres` user (or `nobody`) in a temporary folder it owns. It listens on a free
loopback port, with password (SCRAM) authentication over TCP, as a fleet's database would.
Durability is switched off: a test cluster never outlives a crash of its own.

Imports nothing of pytest, so a benchmark can use it too.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "postgres"


def find_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: $SYNCD_PG_BIN, Debian's newest, else PATH."""
    given = os.environ.get("SYNCD_PG_BIN")
    candidates = [given] if given else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]), reverse=True
    )
    which = shutil.which("initdb")
    if which:
        candidates.append(str(Path(which).resolve().parent))
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _owner() -> pwd.struct_passwd | None:
    """Who runs the cluster: ourselves, unless we are root (which PostgreSQL refuses)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


class Cluster:
    """One PostgreSQL server for the session; `database()` gives each test its own."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.owner = _owner()
        self.folder = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
        self.password = secrets.token_urlsafe(16)
        self.password_file = self.folder / "password"
        self.port = 0
        self._databases = 0

    def _run(self, *argv: str) -> None:
        kwargs = {}
        if self.owner is not None:
            kwargs = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.folder,
            **kwargs,  # type: ignore[call-overload]
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> Cluster:
        data, sockets = self.folder / "data", self.folder / "sockets"
        sockets.mkdir()
        secret = self.folder / "initdb-password"
        secret.write_text(self.password + "\n")
        if self.owner is not None:
            for path in (self.folder, sockets, secret):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        self._run(
            str(self.binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={secret}",
            "-E",
            "UTF8",
            "--locale=C",
        )
        secret.unlink()
        # The daemons under test run as this process's user: the password file is theirs.
        self.password_file.write_text(self.password + "\n")
        os.chmod(self.password_file, 0o600)
        settings = (
            "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
            " -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB"
            f" -k {sockets}"
        )
        for _attempt in range(5):
            self.port = _free_port()
            try:
                self._run(
                    str(self.binaries / "pg_ctl"),
                    "start",
                    "-D",
                    str(data),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self.folder / "server.log"),
                    "-o",
                    f"{settings} -p {self.port}",
                )
                return self
            except RuntimeError:
                time.sleep(0.2)  # the port was taken between the probe and the start
        raise RuntimeError(f"PostgreSQL did not start:\n{self.log()}")

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database: str = "postgres") -> str:
        """Without the password, as a config's [journal] url is written."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"{self.url(database)}?password={self.password}"

    def database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"syncd_{self._databases}"
        with psycopg.connect(self.dsn(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(
                str(self.binaries / "pg_ctl"), "stop", "-D", str(self.folder / "data"), "-m", "fast"
            )
        shutil.rmtree(self.folder, ignore_errors=True)
