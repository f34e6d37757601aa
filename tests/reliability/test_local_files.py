"""Files others could have written are not believed: the config, `*_file` secrets, and the
folder of the status socket (as ssh refuses such keys)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from conftest import base_config

from syncd.config import load
from syncd.errors import ConfigError

NOBODY = 65534


def config_with_secret_file(tmp_path: Path) -> tuple[Path, Path]:
    secret = tmp_path / "token_secret"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o600)
    (tmp_path / "drop").mkdir(exist_ok=True)
    config = base_config(tmp_path, "http://127.0.0.1:9", [{"path": str(tmp_path / "drop")}])
    del config["accounts"]["main"]["access_token_secret"]
    config["accounts"]["main"]["access_token_secret_file"] = str(secret)
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(config))
    os.chmod(path, 0o600)
    return path, secret


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_trusted_secret_file_is_read(tmp_path):
    path, _ = config_with_secret_file(tmp_path)
    assert load(path).accounts["main"].access_token_secret == "s3cret"


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_secret_file_others_can_write_is_refused(tmp_path, mode):
    path, secret = config_with_secret_file(tmp_path)
    os.chmod(secret, mode)
    with pytest.raises(ConfigError, match=f"{secret} refused: others can write it"):
        load(path)
    shown = check(path)
    assert shown.returncode == 2 and str(secret) in shown.stderr
    assert "s3cret" not in shown.stderr


def test_a_secret_file_is_never_read_through_a_symlink(tmp_path):
    path, secret = config_with_secret_file(tmp_path)
    real = secret.with_name("elsewhere")
    secret.rename(real)
    secret.symlink_to(real)
    with pytest.raises(ConfigError, match="it is a symlink"):
        load(path)


def test_a_config_file_others_can_write_is_refused(tmp_path):
    path, _ = config_with_secret_file(tmp_path)
    os.chmod(path, 0o666)
    shown = check(path)
    assert shown.returncode == 2
    assert f"{path}: refused: others can write it (mode 0666)" in shown.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_files_another_user_owns_are_refused(tmp_path):
    path, secret = config_with_secret_file(tmp_path)
    os.chown(secret, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="belongs to another user"):
        load(path)
    os.chown(secret, 0, 0)
    os.chown(path, NOBODY, NOBODY)
    shown = check(path)
    assert shown.returncode == 2 and "belongs to another user" in shown.stderr


def test_a_status_socket_folder_others_can_write_is_refused(tmp_path, sandbox, make_daemon):
    (tmp_path / "drop").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(run, 0o777)  # anyone could put a socket of their own there first
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}]))
    daemon.start(wait=False)
    assert daemon.process.wait(60) == 1
    assert "other users could replace the status socket there" in daemon.log()
