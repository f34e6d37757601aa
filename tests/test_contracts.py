"""The contracts of DESIGN.md as an outside tester drives them: config values, the status
socket and the command line, each checked where no other test pinned it down."""

from __future__ import annotations

import grp
import importlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import base_config
from test_cli import syncd, write_config

from syncd.control.status import ask
from syncd.errors import PermanentError
from syncd.files import locate
from syncd.services.twitlonger import parse_post
from syncd.work.actions import Skip, _check_sidecar


def test_status_json_prints_the_reply_as_is(tmp_path, sandbox, make_daemon):
    """One line, as the daemon sent it: a script may read it line by line."""
    daemon = make_daemon(base_config(tmp_path, sandbox.url)).start()
    shown = syncd("status", "--json", "-c", str(daemon.config_path))
    assert shown.returncode == 0, shown.stderr
    reply = json.loads(shown.stdout)
    assert shown.stdout == json.dumps(reply) + "\n"
    assert list(reply) == list(ask(daemon.socket, {"command": "status"}))


def test_status_group_can_reach_the_socket_in_a_folder_syncd_makes(tmp_path, sandbox, make_daemon):
    """0660 is of no use behind a folder only we may enter: the folder syncd makes for the
    socket lets the group pass (0710), not list."""
    group = grp.getgrgid(os.getgid())
    daemon = make_daemon(base_config(tmp_path, sandbox.url, status_group=group.gr_name)).start()
    folder = daemon.socket.parent.stat()
    assert (stat.S_IMODE(folder.st_mode), folder.st_gid) == (0o710, group.gr_gid)
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o660


@pytest.mark.parametrize(
    "command",
    ["run", "status", "retry", "pause", "resume", "restore", "check", "sandbox", "journal copy"],
)
def test_every_command_takes_config(command):
    """DESIGN.md, "CLI": `...; all take -c/--config`."""
    shown = syncd(*command.split(), "--help")
    assert shown.returncode == 0, shown.stderr
    assert "-c CONFIG, --config CONFIG" in shown.stdout


def test_a_request_without_its_newline_is_answered(tmp_path, sandbox, make_daemon):
    """A client that sends the JSON object and waits, without "\\n" or closing its side."""
    daemon = make_daemon(base_config(tmp_path, sandbox.url)).start()
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(3)
        client.connect(str(daemon.socket))
        client.sendall(json.dumps({"command": "status"}).encode())
        reply = b""
        while piece := client.recv(65536):
            reply += piece
    assert json.loads(reply)["pid"] == daemon.pid
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1


HOSTILE_TOML = {
    "nested": "a = " + "[" * 5000 + "]" * 5000 + "\n",
    "long number": "[daemon]\nworkers = " + "9" * 5000 + "\n",
}


