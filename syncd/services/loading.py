"""First-use imports of the modules that load requests, one thread at a time.

requests, urllib3, OAuth and the multipart encoder load when a service is first used, not
at start (services/__init__.py). Two threads importing requests' submodules at once can
see the package half initialised: workers building different uploaders together failed
files with an ImportError. So every import put off until first use goes through `load`,
which holds the one lock; tests/test_loading.py finds any that does not.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

_LOCK = threading.RLock()
"""Reentrant: a module being loaded may itself load another at first use."""


def load(module: str) -> ModuleType:
    """`module` (e.g. "syncd.services.http"), imported now if no thread has yet."""
    with _LOCK:
        return importlib.import_module(module)
