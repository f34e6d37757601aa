"""First-use imports of the modules that load urllib3 (and requests), one thread at a time.

urllib3, OAuth, the multipart encoder and requests load when a service is first used, not
at start (services/__init__.py). Two threads importing requests' submodules at once can
see the package half initialised: workers building different uploaders together failed
files with an ImportError. So every import put off until first use goes through `load`,
which holds the one lock; tests/test_loading.py finds any that does not.

A load can also be cut short, above all by a shortage of file descriptors (every module is a
file to open): the pipeline keeps such a file for later (work/descriptors.py), and `load`
leaves no half behind for that later attempt to trip on.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

_LOCK = threading.RLock()
"""Reentrant: a module being loaded may itself load another at first use."""


def load(module: str) -> ModuleType:
    """`module` (e.g. "syncd.services.http"), imported now if no thread has yet."""
    with _LOCK:
        before = set(sys.modules)
        try:
            return importlib.import_module(module)
        except BaseException:
            _drop_orphans(set(sys.modules) - before)
            raise


def _drop_orphans(loaded: set[str]) -> None:
    """Forget the submodules a failed load left whose package it did not finish (Python
    drops the package, not them): imported again, the package would not get them back as
    attributes ("module 'requests' has no attribute 'exceptions'"), and fail each file."""
    while orphans := {
        name
        for name in loaded & sys.modules.keys()
        if "." in name and name.rpartition(".")[0] not in sys.modules
    }:
        for name in orphans:
            del sys.modules[name]