@pytest.mark.parametrize("text", HOSTILE_TOML.values(), ids=HOSTILE_TOML.keys())
def test_a_config_python_cannot_read_is_one_line_exit_2(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    shown = syncd("check", "-c", str(path))
    assert shown.returncode == 2
    assert shown.stderr.startswith(f"syncd: {path}: invalid TOML: ")
    assert len(shown.stderr.splitlines()) == 1


@pytest.mark.parametrize("text", HOSTILE_TOML.values(), ids=HOSTILE_TOML.keys())
def test_front_matter_python_cannot_read_fails_that_file(text):
    with pytest.raises(PermanentError, match="front matter is not valid TOML"):
        parse_post(f"+++\n{text}+++\nhello\n".encode(), "note.txt")


@pytest.mark.parametrize("text", HOSTILE_TOML.values(), ids=HOSTILE_TOML.keys())
def test_a_sidecar_python_cannot_read_is_not_this_content(tmp_path, text):
    """archive / delete read the sidecar back before acting: a hostile one is a skip."""
    (tmp_path / "file.bin").write_bytes(b"x")
    (tmp_path / "file.bin.syncd.toml").write_text(text)
    with locate(tmp_path, tmp_path / "file.bin") as place, pytest.raises(Skip):
        _check_sidecar(place, "0" * 64)


@contextmanager
def answering(path: Path, reply: dict[str, Any]) -> Iterator[list[bytes]]:
    """A stand-in daemon on `path` giving every client `reply`; yields the requests."""
    path.parent.mkdir(exist_ok=True)
    requests: list[bytes] = []
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()

        def serve() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:  # closed: the test is over
                    return
                with conn:
                    requests.append(conn.recv(65536))
                    conn.sendall(json.dumps(reply).encode() + b"\n")

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            yield requests
        finally:
            server.shutdown(socket.SHUT_RDWR)
            server.close()
            thread.join(30)


def test_status_that_the_daemon_cannot_give_exits_1(tmp_path):
    """A daemon whose journal fails answers {"error": ...}: printed, and exit 1, not 0."""
    config = base_config(tmp_path, "http://127.0.0.1:9")
    path = write_config(tmp_path / "config.toml", config)
    reply = {"error": "journal: disk I/O error"}
    with answering(Path(config["daemon"]["status_socket"]), reply):
        shown = syncd("status", "--json", "-c", str(path))
        plain = syncd("status", "-c", str(path))
    assert (shown.returncode, shown.stdout) == (1, json.dumps(reply) + "\n")
    assert plain.returncode == 1 and "disk I/O error" in plain.stdout


def test_status_of_the_config_named_never_answers_for_another_daemon(tmp_path, monkeypatch, capsys):
    """With -c, no daemon there is exit 3, even when the system service answers."""
    cli_main = importlib.import_module("syncd.cli.main")  # syncd.cli.main is also a function
    system = tmp_path / "system" / "status.sock"
    monkeypatch.setattr(cli_main, "SYSTEM_SOCKET", system)
    path = write_config(tmp_path / "config.toml", base_config(tmp_path, "http://127.0.0.1:9"))
    with answering(system, {"pid": 1}) as asked:
        assert cli_main.main(["status", "--json", "-c", str(path)]) == 3
    assert asked == []
    assert "syncd is not running" in capsys.readouterr().err


def test_retry_takes_a_path_through_the_symlink_the_config_names(tmp_path, sandbox, make_daemon):
    """A watch's path is resolved; `syncd retry` resolves the operator's path the same way."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "link")}]))
    daemon.start()
    (tmp_path / "real" / "linked.txt").write_text("two names")
    os.link(tmp_path / "real" / "linked.txt", tmp_path / "other-name.txt")  # refused: failed
    daemon.wait_counts(failed=1)
    retried = daemon.cli("retry", str(tmp_path / "link" / "linked.txt"))
    assert (retried.returncode, retried.stdout, retried.stderr) == (0, "1 files queued again\n", "")


def test_config_option_expands_a_tilde_the_shell_left(tmp_path):
    (tmp_path / "config.toml").write_text("")
    shown = subprocess.run(
        [sys.executable, "-m", "syncd", "check", "--config=~/config.toml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"{tmp_path / 'config.toml'}: ok")


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_watch_that_would_upload_the_journal_is_refused(tmp_path, command):
    """It would upload journal.sqlite again at every change, for ever."""
    (tmp_path / "drop").mkdir()
    config = base_config(tmp_path, "http://127.0.0.1:9", [{"path": str(tmp_path / "drop")}])
    config["daemon"]["state_dir"] = str(tmp_path / "drop" / "state")
    path = write_config(tmp_path / "config.toml", config)
    shown = syncd(command, "-c", str(path))
    assert shown.returncode == 2
    assert shown.stderr == (
        f"syncd: {path}: [daemon] state_dir: {tmp_path / 'drop' / 'state'} is inside the watch"
        f" {tmp_path / 'drop'}, which would upload journal.sqlite\n"
    )
    assert not (tmp_path / "drop" / "state").exists()


def test_a_state_dir_in_a_dot_folder_of_a_watch_is_fine(tmp_path):
    """Watching a home folder: the default state dir, ~/.local/state/syncd, is ignored."""
    (tmp_path / "home").mkdir()
    config = base_config(tmp_path, "http://127.0.0.1:9", [{"path": str(tmp_path / "home")}])
    config["daemon"]["state_dir"] = str(tmp_path / "home" / ".local" / "state" / "syncd")
    path = write_config(tmp_path / "config.toml", config)
    shown = syncd("check", "-c", str(path))
    assert shown.returncode == 0, shown.stderr


def test_a_watch_that_would_upload_the_config_file_is_refused(tmp_path):
    """The config holds secrets: never uploaded, even when it lies in a drop folder."""
    (tmp_path / "other").mkdir()
    watches = [{"path": str(tmp_path / "other")}, {"path": str(tmp_path)}]
    config = base_config(tmp_path, "http://127.0.0.1:9", watches)
    config["daemon"]["state_dir"] = str(tmp_path / ".state")
    path = write_config(tmp_path / "config.toml", config)
    shown = syncd("check", "-c", str(path))
    assert shown.returncode == 2
    assert shown.stderr == (
        f"syncd: {path}: [[watch]] #2 path: {tmp_path} holds this file, which it would upload\n"
    )


def test_a_watch_that_would_upload_a_secret_file_is_refused(tmp_path):
    (tmp_path / "drop").mkdir()
    secret = tmp_path / "drop" / "token_secret"
    config = base_config(tmp_path, "http://127.0.0.1:9", [{"path": str(tmp_path / "drop")}])
    secret.write_text(config["accounts"]["main"].pop("access_token_secret"))
    config["accounts"]["main"]["access_token_secret_file"] = str(secret)
    shown = syncd("check", "-c", str(write_config(tmp_path / "config.toml", config)))
    assert shown.returncode == 2
    assert shown.stderr.endswith(
        f": [[watch]] #1 path: {tmp_path / 'drop'} holds {secret}"
        " ([accounts.main] access_token_secret_file), which it would upload\n"
    )


def test_config_option_before_the_command(tmp_path):
    """`syncd -c FILE check` as well as `syncd check -c FILE`."""
    (tmp_path / "config.toml").write_text("")
    for argv in (
        ["-c", "config.toml", "check"],
        ["--config", "none.toml", "check", "-c", "config.toml"],
    ):
        shown = syncd(*argv, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"{tmp_path / 'config.toml'}: ok")


def test_a_refusal_is_one_line_whatever_the_value_holds(tmp_path):
    config = base_config(tmp_path, "http://127.0.0.1:9", [{"path": "/nope\nERROR forged"}])
    shown = syncd("check", "-c", str(write_config(tmp_path / "config.toml", config)))
    assert shown.returncode == 2
    assert shown.stderr.endswith(": [[watch]] #1 path: /nope\\nERROR forged does not exist\n")
    assert len(shown.stderr.splitlines()) == 1
