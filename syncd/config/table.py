"""One TOML table being read: typed values, paths, credentials and folders, each refusal
naming the file, the table and the key (`FILE: [table] key: problem`)."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from syncd.config.values import expanduser, string
from syncd.errors import ConfigError

T = TypeVar("T")

SECRETS = frozenset({"consumer_secret", "access_token_secret", "api_key", "private_key", "secret"})
SECRETS |= {"password"}
"""Refused inline in a config file that other users can read, as ssh refuses such keys."""
MAX_SECRET = 64 * 1024
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def untrusted(st: os.stat_result) -> str | None:
    """Why a file others could have written must not be believed (ssh's StrictModes)."""
    if st.st_uid not in (0, os.geteuid()):
        return f"it belongs to another user (uid {st.st_uid}); chown it"
    if st.st_mode & 0o022:
        return f"others can write it (mode {stat.S_IMODE(st.st_mode):04o}); chmod go-w it"
    return None


@dataclass(slots=True)
class Source:
    """What every table of one file is read against; `named` fills as the file is read."""

    file: str
    folder: Path
    mode: int
    named: dict[str, dict[str, Any]]
    """The [accounts.*] and [services.*] read so far, for keys that name one."""
    fleet: bool = False
    """A [journal] url is set: watches may poll as often as every second."""
    secret_files: dict[Path, str] = field(default_factory=dict)
    """Each KEY_file read, with where it was named (`[accounts.main] KEY_file`): no watch
    may take one."""


class Table:
    """One TOML table being read; every refusal names the file, the table and the key."""

    def __init__(self, src: Source, name: str, data: dict[str, Any], entry: str = "") -> None:
        self.src, self.name, self.data = src, name, data
        self.entry = entry
        """An array entry's position ("#2"), printed before the key: `[[watch]] #2 path`."""

    def error(self, key: str | None, problem: str) -> ConfigError:
        label = " ".join(part for part in (self.entry, key) if part)
        return ConfigError(self.src.file, self.name, label or None, problem)

    def check_keys(self, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        for key, value in self.data.items():
            if key not in allowed:
                raise self.error(key, "unknown table" if isinstance(value, dict) else "unknown key")

    def get(self, key: str, parse: Callable[[object], T]) -> T | None:
        """The parsed value, or None when the key is absent (TOML has no null)."""
        if key not in self.data:
            return None
        try:
            return parse(self.data[key])
        except ValueError as e:
            raise self.error(key, str(e)) from None

    def require(self, key: str, parse: Callable[[object], T]) -> T:
        value = self.get(key, parse)
        if value is None:
            raise self.error(key, "required key is missing")
        return value

    def path(self, key: str) -> Path | None:
        """A path with ${VAR} and ~ expanded, relative to the config file's folder."""
        raw = self.get(key, string)
        if raw is None:
            return None
        if not raw:
            raise self.error(key, "must not be empty")

        def lookup(match: re.Match[str]) -> str:
            if match[1] not in os.environ:
                raise self.error(key, f"${{{match[1]}}} is not set")
            return os.environ[match[1]]

        return self.src.folder / expanduser(_VAR.sub(lookup, raw))

    def credential(self, key: str) -> str | None:
        """KEY inline or the content of KEY_file; a secret's value never reaches a message."""
        inline, file_key = self.get(key, string), f"{key}_file"
        path = self.path(file_key)
        if inline is not None and path is not None:
            raise self.error(key, f"give {key} or {file_key}, not both")
        if path is not None:
            self.src.secret_files[path] = " ".join(f"[{self.name}] {self.entry} {file_key}".split())
            return self._printable(file_key, self._secret_file(file_key, path))
        if inline is not None:
            inline = inline.strip()
        if inline == "":
            raise self.error(key, "must not be empty")
        if inline is not None and key in SECRETS and self.src.mode & 0o044:
            mode = f"mode {stat.S_IMODE(self.src.mode):04o}"
            raise self.error(
                key,
                f"secret given inline in a file readable by other users ({mode}); "
                f"chmod 600 {self.src.file} or use {file_key}",
            )
        return None if inline is None else self._printable(key, inline)

    def _printable(self, key: str, value: str) -> str:
        """Credentials travel in headers, URLs and signatures: printable ASCII only. The
        refusal never shows the value (nor where in it the offending character is)."""
        if not all(" " <= c <= "~" for c in value):
            raise self.error(key, "holds control or non-ASCII characters (value not shown)")
        return value

    def _secret_file(self, key: str, path: Path) -> str:
        """A secret's file: never through a symlink, and refused when someone other than us
        (or root) could have written it, as ssh refuses such keys."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            why = "it is a symlink" if e.errno == errno.ELOOP else e.strerror
            raise self.error(key, f"cannot read {path}: {why}") from None
        with os.fdopen(fd, "rb") as file:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self.error(key, f"cannot read {path}: not a regular file")
            if (why := untrusted(st)) is not None:
                raise self.error(key, f"{path} refused: {why}")
            raw = file.read(MAX_SECRET + 1)
        if len(raw) > MAX_SECRET:
            raise self.error(key, f"{path} is larger than {MAX_SECRET} bytes")
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self.error(key, f"cannot read {path}: not UTF-8 text") from None
        if not value:
            raise self.error(key, f"{path} is empty")
        return value

    def directory(self, key: str) -> Path | None:
        """An existing folder, symlinks resolved: that is the path events arrive under."""
        path = self.path(key)
        if path is None:
            return None
        try:
            is_dir = stat.S_ISDIR(path.stat().st_mode)
        except FileNotFoundError:
            raise self.error(key, f"{path} does not exist") from None
        except OSError as e:
            raise self.error(key, f"cannot use {path}: {e.strerror}") from None
        if not is_dir:
            raise self.error(key, f"{path} is not a directory")
        return Path(os.path.realpath(path))
