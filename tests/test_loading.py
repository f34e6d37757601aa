"""Imports put off until first use: each that brings urllib3 in (requests brings it too) goes
through `services.loading.load`, whose lock keeps two threads from importing them at once."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import syncd

PACKAGE = Path(syncd.__file__).parent


def deferred_imports() -> dict[str, list[str]]:
    """Every module imported inside a function of syncd, with the places. The sandbox and
    the CLI are left out: a CLI command's module is imported before any thread starts."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if {"sandbox", "cli"} & set(path.relative_to(PACKAGE).parts):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                for name in names:
                    found.setdefault(name, []).append(f"{path.name}:{node.lineno}")
    return found


PROBE = """
import os, sys
EXTRAS = {"psycopg", "psycopg_pool", "systemd"}
for name in sys.argv[1:]:
    if (pid := os.fork()) == 0:
        try:
            __import__(name)
        except ModuleNotFoundError as exc:
            os._exit(20 if exc.name.partition(".")[0] in EXTRAS else 1)
        os._exit(10 if "urllib3" in sys.modules else 0)
    print(name, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
"""Each module imported in a child of an interpreter that has loaded nothing else; 20 for a
module of an extra (fleet, systemd) not installed here: `pip install -e '.[test]'` alone."""


def loading_urllib3(modules: list[str]) -> set[str]:
    """Those of `modules` whose import brings urllib3 (and so any HTTP library) in."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    codes = dict(line.split() for line in result.stdout.splitlines())
    assert set(codes) == set(modules) and set(codes.values()) <= {"0", "10", "20"}, result
    return {name for name, code in codes.items() if code == "10"}


def test_no_deferred_import_of_an_http_library_bypasses_the_loader():
    found = deferred_imports()
    assert "hashlib" in found, "files.py's deferred import is found"
    third_party = [name for name in found if name.partition(".")[0] not in sys.stdlib_module_names]
    loading = loading_urllib3([*third_party, "syncd.services.http", "syncd.services.loading"])
    assert "syncd.services.http" in loading and "syncd.services.loading" not in loading
    bypassing = {name: found[name] for name in third_party if name in loading}
    assert not bypassing, f"import these through services.loading.load: {bypassing}"


def test_workers_loading_different_uploaders_at_once_all_get_them():
    """The regression the loader's lock fixed: several threads building different uploaders
    at once, each importing requests' submodules, saw the package half initialised."""
    race = textwrap.dedent(
        """
        import sys, threading
        from syncd.services.loading import load

        names = ["syncd.services.ton", "syncd.services.twitpic", "syncd.services.twitlonger",
                 "syncd.services.oneall.uploader", "syncd.services.http", "requests.utils"]
        start, failed = threading.Barrier(len(names)), []

        def build(name):
            start.wait()
            try:
                load(name)
            except Exception as exc:
                failed.append(f"{name}: {exc!r}")

        threads = [threading.Thread(target=build, args=(n,)) for n in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert "requests" in sys.modules
        print(failed or "ok")
        """
    )
    for _ in range(3):
        result = subprocess.run(
            [sys.executable, "-c", race], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0 and result.stdout.strip() == "ok", (
            result.stdout + result.stderr
        )
