"""The foundation end to end: watch, hash, journal, upload to the TON sandbox, sidecar, status."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import SandboxClient, base_config, read_sidecar, sidecar_exists, wait_until
from harness import free_port, scrape
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


def drop(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ton_config(tmp_path: Path, sandbox: SandboxClient, **daemon: Any) -> dict[str, Any]:
    config = base_config(tmp_path, sandbox.url)
    config["daemon"].update(daemon)
    drop_dir = tmp_path / "drop"
    drop_dir.mkdir(exist_ok=True)
    config["watch"] = [{"path": str(drop_dir), "service": "ads"}]
    return config


def objects_by_location(sandbox: SandboxClient) -> dict[str, dict[str, Any]]:
    return {o["location"]: o for o in sandbox.ton_objects()}


def journal_states(tmp_path: Path) -> dict[str, int]:
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall())


def test_two_hundred_files_some_in_new_subfolders(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    rng = random.Random(7)
    files = []
    for n in range(200):
        folder = tmp_path / "drop" / (f"sub{n % 5}/deeper" if n % 3 == 0 else "")
        data = rng.randbytes(rng.choice([0, 1, 100, 5000, 70000, 300000]) + n)
        files.append(drop(folder / f"file-{n}.bin", data))
    daemon.wait_counts(done=200)
    objects = objects_by_location(sandbox)
    for path in files:
        side = read_sidecar(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert side["sha256"] == digest
        assert side["size"] == path.stat().st_size
        assert side["service"] == "ads" and side["type"] == "ton"
        stored = objects[side["result"]["location"]]
        assert stored["sha256"] == digest
        assert side["result"]["url"] == sandbox.url + side["result"]["location"]
    assert daemon.stop() == 0


def test_file_written_in_slices_is_uploaded_once_complete(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox, settle_seconds=1.0)).start()
    path = tmp_path / "drop" / "slow.bin"
    pieces = [os.urandom(10_000) for _ in range(10)]
    with path.open("wb") as out:
        for piece in pieces:
            out.write(piece)
            out.flush()
            time.sleep(0.3)  # the writer's pace under test, not synchronisation
    daemon.wait_counts(done=1)
    digest = hashlib.sha256(b"".join(pieces)).hexdigest()
    assert read_sidecar(path)["sha256"] == digest
    posts = [r for r in sandbox.requests() if r["method"] == "POST" and "/ton/" in r["path"]]
    assert len(posts) == 1 and posts[0]["body_sha256"] == digest


def test_a_writer_that_pauses_longer_than_the_settle_time_is_waited_for(
    tmp_path, sandbox, make_daemon
):
    """A download that stalls with its file open (the file stands still, but is not
    complete): nothing goes until the writer closes it, then the whole file goes once."""
    daemon = make_daemon(ton_config(tmp_path, sandbox, settle_seconds=0.3)).start()
    path = tmp_path / "drop" / "stalled.bin"
    first, rest = os.urandom(50_000), os.urandom(50_000)
    with path.open("wb") as out:
        out.write(first)
        out.flush()
        time.sleep(3)  # the stall under test: ten settle times with the file open
        assert not sandbox.requests(), "a file open for writing was uploaded"
        out.write(rest)
    daemon.wait_counts(done=1)
    digest = hashlib.sha256(first + rest).hexdigest()
    assert read_sidecar(path)["sha256"] == digest
    posts = [r for r in sandbox.requests() if r["method"] == "POST" and "/ton/" in r["path"]]
    assert len(posts) == 1 and posts[0]["body_sha256"] == digest


@pytest.mark.parametrize("seen_gone", [True, False], ids=["seen-gone", "made-again-at-once"])
def test_a_watch_folder_removed_and_made_again_is_watched_again(
    tmp_path, sandbox, make_daemon, seen_gone
):
    """Nothing above a watch's folder is watched: `rm -rf drop && mkdir drop` (the new
    folder often gets the old inode number) must not leave it unwatched till the hourly
    rescan. While it is missing, `degraded` says so. (Polled: tests/test_watcher.py.)"""
    daemon = make_daemon(ton_config(tmp_path, sandbox, settle_seconds=0.2)).start()
    folder = tmp_path / "drop"
    drop(folder / "before.bin", os.urandom(1000))
    daemon.wait_counts(done=1)
    shutil.rmtree(folder)
    if seen_gone:
        wait_until(
            lambda: [d["component"] for d in daemon.status()["degraded"]] == [f"watch {folder}"],
            30,
            "the missing folder in degraded",
        )
    drop(folder / "after.bin", os.urandom(1000))
    daemon.wait_counts(done=2, timeout=30)
    wait_until(lambda: daemon.status()["degraded"] == [], 30, "degraded cleared")
    assert read_sidecar(folder / "after.bin")["size"] == 1000


def test_a_file_system_mounted_on_a_watch_folder_is_watched(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox, settle_seconds=0.2)).start()
    folder = tmp_path / "drop"
    mount = ["mount", "-t", "tmpfs", "syncd-test", str(folder)]
    if shutil.which("mount") is None or subprocess.run(mount, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs mount(8) and CAP_SYS_ADMIN)")
    try:
        drop(folder / "on-the-mount.bin", os.urandom(1000))
        daemon.wait_counts(done=1, timeout=30)
        assert read_sidecar(folder / "on-the-mount.bin")["size"] == 1000
    finally:
        assert daemon.stop() == 0
        subprocess.run(["umount", str(folder)], check=True)


def test_files_dropped_while_stopped_are_uploaded_at_start(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    first = drop(tmp_path / "drop" / "before.txt", b"first")
    daemon.wait_counts(done=1)
    assert daemon.stop() == 0
    later = [
        drop(tmp_path / "drop" / f"while-down-{n}.txt", f"down {n}".encode()) for n in range(5)
    ]
    daemon.start()
    daemon.wait_counts(done=6)
    assert all(sidecar_exists(p) for p in [first, *later])
    assert len(sandbox.ton_objects()) == 6


def test_kill_during_burst_leaves_every_file_with_one_sidecar(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox, workers=4)).start()
    sandbox.fault(path="/1.1/ton/", delay_ms=30, count=1000)
    files = [drop(tmp_path / "drop" / f"burst-{n}.bin", os.urandom(2000 + n)) for n in range(100)]
    wait_until(lambda: daemon.status()["counts"]["done"] >= 10, what="some uploads")
    daemon.kill()
    assert journal_states(tmp_path).get("done", 0) < 100
    daemon.start()
    daemon.wait_counts(done=100)
    for path in files:
        assert read_sidecar(path)["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "drop").iterdir() if p.name.endswith(".toml")) == (
        sorted(p.name + ".syncd.toml" for p in files)
    )
    assert "uploading" not in journal_states(tmp_path)


def test_a_sidecar_temp_file_a_cut_short_write_left_is_removed_by_the_next_scan(
    tmp_path, sandbox, make_daemon
):
    """A kill -9 or a power loss between a sidecar's temp file and its rename leaves a
    hidden `.syncd-HEX.tmp` beside the file; the next start's scan removes it, and only it:
    not one a write may still hold (younger than a minute), not a name or kind not ours."""
    folder = tmp_path / "drop" / "sub"
    folder.mkdir(parents=True)
    a_minute_ago = time.time() - 120

    def made(name: str, old: bool = True, folder_kind: bool = False) -> Path:
        path = folder / name
        path.mkdir() if folder_kind else path.write_bytes(b'service = "ads"\n')
        if old:
            os.utime(path, (a_minute_ago, a_minute_ago))
        return path

    left = made(".syncd-0123456789abcdef.tmp")
    in_use = made(".syncd-fedcba9876543210.tmp", old=False)
    not_ours = [
        made(".syncd-notahexname.tmp"),
        made(".syncd-0123456789abcdef.tmp.keep"),
        made(".syncd-00000000000000aa.tmp", folder_kind=True),
    ]
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    daemon.wait_scan()
    assert not left.exists()
    assert in_use.exists() and all(path.exists() for path in not_ours)
    assert f"removed {left}, left by a sidecar write cut short" in daemon.log()
    assert sandbox.ton_objects() == [], "nothing of the kind is uploaded"


def test_retries_503_then_succeeds_once(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    sandbox.fault(method="POST", path="/1.1/ton/", status=503, count=3)
    path = drop(tmp_path / "drop" / "flaky.txt", b"flaky")
    daemon.wait_counts(done=1)
    posts = [r for r in sandbox.requests() if r["method"] == "POST"]
    assert [r["status"] for r in posts] == [503, 503, 503, 201]
    assert len(sandbox.ton_objects()) == 1
    assert sidecar_exists(path)


def test_429_retry_after_is_honoured(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    sandbox.fault(method="POST", path="/1.1/ton/", status=429, retry_after=2, count=1)
    drop(tmp_path / "drop" / "limited.txt", b"limited")
    daemon.wait_counts(done=1)
    posts = [r for r in sandbox.requests() if r["method"] == "POST"]
    assert [r["status"] for r in posts] == [429, 201]
    gap = posts[1]["started"] - posts[0]["finished"]
    assert gap >= 2.0, gap


def test_401_fails_the_file_with_a_reason_status_shows(tmp_path, sandbox, make_daemon):
    config = ton_config(tmp_path, sandbox)
    config["accounts"]["main"]["consumer_secret"] = "wrong-secret-value"
    daemon = make_daemon(config).start()
    path = drop(tmp_path / "drop" / "denied.txt", b"denied")
    daemon.wait_counts(failed=1)
    failure = daemon.status()["failures"][0]
    assert failure["path"] == str(path)
    assert "authentication failed" in failure["error"] and "401" in failure["error"]
    human = daemon.cli("status")
    assert human.returncode == 0 and "authentication failed" in human.stdout
    assert "wrong-secret-value" not in human.stdout + daemon.log()
    assert not sidecar_exists(path)


def test_same_content_twice_is_uploaded_once(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    data = os.urandom(50_000)
    one = drop(tmp_path / "drop" / "one.bin", data)
    two = drop(tmp_path / "drop" / "two.bin", data)
    daemon.wait_counts(done=2)
    assert len(sandbox.ton_objects()) == 1
    first, second = read_sidecar(one), read_sidecar(two)
    assert first["result"] == second["result"]
    assert {first.get("duplicate_of"), second.get("duplicate_of")} - {None} in (
        {str(one)},
        {str(two)},
    )


class _Opens(FileSystemEventHandler):
    def __init__(self) -> None:
        self.opened: list[str] = []

    def on_opened(self, event: FileSystemEvent) -> None:
        self.opened.append(str(event.src_path))


def test_symlink_out_of_the_watch_is_never_read(tmp_path, sandbox, make_daemon):
    outside = tmp_path / "outside"
    secret = drop(outside / "secret.txt", b"not yours")
    opens = _Opens()
    observer = Observer()
    observer.schedule(opens, str(outside))
    observer.start()
    try:
        daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
        link = tmp_path / "drop" / "link.txt"
        link.symlink_to(secret)
        marker = drop(tmp_path / "drop" / "after.txt", b"after the link")
        daemon.wait_counts(done=1)
        assert sidecar_exists(marker) and not sidecar_exists(link)
        assert opens.opened == []
        digest = hashlib.sha256(b"not yours").hexdigest()
        assert digest not in {o["sha256"] for o in sandbox.ton_objects()}
    finally:
        observer.stop()
        observer.join(5)


def test_fifo_in_the_watch_never_blocks(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    os.mkfifo(tmp_path / "drop" / "pipe")
    after = drop(tmp_path / "drop" / "after.txt", b"after the fifo")
    daemon.wait_counts(done=1)
    assert sidecar_exists(after)


def test_status_json_shows_in_flight_progress(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    sandbox.fault(method="POST", path="/1.1/ton/", delay_ms=3000, count=1)
    drop(tmp_path / "drop" / "big.bin", os.urandom(3_000_000))

    def uploading() -> dict[str, Any] | None:
        reply = json.loads(daemon.cli("status", "--json").stdout)
        return reply if reply["uploads"] else None

    reply = wait_until(uploading, what="an upload in flight")
    assert reply["counts"]["uploading"] == 1
    upload = reply["uploads"][0]
    assert upload["total"] == 3_000_000 and 0 <= upload["sent"] <= upload["total"]
    assert upload["path"] == str(tmp_path / "drop" / "big.bin")
    daemon.wait_counts(done=1)


def test_sigterm_stops_cleanly(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    drop(tmp_path / "drop" / "a.txt", b"a")
    daemon.wait_counts(done=1)
    daemon.signal(signal.SIGTERM)
    assert daemon.stop() == 0
    assert not daemon.socket.exists() or daemon.cli("status").returncode == 3


def test_sidecar_records_what_ton_was_told(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    path = drop(tmp_path / "drop" / "photo.jpg", b"\xff\xd8\xff" + os.urandom(1000))
    daemon.wait_counts(done=1)
    side = read_sidecar(path)
    post = next(r for r in sandbox.requests() if r["method"] == "POST")
    assert post["headers"]["Content-Type"] == "image/jpeg"
    sent = parsedate_to_datetime(post["headers"]["X-TON-Expires"])
    assert side["result"]["expires"] == sent
    text = path.with_name(path.name + ".syncd.toml").read_text()
    assert re.search(r"^uploaded_at = \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", text, re.M), text
    assert re.search(r"^expires = \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", text, re.M), text
    assert abs(sent.timestamp() - time.time() - 7 * 86400) < 120


def test_status_socket_answers_errors_and_survives(tmp_path, sandbox, make_daemon):
    import socket

    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    assert oct(daemon.socket.stat().st_mode & 0o777) == "0o600"
    for line in (b"not json\n", b"[1]\n", b'{"command": "dance"}\n'):
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(daemon.socket))
            client.sendall(line)
            assert "error" in json.loads(client.makefile().readline())
    assert daemon.status()["pid"] == daemon.process.pid


def test_names_that_are_not_utf8_survive(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    raw = os.path.join(os.fsencode(tmp_path / "drop"), b"caf\xe9-\xff.bin")
    with open(raw, "wb") as out:
        out.write(b"latin-1 name")
    daemon.wait_counts(done=1)
    assert os.path.exists(raw + b".syncd.toml")
    reply = daemon.status()
    assert reply["counts"]["done"] == 1


def test_retry_after_fixing_the_cause(tmp_path, sandbox, make_daemon):
    config = ton_config(tmp_path, sandbox)
    good_secret = config["accounts"]["main"]["consumer_secret"]
    config["accounts"]["main"]["consumer_secret"] = "not-the-secret"
    daemon = make_daemon(config).start()
    path = drop(tmp_path / "drop" / "retry-me.txt", b"again")
    daemon.wait_counts(failed=1)
    config["accounts"]["main"]["consumer_secret"] = good_secret
    daemon.write_config(config)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in daemon.log(), 10, "the reload")
    shown = daemon.cli("retry", str(path))
    assert shown.returncode == 0 and "1 files queued again" in shown.stdout
    daemon.wait_counts(done=1, failed=0)
    assert sidecar_exists(path)
    unknown = tmp_path / "drop" / "never-seen.txt"
    again = daemon.cli("retry", str(path), str(unknown))
    assert again.returncode == 0 and "0 files queued again" in again.stdout
    assert f"syncd: {path}: not a failed file in the journal" in again.stderr
    assert f"syncd: {unknown}: not a failed file in the journal" in again.stderr


def test_a_file_changed_after_upload_is_uploaded_again(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    path = drop(tmp_path / "drop" / "edited.txt", b"first version")
    daemon.wait_counts(done=1)
    path.write_bytes(b"second version, longer")
    second = hashlib.sha256(b"second version, longer").hexdigest()
    wait_until(lambda: read_sidecar(path)["sha256"] == second, 30, "the new sidecar")
    assert len(sandbox.ton_objects()) == 2


def test_sidecar_is_as_readable_as_its_file(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    path = drop(tmp_path / "drop" / "private.txt", b"mine")
    os.chmod(path, 0o600)
    daemon.wait_counts(done=1)
    side = path.with_name(path.name + ".syncd.toml")
    assert side.stat().st_mode & 0o777 == 0o600


def test_a_touched_file_is_not_uploaded_again(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    path = drop(tmp_path / "drop" / "touched.txt", b"same bytes")
    daemon.wait_counts(done=1)
    first = read_sidecar(path)
    os.utime(path, (time.time() + 10, time.time() + 10))
    path.write_bytes(b"same bytes")
    wait_until(lambda: "not uploaded again" in daemon.log(), 30, "the unchanged content noticed")
    daemon.wait_counts(done=1)
    assert len(sandbox.ton_objects()) == 1
    assert read_sidecar(path) == first


def test_an_uploaded_row_without_its_sidecar_gets_it_at_start(tmp_path, sandbox, make_daemon):
    """As after a crash between the journal's `uploaded` and the sidecar's rename."""
    daemon = make_daemon(ton_config(tmp_path, sandbox)).start()
    path = drop(tmp_path / "drop" / "crashed.txt", b"uploaded, then the power went")
    daemon.wait_counts(done=1)
    expected = read_sidecar(path)
    assert daemon.stop() == 0
    path.with_name(path.name + ".syncd.toml").unlink()
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as db:
        db.execute("UPDATE files SET state='uploaded'")
    daemon.start()
    daemon.wait_counts(done=1)
    assert read_sidecar(path) == expected
    assert len(sandbox.ton_objects()) == 1


def test_a_sidecar_that_could_not_be_written_is_written_later(tmp_path, sandbox, make_daemon):
    """A folder in the sidecar's place is for a person to fix (issue 11): the file is failed
    with that reason and its upload's result; once fixed, `syncd retry` writes the sidecar
    without uploading again. It is counted as failed, and archived only once its sidecar is
    there (issue 12's after-upload action waits for a durable sidecar)."""
    config = ton_config(tmp_path, sandbox, rescan_interval="1s")
    archive = tmp_path / "archive"
    archive.mkdir()
    config["watch"][0].update(after_upload="archive", archive_to=str(archive))
    port = free_port()
    config["metrics"] = {"listen": f"127.0.0.1:{port}"}
    daemon = make_daemon(config).start()
    path = tmp_path / "drop" / "blocked.txt"
    blocker = path.with_name(path.name + ".syncd.toml")
    blocker.mkdir(parents=True)  # the rename over it fails, as a read-only folder would
    path.write_bytes(b"uploaded, sidecar refused")
    daemon.wait_counts(failed=1)
    (failure,) = daemon.status()["failures"]
    assert "a folder stands in its place" in failure["error"], failure
    assert failure["result"]["location"] == sandbox.ton_objects()[0]["location"]
    assert "uploaded: location=" in daemon.cli("status").stdout
    samples, _ = scrape(f"http://127.0.0.1:{port}/metrics")
    assert samples[("syncd_uploads_total", (("outcome", "failed"), ("service", "ads")))] == 1
    assert path.exists() and daemon.status()["pending_actions"] == 0, "not archived"
    blocker.rmdir()
    assert daemon.cli("retry", str(path)).returncode == 0
    daemon.wait_counts(done=1, failed=0)
    archived = archive / "blocked.txt"
    # The file is carried first, its sidecar right after it.
    wait_until(lambda: sidecar_exists(archived), 30, "archived with its sidecar")
    assert not path.exists()
    sha256 = hashlib.sha256(b"uploaded, sidecar refused").hexdigest()
    assert read_sidecar(archived)["sha256"] == sha256
    assert len(sandbox.ton_objects()) == 1
