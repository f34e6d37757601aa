"""Which [[watch]] takes a path: folders, patterns, the built-in ignores, and confinement.

Hot paths: a rescan tests every name of tens of thousands of files, so patterns are
compiled into one regex per tuple and cached.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from pathlib import Path

from syncd.config import WatchConfig

BUILTIN_IGNORES = ("*.syncd.toml", "*.caption", ".*", "*.part", "*.tmp", "*.crdownload", "*~")
"""Our own sidecars, captions, and the temporary names of editors, browsers and rsync."""


@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """Shell patterns as one regex: a scan tests every name, so this is the hot path."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")


IGNORED = _compiled(BUILTIN_IGNORES)


def _affixes(patterns: tuple[str, ...]) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """Patterns of the form PREFIX* or *SUFFIX as (prefixes, suffixes) in bytes."""
    prefixes, suffixes = [], []
    for pattern in patterns:
        if pattern.endswith("*") and not any(c in pattern[:-1] for c in "*?["):
            prefixes.append(os.fsencode(pattern[:-1]))
        elif pattern.startswith("*") and not any(c in pattern[1:] for c in "*?["):
            suffixes.append(os.fsencode(pattern[1:]))
        else:
            raise ValueError(f"{pattern!r} is neither PREFIX* nor *SUFFIX")
    return tuple(prefixes), tuple(suffixes)


IGNORED_PREFIXES, IGNORED_SUFFIXES = _affixes(BUILTIN_IGNORES)
"""The built-in ignores for the names a scan reads as bytes: `name.startswith(PREFIXES)
or name.endswith(SUFFIXES)` is what IGNORED matches, without decoding, at a third of a
regex's cost per name (a scan tests every name of every folder)."""


def ignored_name(name: bytes) -> bool:
    """A name intake always ignores (our sidecars and their temp files, dot-files, partial
    downloads), tested on bytes as the scan does."""
    return name.endswith(IGNORED_SUFFIXES) or name.startswith(IGNORED_PREFIXES)


@functools.lru_cache(maxsize=256)
def _split(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str] | None]:
    """Patterns with a `/` match the path below the watch; the others the name alone."""
    by_path = tuple(p for p in patterns if "/" in p)
    by_name = tuple(p for p in patterns if "/" not in p)
    return _compiled(by_name), _compiled(by_path) if by_path else None


def _matches(patterns: tuple[str, ...], name: str, relative: str) -> bool:
    by_name, by_path = _split(patterns)
    return bool(by_name.match(name) or (by_path is not None and by_path.match(relative)))


def takes_every_name(watch: WatchConfig) -> bool:
    """The default patterns (include "*", no exclude): any name the built-in ignores let
    through is taken, so a scan need not decode or match names at all."""
    return watch.include == ("*",) and not watch.exclude


def accepts(watch: WatchConfig, name: str, relative: str) -> bool:
    """Whether `watch`'s patterns take the file `relative` (its path below the watch)."""
    return _matches(watch.include, name, relative) and not _matches(watch.exclude, name, relative)


def takers(watches: tuple[WatchConfig, ...], folder: str) -> list[tuple[WatchConfig, str]]:
    """The watches that may take files right in `folder`, each with the folder's path
    below its root (ending in "/", or empty at the root)."""
    text = folder.rstrip("/") + "/"
    takers = []
    for watch in watches:
        root = os.fsdecode(watch.path).rstrip("/") + "/"
        if not text.startswith(root):
            continue
        below = text[len(root) :]
        if below and not watch.recursive:
            continue
        if any(IGNORED.match(part) for part in below.split("/")[:-1]):
            continue
        takers.append((watch, below))
    return takers


def inotify_takes(folder_takers: list[tuple[WatchConfig, str]]) -> bool:
    """Whether a folder is inotify's to watch: some watch that takes it is not polled."""
    return any(watch.poll_interval == 0 for watch, _ in folder_takers)


def route(watches: tuple[WatchConfig, ...], path: Path) -> WatchConfig | None:
    """The first watch whose folder and patterns take `path`, if any."""
    folder, _, name = os.fsdecode(path).rpartition("/")
    if IGNORED.match(name):
        return None
    for watch, below in takers(watches, folder):
        if accepts(watch, name, below + name):
            return watch
    return None


def inside(watch: WatchConfig, path: Path) -> bool:
    """True when the folder holding `path` really lies in the watch, symlinks resolved."""
    real = os.path.realpath(path.parent)
    root = os.fsdecode(watch.path)
    return real == root or real.startswith(root.rstrip("/") + "/")
