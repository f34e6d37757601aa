"""What every emulator shares: the injectable clock, the settings registry, the data folder.

A service module is a class satisfying `Service`: built from a `Context`, it registers its
settings section, hands its routes (service and `/_sandbox/...` control routes alike) to the
route table, and forgets everything on `reset()`. `app.SERVICES` lists them.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from syncd.sandbox.background import Background
from syncd.sandbox.oauth_check import OAuthVerifier
from syncd.sandbox.web import Route


class Clock:
    """The sandbox's time, with two knobs the control API turns (protocols.md 8).

    `offset` is time passing on the server side: session and object expiry, the
    X-TON-Expires horizon, rate-limit windows and the Date header move with it, so expiry
    is tested without sleeping, even against a daemon in another process. It does not touch
    OAuth timestamp checks, since a client's clock moves on with the server's in real life.
    `skew` is a disagreement with the clients' clocks: only OAuth timestamp checks see it,
    to provoke 401 code 135.
    """

    def __init__(self) -> None:
        self.offset = 0.0
        self.skew = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def oauth_now(self) -> float:
        """What a client's oauth_timestamp is compared with."""
        return time.time() + self.skew

    def reset(self) -> None:
        self.offset = self.skew = 0.0


S = TypeVar("S")


class SettingsSection(Generic[S]):
    """One service's settings: a frozen dataclass replaced whole on every change, so a
    request reads one consistent snapshot through `current`."""

    def __init__(self, default: S) -> None:
        assert dataclasses.is_dataclass(default)
        self._default = default
        self.current = default

    def merged(self, patch: dict[str, Any]) -> S:
        """The settings with `patch` applied; ValueError names the first bad key."""
        default: Any = self._default
        names = {f.name for f in dataclasses.fields(default)}
        changes: dict[str, Any] = {}
        for key, value in patch.items():
            if key not in names:
                raise ValueError(f"unknown setting {key!r}")
            wanted = type(getattr(default, key))
            if wanted is float and type(value) is int:
                value = float(value)
            if type(value) is not wanted:
                raise ValueError(f"{key} must be of type {wanted.__name__}")
            changes[key] = value
        current: Any = self.current
        merged: S = dataclasses.replace(current, **changes)
        return merged

    def reset(self) -> None:
        self.current = self._default

    def as_dict(self) -> dict[str, Any]:
        current: Any = self.current
        return dataclasses.asdict(current)


class Settings:
    """All sections by name, as `GET /_sandbox/settings` shows them."""

    def __init__(self) -> None:
        self._sections: dict[str, SettingsSection[Any]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, default: S) -> SettingsSection[S]:
        section = SettingsSection(default)
        self._sections[name] = section
        return section

    def merge(self, patch: object) -> None:
        """Apply `{"section": {key: value}}`, all or nothing; ValueError says what is wrong."""
        if not isinstance(patch, dict):
            raise ValueError("settings must be an object of sections")
        with self._lock:
            staged: list[tuple[SettingsSection[Any], Any]] = []
            for name, values in patch.items():
                section = self._sections.get(name)
                if section is None:
                    raise ValueError(f"unknown settings section {name!r}")
                if not isinstance(values, dict):
                    raise ValueError(f"settings section {name!r} must be an object")
                try:
                    staged.append((section, section.merged(values)))
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
            for section, value in staged:
                section.current = value

    def reset(self) -> None:
        for section in self._sections.values():
            section.reset()

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: section.as_dict() for name, section in self._sections.items()}


@dataclass(frozen=True, slots=True)
class Context:
    clock: Clock
    settings: Settings
    oauth: OAuthVerifier
    data_dir: Path
    """Each service keeps its files in its own sub-folder of this."""
    background: Background
    """Threads for work done after replying; cancelled and joined on reset and stop."""


class Service(Protocol):
    """One emulated service (or a group of endpoints, such as Twitter's)."""

    def routes(self) -> Iterable[Route]: ...

    def reset(self) -> None: ...
