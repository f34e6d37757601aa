"""The command line as an operator meets it: exit codes, one-line errors, the sandbox demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from conftest import base_config, read_sidecar, wait_until
from harness import free_port, scrape

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


def _missing_status_group(config: dict[str, Any]) -> None:
    config["daemon"]["status_group"] = "syncd-no-such-group"


def _status_socket_too_long(config: dict[str, Any]) -> None:
    config["daemon"]["status_socket"] = "/tmp/" + "s" * 120 + "/status.sock"


def _request_timeout_past_what_a_clock_holds(config: dict[str, Any]) -> None:
    config["daemon"]["request_timeout"] = 1e300  # a thread's deadline overflowed time_t


def _priority_past_64_bits(config: dict[str, Any]) -> None:
    config["watch"][0]["priority"] = 2**63  # no file was journaled: SQLite refused it


@pytest.mark.parametrize(
    ("breaks", "named"),
    [
        (_unknown_key, "[daemon] wokers"),
        (_wrong_type, "[daemon] workers"),
        (_unknown_service, "[[watch]] #1 service"),
        (_missing_watch_path, "[[watch]] #1 path"),
        (_missing_status_group, "[daemon] status_group"),
        (_status_socket_too_long, "[daemon] status_socket"),
        (_request_timeout_past_what_a_clock_holds, "[daemon] request_timeout"),
        (_priority_past_64_bits, "[[watch]] #1 priority"),
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


def _corrupt_journal(tmp_path: Path, config: dict[str, Any]) -> str:
    state = Path(config["daemon"]["state_dir"])
    state.mkdir(mode=0o700)
    (state / "journal.sqlite").write_bytes(b"not a database, whatever it is" * 100)
    return "journal.sqlite: cannot open the journal"


def _metrics_on_a_host_nobody_has(tmp_path: Path, config: dict[str, Any]) -> str:
    config["metrics"] = {"listen": "999.1.1.1:9187"}
    return "[metrics] listen"


@pytest.mark.parametrize("breaks", [_corrupt_journal, _metrics_on_a_host_nobody_has])
def test_runtime_failures_at_start_are_one_line_exit_1(tmp_path, breaks):
    config = good_config(tmp_path)
    named = breaks(tmp_path, config)
    result = syncd("run", "-c", str(write_config(tmp_path / "config.toml", config)))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("syncd: ") and named in result.stderr
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
        # Monitoring too: /metrics on a loopback port, counting what the demo did.
        metrics = f"http://{tomllib.loads(config_path.read_text())['metrics']['listen']}/metrics"
        assert metrics.startswith("http://127.0.0.1:")
        samples, _ = scrape(metrics)
        assert samples[("syncd_uploads_total", (("outcome", "done"), ("service", "ton")))] == 2
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "drop files into" in output
    assert f"then moved to {tmp_path / 'syncd-demo' / 'archive'}" in output
    assert f"metrics: {metrics}" in output


def test_run_sandbox_where_the_demo_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "syncd-demo").write_text("a file where the demo folder would go\n")
    result = syncd("run", "--sandbox", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"syncd: {tmp_path / 'syncd-demo'}: cannot set up the demo")
    assert len(result.stderr.strip().splitlines()) == 1


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


def test_clients_need_only_the_daemon_table(tmp_path, sandbox, make_daemon):
    """The operator's shell has not the service's ${CREDENTIALS_DIRECTORY} (README, systemd),
    nor need it reach a drop folder that went away: status, pause and resume still ask."""
    credentials_dir, drop = tmp_path / "credentials", tmp_path / "drop"
    credentials_dir.mkdir()
    drop.mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(drop)}])
    account = config["accounts"]["main"]
    (credentials_dir / "token_secret").write_text(account.pop("access_token_secret"))
    os.chmod(credentials_dir / "token_secret", 0o600)
    account["access_token_secret_file"] = "${CREDENTIALS_DIRECTORY}/token_secret"
    daemon = make_daemon(config, CREDENTIALS_DIRECTORY=str(credentials_dir)).start()
    drop.rmdir()
    assert "CREDENTIALS_DIRECTORY" not in os.environ
    for command in (["status"], ["pause", "ads"], ["resume"]):
        result = syncd(*command, "-c", str(daemon.config_path))
        assert result.returncode == 0, result.stderr
    shown = syncd("status", "--json", "-c", str(daemon.config_path))
    assert json.loads(shown.stdout)["pid"] == daemon.pid
    assert syncd("check", "-c", str(daemon.config_path)).returncode == 2  # check reads it all


def test_status_into_a_reader_that_went_away_is_not_an_error(tmp_path, sandbox, make_daemon):
    """`syncd status | head -1`: no traceback, no complaint at exit."""
    daemon = make_daemon(base_config(tmp_path, sandbox.url)).start()
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "syncd", "status", "--json", "-c", str(daemon.config_path)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (0, "")


def test_the_readme_test_command_needs_no_fleet_extra(tmp_path):
    """Quick start 2 installs `.[test]` only: without psycopg every test module still loads
    (the fleet's tests skip, saying why), instead of the run stopping at collection."""
    tests = Path(__file__).parent
    without_psycopg = (
        "import sys; sys.modules['psycopg'] = None; import pytest; "
        f"sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', {str(tests)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_psycopg],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]


def imported_by_a_run(tmp_path: Path, config: dict[str, Any]) -> set[str]:
    """The top-level packages `syncd run --once` imports (python -X importtime)."""
    path = write_config(tmp_path / "config.toml", config)
    result = syncd_with("-X", "importtime", "-m", "syncd", "run", "--once", "-c", str(path))
    assert result.returncode == 0, result.stderr
    lines = [line.split("|") for line in result.stderr.splitlines() if "import time:" in line]
    return {parts[-1].strip().split(".")[0] for parts in lines if len(parts) == 3}


def syncd_with(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_run_without_metrics_loads_neither_prometheus_client_nor_waitress(tmp_path):
    """Both cost start-up time (~90 ms) and are loaded only for [metrics] (or a media server)."""
    config = good_config(tmp_path)
    assert not {"prometheus_client", "waitress"} & imported_by_a_run(tmp_path, config)
    config["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    assert {"prometheus_client", "waitress"} <= imported_by_a_run(tmp_path, config)
