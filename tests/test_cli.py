"""The command line as an operator meets it: exit codes, one-line errors, the sandbox demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from conftest import base_config, read_sidecar, wait_until

from syncd.control.status import ask


def syncd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def write_config(path: Path, config: dict[str, Any], mode: int = 0o600) -> Path:
    path.write_text(tomli_w.dumps(config))
    os.chmod(path, mode)
    return path


def good_config(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "drop").mkdir(exist_ok=True)
    config = base_config(tmp_path, "http://127.0.0.1:9")
    config["watch"] = [{"path": str(tmp_path / "drop"), "service": "ads"}]
    return config


def test_check_accepts_a_good_config(tmp_path):
    path = write_config(tmp_path / "config.toml", good_config(tmp_path))
    result = syncd("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def _unknown_key(config: dict[str, Any]) -> None:
    config["daemon"]["wokers"] = 2


def _wrong_type(config: dict[str, Any]) -> None:
    config["daemon"]["workers"] = "four"


def _unknown_service(config: dict[str, Any]) -> None:
    config["watch"][0]["service"] = "nope"


def _missing_watch_path(config: dict[str, Any]) -> None:
    config["watch"][0]["path"] = "/nonexistent/drop"


@pytest.mark.parametrize(
    ("breaks", "named"),
    [
        (_unknown_key, "[daemon] wokers"),
        (_wrong_type, "[daemon] workers"),
        (_unknown_service, "[[watch]] #1 service"),
        (_missing_watch_path, "[[watch]] #1 path"),
    ],
)
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_configs_exit_2_naming_the_key(tmp_path, breaks, named, command):
    config = good_config(tmp_path)
    breaks(config)
    path = write_config(tmp_path / "config.toml", config)
    result = syncd(command, "-c", str(path))
    assert result.returncode == 2
    assert named in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_inline_secret_in_a_world_readable_file_is_refused(tmp_path):
    path = write_config(tmp_path / "config.toml", good_config(tmp_path), mode=0o644)
    result = syncd("run", "-c", str(path))
    assert result.returncode == 2
    assert "consumer_secret" in result.stderr
    secret = good_config(tmp_path)["accounts"]["main"]["consumer_secret"]
    assert secret not in result.stderr


def test_status_without_a_daemon_exits_3(tmp_path):
    path = write_config(tmp_path / "config.toml", good_config(tmp_path))
    result = syncd("status", "-c", str(path))
    assert result.returncode == 3
    assert "not running" in result.stderr


def test_usage_errors_exit_2(tmp_path):
    assert syncd("frobnicate").returncode == 2
    path = write_config(tmp_path / "config.toml", good_config(tmp_path))
    assert syncd("retry", "-c", str(path)).returncode == 2


def test_run_sandbox_demo_uploads_a_dropped_file(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "--sandbox"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        config_path = tmp_path / "syncd-demo" / "config.toml"
        socket_path = tmp_path / "syncd-demo" / "status.sock"

        def answers() -> bool:
            try:
                return "pid" in ask(socket_path, {"command": "status"}, timeout=2)
            except Exception:
                return process.poll() is not None

        wait_until(answers, 30, "the demo daemon")
        assert process.poll() is None
        dropped = tmp_path / "syncd-demo" / "ton" / "hello.txt"
        dropped.write_text("hello, sandbox\n")
        wait_until(lambda: dropped.with_name("hello.txt.syncd.toml").exists(), 30, "the sidecar")
        assert read_sidecar(dropped)["type"] == "ton"
        shown = syncd("status", "-c", str(config_path))
        assert shown.returncode == 0 and "1 done" in shown.stdout
        # One folder archives: the file and its sidecar move to syncd-demo/archive.
        (tmp_path / "syncd-demo" / "ton-then-archive" / "bye.txt").write_text("archive me\n")
        archived = tmp_path / "syncd-demo" / "archive" / "bye.txt"
        wait_until(lambda: archived.with_name("bye.txt.syncd.toml").exists(), 30, "the archive")
        assert archived.read_text() == "archive me\n"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "drop files into" in output
    assert f"then moved to {tmp_path / 'syncd-demo' / 'archive'}" in output


def test_a_second_daemon_on_the_same_state_is_refused(tmp_path):
    path = write_config(tmp_path / "config.toml", good_config(tmp_path))
    first = subprocess.Popen([sys.executable, "-m", "syncd", "run", "-c", str(path)])
    try:
        socket_path = Path(good_config(tmp_path)["daemon"]["status_socket"])
        wait_until(lambda: socket_path.exists(), 30, "the first daemon")
        second = syncd("run", "-c", str(path))
        assert second.returncode == 1
        assert "another syncd is already running" in second.stderr
        assert "pid" in ask(socket_path, {"command": "status"})
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
