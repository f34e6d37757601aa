"""One daemon (or journal command) per state folder: a second would reset the first one's
uploads as crashed. An flock on `state_dir/syncd.lock`, held for the process's life."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from syncd.errors import SyncdError


def lock_state_dir(state_dir: Path) -> int:
    """The locked descriptor; a clear error when another syncd holds it."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(state_dir / "syncd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SyncdError(f"{state_dir}: cannot use the state folder: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SyncdError(f"{state_dir}: another syncd is already running with it") from None
    return fd
