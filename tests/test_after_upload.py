"""After upload, end to end: archive, delete into the trash, restore, purge, and hooks."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from conftest import SandboxClient, base_config, read_sidecar, sidecar_exists, wait_until
from harness import RunningDaemon

from syncd.control.status import ask

SCALE = float(os.environ.get("SYNCD_TEST_SCALE", "0.1"))
"""The crash test's share of its full size (300 files, 20 kills): SYNCD_TEST_SCALE=1."""


def after_config(
    tmp_path: Path, sandbox: SandboxClient, *watches: dict[str, Any]
) -> dict[str, Any]:
    """One watch per entry, each with its own drop folder under tmp_path."""
    entries = []
    for watch in watches or ({"path": "drop"},):
        folder = tmp_path / watch["path"]
        folder.mkdir(exist_ok=True)
        entries.append({**watch, "path": str(folder)})
    return base_config(tmp_path, sandbox.url, entries)


def drop(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def files_under(folder: Path) -> list[Path]:
    """Every file (sidecars included), the trash included."""
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def wait_actions(daemon: RunningDaemon, timeout: float = 90, **counts: int) -> dict[str, Any]:
    """The status once no action is pending and `counts` hold."""

    def probe() -> dict[str, Any] | None:
        reply = daemon.poll_status()
        if reply is None or reply["pending_actions"] or reply["counts"]["uploading"]:
            return None
        held = all(reply["counts"].get(k, reply.get(k)) == v for k, v in counts.items())
        return reply if held else None

    try:
        return wait_until(probe, timeout, f"actions finished with {counts}", interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{daemon.status()}\n{daemon.log()[-4000:]}") from None


def uploads_by_content(sandbox: SandboxClient) -> collections.Counter[str]:
    return collections.Counter(o["sha256"] for o in sandbox.ton_objects())


def actions(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as db:
        return db.execute("SELECT kind, state FROM actions ORDER BY id").fetchall()


def test_archive_two_hundred_files_keeps_their_paths(tmp_path, sandbox, make_daemon):
    archive = tmp_path / "archive"
    archive.mkdir()
    config = after_config(
        tmp_path, sandbox, {"path": "drop", "after_upload": "archive", "archive_to": str(archive)}
    )
    daemon = make_daemon(config).start()
    rng = random.Random(12)
    dropped: dict[str, bytes] = {}
    for n in range(200):
        below = f"sub{n % 4}/deeper/" if n % 3 == 0 else ("sub9/" if n % 3 == 1 else "")
        data = rng.randbytes(rng.choice([1, 700, 40000]) + n)
        drop(tmp_path / "drop" / f"{below}file-{n}.bin", data)
        dropped[f"{below}file-{n}.bin"] = data
    wait_actions(daemon, done=200)
    assert [p for p in files_under(tmp_path / "drop")] == []
    for relative, data in dropped.items():
        path = archive / relative
        assert path.read_bytes() == data
        assert read_sidecar(path)["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(files_under(archive)) == 400
    assert set(uploads_by_content(sandbox).values()) == {1}
    assert len(uploads_by_content(sandbox)) == 200
    assert daemon.stop() == 0


def test_delete_trash_restore_and_purge(tmp_path, sandbox, make_daemon):
    config = after_config(
        tmp_path, sandbox, {"path": "drop", "after_upload": "delete", "trash_retention": "1h"}
    )
    daemon = make_daemon(config).start()
    keep = drop(tmp_path / "drop" / "a" / "keep.bin", b"bring me back")
    gone = drop(tmp_path / "drop" / "gone.bin", b"let me go")
    wait_actions(daemon, done=2, trash=2)
    trash = tmp_path / "drop" / ".syncd-trash"
    assert not keep.exists() and not gone.exists()
    assert (trash / "a" / "keep.bin").read_bytes() == b"bring me back"
    assert sidecar_exists(trash / "a" / "keep.bin") and sidecar_exists(trash / "gone.bin")
    assert daemon.status()["counts"]["seen"] == 0
    assert "0 actions pending, 2 files in the trash" in daemon.cli("status").stdout

    restored = daemon.cli("restore", str(keep))
    assert restored.returncode == 0, restored.stderr
    assert keep.read_bytes() == b"bring me back" and sidecar_exists(keep)
    assert not (trash / "a" / "keep.bin").exists()
    missing = daemon.cli("restore", str(tmp_path / "drop" / "never.bin"))
    assert missing.returncode == 1 and "not in the trash" in missing.stderr
    # It stays: not uploaded again, not deleted again, even after a full rescan at restart.
    uploads = len(sandbox.ton_objects())
    assert daemon.stop() == 0
    config["watch"][0]["trash_retention"] = "2s"
    daemon.write_config(config)
    daemon.start().wait_scan()
    wait_until(lambda: not (trash / "gone.bin").exists(), 30, "the trash purged")
    wait_actions(daemon, trash=0)
    assert not sidecar_exists(trash / "gone.bin")
    assert keep.read_bytes() == b"bring me back" and sidecar_exists(keep)
    assert len(sandbox.ton_objects()) == uploads == 2
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as db:
        in_trash = db.execute(
            "SELECT COUNT(*) FROM files WHERE instr(path, ?)", (b"/.syncd-trash/",)
        )
        assert in_trash.fetchone() == (0,), "intake took a file in the trash"
    assert ("delete", "restored") in actions(tmp_path)
    assert ("delete", "purged") in actions(tmp_path)
    assert daemon.stop() == 0


def test_file_appended_before_its_action_is_a_new_version(tmp_path, sandbox, make_daemon):
    config = after_config(tmp_path, sandbox, {"path": "drop", "after_upload": "delete"})
    daemon = make_daemon(config, SYNCD_TEST_ACTION_DELAY="8").start()
    path = drop(tmp_path / "drop" / "log.txt", b"first part\n")
    wait_until(lambda: sidecar_exists(path), 30, "the first upload")
    with path.open("ab") as out:
        out.write(b"second part\n")
    trashed = tmp_path / "drop" / ".syncd-trash" / "log.txt"
    wait_until(lambda: trashed.exists(), 60, "the new version trashed")
    wait_actions(daemon, done=1, trash=1)
    both = b"first part\nsecond part\n"
    assert trashed.read_bytes() == both
    assert read_sidecar(trashed)["sha256"] == hashlib.sha256(both).hexdigest()
    assert uploads_by_content(sandbox) == {
        hashlib.sha256(b"first part\n").hexdigest(): 1,
        hashlib.sha256(both).hexdigest(): 1,
    }
    assert actions(tmp_path) == [("delete", "skipped"), ("delete", "moved")]
    assert daemon.stop() == 0


def test_archive_never_overwrites(tmp_path, sandbox, make_daemon):
    archive = tmp_path / "archive"
    drop(archive / "photo.jpg", b"someone else's")
    drop(archive / "README", b"theirs too")
    config = after_config(
        tmp_path, sandbox, {"path": "drop", "after_upload": "archive", "archive_to": str(archive)}
    )
    daemon = make_daemon(config).start()
    drop(tmp_path / "drop" / "photo.jpg", b"mine, first")
    drop(tmp_path / "drop" / "README", b"my readme")
    wait_actions(daemon, done=2)
    drop(tmp_path / "drop" / "photo.jpg", b"mine, second")
    wait_until(lambda: (archive / "photo (2).jpg").exists(), 30, "the second photo archived")
    wait_actions(daemon, done=2)
    assert (archive / "photo.jpg").read_bytes() == b"someone else's"
    assert (archive / "README").read_bytes() == b"theirs too"
    assert (archive / "photo (1).jpg").read_bytes() == b"mine, first"
    assert (archive / "photo (2).jpg").read_bytes() == b"mine, second"
    assert (archive / "README (1)").read_bytes() == b"my readme"
    for name in ("photo (1).jpg", "photo (2).jpg", "README (1)"):
        assert sidecar_exists(archive / name)
    assert not sidecar_exists(archive / "photo.jpg")
    assert daemon.stop() == 0


def test_archive_across_file_systems(tmp_path, sandbox, make_daemon, other_fs):
    assert os.stat(other_fs).st_dev != os.stat(tmp_path).st_dev
    config = after_config(
        tmp_path, sandbox, {"path": "drop", "after_upload": "archive", "archive_to": str(other_fs)}
    )
    daemon = make_daemon(config).start()
    data = {f"d{n}/f{n}.bin": os.urandom(1000 * n + 1) for n in range(5)}
    for relative, content in data.items():
        drop(tmp_path / "drop" / relative, content)
    wait_actions(daemon, done=5)
    assert files_under(tmp_path / "drop") == []
    for relative, content in data.items():
        assert (other_fs / relative).read_bytes() == content
        assert read_sidecar(other_fs / relative)["sha256"] == hashlib.sha256(content).hexdigest()
    assert not [p for p in files_under(other_fs) if "syncd-partial" in p.name]
    assert daemon.stop() == 0


HOOK = """
import json, os, sys
record = {k: v for k, v in os.environ.items() if k.startswith("SYNCD_")}
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(record) + "\\n")
print("hook saw", os.environ["SYNCD_PATH"])
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
"""


def hook_records(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_hooks_environment_failing_and_hanging(tmp_path, sandbox, make_daemon):
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    archive = tmp_path / "archive"
    archive.mkdir()
    done_log, failed_log = tmp_path / "done.jsonl", tmp_path / "failed.jsonl"
    hanging = tmp_path / "hanging"
    config = after_config(
        tmp_path,
        sandbox,
        {
            "path": "drop",
            "after_upload": "archive",
            "archive_to": str(archive),
            "on_done": [sys.executable, str(script), str(done_log)],
            "on_failed": [sys.executable, str(script), str(failed_log)],
        },
        {"path": "flaky", "on_done": [sys.executable, str(script), str(done_log), "3"]},
        {
            "path": "slow",
            "on_done": ["sh", "-c", 'touch "$0"; exec sleep 600', str(hanging)],
            "hook_timeout": "20s",
        },
    )
    daemon = make_daemon(config).start()
    drop(tmp_path / "drop" / "sub" / "a.bin", b"hook me")
    wait_until(lambda: hook_records(done_log), 60, "the done hook")
    [record] = hook_records(done_log)
    archived = archive / "sub" / "a.bin"
    side = read_sidecar(archived)
    assert record == {
        "SYNCD_EVENT": "done",
        "SYNCD_PATH": str(archived),
        "SYNCD_SIDECAR": str(archived) + ".syncd.toml",
        "SYNCD_SERVICE": "ads",
        "SYNCD_TYPE": "ton",
        "SYNCD_SHA256": hashlib.sha256(b"hook me").hexdigest(),
        "SYNCD_SIZE": "7",
        "SYNCD_RESULT": record["SYNCD_RESULT"],
        "SYNCD_ERROR": "",
    }
    result = json.loads(record["SYNCD_RESULT"])
    assert result["location"] == side["result"]["location"]
    assert result["expires"].endswith("Z")

    sandbox.fault(method="POST", path="/1.1/ton/", status=400, count=1)
    drop(tmp_path / "drop" / "bad.bin", b"refused")
    wait_until(lambda: hook_records(failed_log), 60, "the failed hook")
    [failed] = hook_records(failed_log)
    assert failed["SYNCD_EVENT"] == "failed" and failed["SYNCD_ERROR"]
    assert failed["SYNCD_PATH"] == str(tmp_path / "drop" / "bad.bin")

    # A hanging hook holds neither uploads nor the other hooks; its timeout kills it.
    drop(tmp_path / "slow" / "s.bin", b"slow hook")
    wait_until(hanging.exists, 60, "the hanging hook started")
    drop(tmp_path / "flaky" / "f.bin", b"flaky hook")
    for n in range(5):
        drop(tmp_path / "flaky" / f"more-{n}.bin", f"more {n}".encode())

    def failing(count: int) -> Callable[[], list[dict[str, Any]] | None]:
        def probe() -> list[dict[str, Any]] | None:
            hooks = daemon.status()["failing_hooks"]
            return hooks if len(hooks) == count else None

        return probe

    hooks = wait_until(failing(6), 60, "the flaky hooks failing in status")
    assert {h["error"] for h in hooks} == {"exited with 3"}
    assert daemon.status()["counts"]["done"] == 8
    hooks = wait_until(failing(7), 60, "the hanging hook's timeout")
    assert hooks[0]["error"] == "timed out after 20 s" and hooks[0]["command"] == "sh"
    assert daemon.status()["counts"]["done"] == 8
    assert "failing hooks:" in daemon.cli("status").stdout
    assert f"done hook {sys.executable}: hook saw {archived}" in daemon.log()
    assert daemon.stop() == 0


BLOCK_ONCE = """
import os, sys, time
path, markers, record = os.environ["SYNCD_PATH"], sys.argv[1], sys.argv[2]
marker = os.path.join(markers, os.path.basename(path))
if os.path.basename(path).startswith("block") and not os.path.exists(marker):
    with open(marker, "w") as out:
        out.write(str(os.getpid()))
    time.sleep(600)
with open(record, "a") as out:
    out.write(path + "\\n")
"""


def test_hooks_killed_before_they_ran_run_after_restart(tmp_path, sandbox, make_daemon):
    """Both runners held by hooks that block on their first run, a third event waits in the
    queue: kill -9, and after the restart all three run (the blocked ones again)."""
    script, markers, record = tmp_path / "block.py", tmp_path / "markers", tmp_path / "record"
    script.write_text(BLOCK_ONCE)
    markers.mkdir()
    config = after_config(
        tmp_path,
        sandbox,
        {"path": "drop", "on_done": [sys.executable, str(script), str(markers), str(record)]},
    )
    daemon = make_daemon(config).start()
    blockers = [drop(tmp_path / "drop" / f"block-{n}.bin", f"b{n}".encode()) for n in (1, 2)]
    try:
        wait_until(lambda: len(list(markers.iterdir())) == 2, 60, "both runners blocked")
        waiting = drop(tmp_path / "drop" / "waiting.bin", b"w")
        daemon.wait_counts(done=3)
        daemon.kill()
        assert not record.exists()
        daemon.start()
        wait_until(
            lambda: record.exists() and len(record.read_text().splitlines()) == 3,
            60,
            "the three hooks run after the restart",
        )
        assert sorted(record.read_text().splitlines()) == sorted(map(str, [*blockers, waiting]))
        assert len(sandbox.ton_objects()) == 3
        assert daemon.stop() == 0
    finally:
        for marker in markers.iterdir():
            os.kill(int(marker.read_text()), 9)


def test_kill_nine_during_actions_loses_and_duplicates_nothing(tmp_path, sandbox, make_daemon):
    """SYNCD_TEST_SCALE=1 runs it at full size: 300 files, 20 kills."""
    count, kills = max(20, int(300 * SCALE)), max(3, int(20 * SCALE))
    archive = tmp_path / "archive"
    archive.mkdir()
    config = after_config(
        tmp_path,
        sandbox,
        {"path": "arch", "after_upload": "archive", "archive_to": str(archive)},
        {"path": "del", "after_upload": "delete"},
    )
    # Everything uploaded first (actions held back), so that the kills land in actions.
    daemon = make_daemon(config, SYNCD_TEST_ACTION_DELAY="3600").start()
    rng = random.Random(99)
    expected: dict[Path, bytes] = {}
    for n in range(count):
        data = rng.randbytes(rng.choice([10, 5000, 200_000]) + n)
        kind = "arch" if n % 2 else "del"
        relative = f"s{n % 7}/f{n}.bin"
        drop(tmp_path / kind / relative, data)
        where = archive if kind == "arch" else tmp_path / "del" / ".syncd-trash"
        expected[where / relative] = data
    daemon.wait_counts(done=count, timeout=180)
    uploaded = uploads_by_content(sandbox)
    assert set(uploaded.values()) == {1} and len(uploaded) == count
    assert daemon.stop() == 0

    daemon.env["SYNCD_TEST_ACTION_DELAY"] = "0"
    pending_at_kills = []
    for remaining in sorted(rng.sample(range(1, count), kills), reverse=True):
        daemon.start()

        def reached(remaining: int = remaining) -> tuple[int] | None:
            pending = int(daemon.status()["pending_actions"])
            return (pending,) if pending <= remaining else None

        (pending,) = wait_until(reached, 120, f"{remaining} actions left", interval=0.01)
        time.sleep(rng.uniform(0, 0.05))  # where in an action the crash lands
        pending_at_kills.append(pending)
        daemon.kill()
    assert any(pending_at_kills), "every kill came after the actions had all finished"
    daemon.start()
    wait_actions(daemon, done=count, timeout=180)
    assert daemon.stop() == 0

    for path, data in expected.items():
        assert path.read_bytes() == data, path
        assert read_sidecar(path)["sha256"] == hashlib.sha256(data).hexdigest()
    everything = (
        files_under(tmp_path / "arch") + files_under(tmp_path / "del") + files_under(archive)
    )
    assert len(everything) == 2 * count, [p for p in everything if p not in expected]
    assert uploads_by_content(sandbox) == uploaded


def test_one_name_trashed_twice_and_restores_that_never_overwrite(tmp_path, sandbox, make_daemon):
    config = after_config(tmp_path, sandbox, {"path": "drop", "after_upload": "delete"})
    daemon = make_daemon(config).start()
    trash = tmp_path / "drop" / ".syncd-trash"
    path = drop(tmp_path / "drop" / "twice.bin", b"old")
    wait_actions(daemon, trash=1)
    drop(path, b"new")
    wait_actions(daemon, trash=2)
    assert (trash / "twice.bin").read_bytes() == b"old"
    assert (trash / "twice (1).bin").read_bytes() == b"new"
    assert sidecar_exists(trash / "twice (1).bin")
    # By the path it had: the latest one back.
    assert daemon.cli("restore", str(path)).returncode == 0
    assert path.read_bytes() == b"new" and not (trash / "twice (1).bin").exists()
    refused = daemon.cli("restore", str(trash / "twice.bin"))
    assert refused.returncode == 1 and "move it away first" in refused.stderr
    assert path.read_bytes() == b"new" and (trash / "twice.bin").read_bytes() == b"old"
    path.rename(tmp_path / "kept-aside.bin")
    path.with_name("twice.bin.syncd.toml").unlink()
    assert ask(daemon.socket, {"command": "restore"}) == {"error": 'restore needs "paths": [...]'}
    answer = ask(daemon.socket, {"command": "restore", "paths": [str(trash / "twice.bin")]})
    assert answer == {"restored": 1, "errors": []}
    assert path.read_bytes() == b"old" and sidecar_exists(path)
    assert read_sidecar(path)["sha256"] == hashlib.sha256(b"old").hexdigest()
    assert len(sandbox.ton_objects()) == 2
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    ("watch", "message"),
    [
        ({"after_upload": "archive"}, 'archive_to: required with after_upload = "archive"'),
        ({"after_upload": "shred"}, 'after_upload: must be "keep", "archive" or "delete"'),
        ({"archive_to": "{drop}/in"}, 'archive_to: only used with after_upload = "archive"'),
        ({"after_upload": "archive", "archive_to": "{drop}/in"}, "archive_to: {drop}/in is inside"),
        ({"on_failed": "page-me"}, "on_failed: expected an array of strings"),
        ({"on_done": ["", "--quiet"]}, "on_done: the program (the first item) is empty"),
        ({"on_failed": ["/"]}, "on_failed: / is not an executable file"),
        ({"on_failed": ["/nonexistent/page-me"]}, "on_failed: /nonexistent/page-me is not an"),
        ({"hook_timeout": "0s"}, "hook_timeout: must be more than 0"),
    ],
)
def test_after_upload_settings_are_checked(tmp_path, watch, message):
    folder = tmp_path / "drop"
    (folder / "in").mkdir(parents=True)
    entry = {"path": str(folder)} | {
        k: v.format(drop=folder) if isinstance(v, str) else v for k, v in watch.items()
    }
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(base_config(tmp_path, "http://127.0.0.1:1", [entry])))
    path.chmod(0o600)
    checked = subprocess.run(
        [sys.executable, "-m", "syncd", "check", "-c", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 2
    assert f"[[watch]] #1 {message.format(drop=folder)}" in checked.stderr


def test_an_action_that_fails_is_shown_and_finished_later(tmp_path, sandbox, make_daemon):
    archive = tmp_path / "archive"
    blocker = drop(archive / "sub", b"a file where a folder is needed")
    config = after_config(
        tmp_path, sandbox, {"path": "drop", "after_upload": "archive", "archive_to": str(archive)}
    )
    daemon = make_daemon(config).start()
    path = drop(tmp_path / "drop" / "sub" / "x.bin", b"x")

    def shown() -> list[dict[str, Any]] | None:
        return daemon.status()["action_errors"] or None

    [error] = wait_until(shown, 60, "the failing action in status")
    assert error["path"] == str(path) and error["action"] == "archive"
    assert "cannot archive" in error["error"]
    assert path.exists() and sidecar_exists(path)
    assert daemon.stop() == 0
    blocker.unlink()
    daemon.start()  # an action cut short is finished at start, whenever it was due
    wait_actions(daemon, done=1)
    assert (archive / "sub" / "x.bin").read_bytes() == b"x" and not path.exists()
    assert daemon.stop() == 0


def test_purge_never_follows_a_trash_folder_swapped_for_a_symlink(tmp_path, sandbox, make_daemon):
    """A writer in the drop folder swaps the trash, and a folder in it, for symlinks to
    files of the same names outside every watch: the purge removes nothing there."""
    config = after_config(
        tmp_path, sandbox, {"path": "drop", "after_upload": "delete", "trash_retention": "3s"}
    )
    daemon = make_daemon(config).start()
    outside = tmp_path / "outside"
    victims = [
        drop(outside / name, b"not yours")
        for name in ("top.bin", "top.bin.syncd.toml", "sub/deep.bin", "sub/deep.bin.syncd.toml")
    ]
    drop(tmp_path / "drop" / "sub" / "deep.bin", b"deep")
    drop(tmp_path / "drop" / "top.bin", b"top")
    wait_actions(daemon, done=2, trash=2)
    trash = tmp_path / "drop" / ".syncd-trash"
    trash.rename(tmp_path / "drop" / ".moved-away")
    trash.symlink_to(outside)
    wait_actions(daemon, trash=0, timeout=30)
    assert [v.read_bytes() for v in victims] == [b"not yours"] * 4
    assert (outside / "sub").is_dir()
    assert daemon.stop() == 0


def test_a_hook_that_prints_without_end_costs_no_memory(tmp_path, sandbox, make_daemon):
    """Only the tail of a hook's output is kept (and logged): 256 MiB of it leaves the
    daemon's peak memory far below that."""
    config = after_config(
        tmp_path,
        sandbox,
        {"path": "drop", "on_done": ["sh", "-c", "head -c 268435456 /dev/zero; echo; echo last"]},
    )
    daemon = make_daemon(config).start()
    drop(tmp_path / "drop" / "a.bin", b"noisy hook")
    wait_until(lambda: "done hook sh: last" in daemon.log(), 60, "the hook's last line logged")
    status = Path(f"/proc/{daemon.pid}/status").read_text()
    peak_kib = int(
        next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]
    )
    assert peak_kib < 128 * 1024, f"peak {peak_kib} KiB"
    assert daemon.status()["failing_hooks"] == []
    assert daemon.stop() == 0
