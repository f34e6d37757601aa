"""Order and priority, `run --once` and `run --once --dry-run`, end to end."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import base_config, sidecar_exists
from flowkit import MiB, make_file

from syncd.sandbox import credentials


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def uploaded_order(sandbox) -> list[str]:
    """The sha256 of each upload the sandbox took, in the order the bodies arrived."""
    posts = [r for r in sandbox.requests() if r["method"] == "POST" and r["status"] == 201]
    return [r["body_sha256"] for r in sorted(posts, key=lambda r: r["started"])]


def test_priority_across_watches_and_newest_first_within_one(tmp_path, sandbox, make_daemon):
    """One worker; files arrive while the service is paused, then go in queue order."""
    config = base_config(tmp_path, sandbox.url, workers=1)
    config["watch"] = [
        {"path": str(tmp_path / "bulk"), "service": "ads", "order": "newest"},
        {"path": str(tmp_path / "urgent"), "service": "ads", "priority": 10, "order": "smallest"},
    ]
    for folder in ("bulk", "urgent"):
        (tmp_path / folder).mkdir()
    daemon = make_daemon(config).start()
    assert daemon.cli("pause").returncode == 0
    staging = tmp_path / "staging"
    now = time.time()
    bulk = [make_file(staging / f"b{n}", 1000, seed=n, mtime=now - 600 + n * 60) for n in range(5)]
    urgent = [make_file(staging / f"u{n}", 3000 - n * 500, seed=20 + n) for n in range(3)]
    for path in bulk:
        os.rename(path, tmp_path / "bulk" / path.name)
    for path in urgent:
        os.rename(path, tmp_path / "urgent" / path.name)
    daemon.wait_counts(held=8)
    assert daemon.cli("resume").returncode == 0
    daemon.wait_counts(done=8)
    expected = [tmp_path / "urgent" / p.name for p in reversed(urgent)]  # smallest first
    expected += [tmp_path / "bulk" / p.name for p in reversed(bulk)]  # newest first
    assert uploaded_order(sandbox) == [digest(p) for p in expected]


def run_once(config_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    return subprocess.run(
        [sys.executable, "-m", "syncd", "run", "--once", *extra, "-c", str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )


def test_once_exits_4_after_the_others_are_done(tmp_path, sandbox, make_daemon):
    config = base_config(tmp_path, sandbox.url)
    drop = tmp_path / "drop"
    config["watch"] = [{"path": str(drop), "service": "ads"}]
    files = [make_file(drop / f"f{n:02}.txt", 2000, seed=n) for n in range(50)]
    bucket = f"/1.1/ton/bucket/{credentials.TON_BUCKET_TA_PARTNER}"
    sandbox.fault(method="POST", path=bucket, status=400, count=3)  # permanent: 3 files fail
    sandbox.fault(method="POST", path=bucket, status=503, count=2)  # retried: no failure
    daemon = make_daemon(config)  # only for its config file; run --once is the process
    finished = run_once(daemon.config_path, "--retries", "2")
    assert finished.returncode == 4, finished.stderr[-3000:]
    assert sum(sidecar_exists(f) for f in files) == 47
    assert len(sandbox.ton_objects()) == 47
    statuses = [r["status"] for r in sandbox.requests()]
    assert statuses.count(400) == 3 and statuses.count(503) == 2

    clean = tmp_path / "clean"
    config["watch"] = [{"path": str(clean), "service": "ads"}]
    config["daemon"]["state_dir"] = str(tmp_path / "state2")
    make_file(clean / "ok.txt", 100, seed=1)
    daemon.write_config(config)
    assert run_once(daemon.config_path).returncode == 0


def test_once_says_which_files_it_left_held(tmp_path, sandbox, make_daemon):
    """A paused service: `run --once` does not wait for a resume that will not come, and
    ends with exit 0 (nothing failed), but says that files were left held, not uploaded."""
    config = base_config(tmp_path, sandbox.url)
    drop = tmp_path / "drop"
    drop.mkdir()
    config["watch"] = [{"path": str(drop), "service": "ads"}]
    daemon = make_daemon(config).start()
    assert daemon.cli("pause", "ads").returncode == 0  # kept in the journal
    daemon.stop()
    files = [make_file(drop / f"f{n}.txt", 1000, seed=n) for n in range(2)]
    finished = run_once(daemon.config_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "run --once: 2 files held, not uploaded" in finished.stderr
    assert not any(sidecar_exists(f) for f in files)
    assert sandbox.ton_objects() == []


def test_dry_run_sends_nothing_writes_nothing_and_names_duplicates(tmp_path, sandbox, make_daemon):
    config = base_config(tmp_path, sandbox.url)
    config["services"]["ads"]["resumable_threshold"] = "1MiB"
    drop = tmp_path / "drop"
    config["watch"] = [{"path": str(drop), "service": "ads"}]
    first = make_file(drop / "first.bin", 5000, seed=1)
    daemon = make_daemon(config).start()
    daemon.wait_counts(done=1)
    daemon.stop()
    copy = drop / "sub" / "copy-of-first.bin"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())
    twin_a = make_file(drop / "twin-a.bin", 4000, seed=2)
    twin_b = drop / "twin-b.bin"
    twin_b.write_bytes(twin_a.read_bytes())
    big = make_file(drop / "big.mov", 2 * MiB, seed=3)
    sandbox.post("reset", {})

    def snapshot() -> dict[str, tuple[bytes, int]]:
        return {
            str(p): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(tmp_path.rglob("*"))
            if p.is_file() and "sandbox-data" not in p.parts and p.name != "daemon.log"
        }

    before = snapshot()
    finished = run_once(daemon.config_path, "--dry-run")
    assert finished.returncode == 0, finished.stderr
    assert sandbox.requests() == []
    assert snapshot() == before, "the dry run wrote something"
    lines = {line.split(": ", 1)[0]: line for line in finished.stdout.splitlines()}
    assert lines[str(first)].endswith("ads, 5000 bytes, single, already uploaded")
    assert lines[str(copy)].endswith(f"ads, 5000 bytes, single, duplicate of {first}")
    assert lines[str(twin_a)].endswith("ads, 4000 bytes, single")
    assert lines[str(twin_b)].endswith(f"ads, 4000 bytes, single, duplicate of {twin_a}")
    assert lines[str(big)].endswith(f"ads, {2 * MiB} bytes, resumable")
    assert "dry run: 2 to upload, 2 duplicates, 1 already uploaded" in finished.stdout
    assert run_once(daemon.config_path, "--dry-run").stdout == finished.stdout
    assert not (tmp_path / "nowhere").exists()
    config["daemon"]["state_dir"] = str(tmp_path / "nowhere")
    daemon.write_config(config)
    fresh = run_once(daemon.config_path, "--dry-run")
    assert fresh.returncode == 0 and "dry run: 3 to upload, 2 duplicates, 0 already" in fresh.stdout
    assert not (tmp_path / "nowhere").exists(), "a dry run creates no state folder"


def test_dry_run_and_retries_need_once(tmp_path):
    for extra in (["--dry-run"], ["--retries", "2"]):
        finished = subprocess.run(
            [sys.executable, "-m", "syncd", "run", *extra, "-c", str(tmp_path / "none.toml")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert finished.returncode == 2
        assert "--dry-run and --retries go with --once" in finished.stderr
