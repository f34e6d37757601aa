"""Fleet mode's configuration: the [journal] table and polling from 1 s."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from syncd.config import load
from syncd.errors import ConfigError

BASE = """
[accounts.main]
consumer_key = "ck"
consumer_secret_file = "secret"
access_token = "at"
access_token_secret_file = "secret"

[services.ads]
type = "ton"
account = "main"
bucket = "b"

[[watch]]
path = "drop"
service = "ads"
poll_interval = "1s"
"""
DB_PASSWORD = "db-Secret-71f"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "drop").mkdir(exist_ok=True)
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "db_password").write_text(DB_PASSWORD + "\n")
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    path.chmod(0o600)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert DB_PASSWORD not in message
    return message


def test_journal_table_with_defaults_and_a_password_file(tmp_path):
    text = BASE + '[journal]\nurl = "postgresql://syncd@db.example.com/syncd"\n'
    journal = load(write(tmp_path, text + 'password_file = "db_password"\n')).journal
    assert journal is not None
    assert journal.url == "postgresql://syncd@db.example.com/syncd"
    assert journal.password == DB_PASSWORD
    assert journal.host_id == socket.gethostname()
    assert journal.lease == 30.0
    assert DB_PASSWORD not in repr(journal)
    given = load(write(tmp_path, text + 'host_id = "ingest-1"\nlease = "3s"\n')).journal
    assert given is not None and (given.host_id, given.lease) == ("ingest-1", 3.0)


def test_without_a_journal_table_polling_stays_30s_or_more(tmp_path):
    path = write(tmp_path, BASE)
    assert refusal(path) == f"{path}: [[watch]] #1 poll_interval: must be 0 (inotify) or >= 30s"


def test_fleet_mode_polls_from_one_second(tmp_path):
    url = '[journal]\nurl = "postgresql://syncd@db/syncd"\n'
    assert load(write(tmp_path, BASE + url)).watches[0].poll_interval == 1.0
    path = write(tmp_path, BASE.replace('"1s"', '"500ms"') + url)
    assert refusal(path) == f"{path}: [[watch]] #1 poll_interval: must be 0 (inotify) or >= 1s"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('host_id = "ingest-1"', "[journal] url: required key is missing"),
        ('url = "https://db/syncd"', "[journal] url: expected a URL such as postgresql://"),
        ('url = "postgresql://db"', "[journal] url: expected a URL such as postgresql://"),
        (
            f'url = "postgresql://syncd:{DB_PASSWORD}@db/syncd"',
            "[journal] url: the password must not be in the URL; use password_file",
        ),
        ('url = "postgresql://db/x"\nhost_id = "a b"', "[journal] host_id: expected 1 to 64"),
        ('url = "postgresql://db/x"\nlease = "500ms"', "[journal] lease: must be at least 1s"),
        ('url = "postgresql://db/x"\nport = 5432', "[journal] port: unknown key"),
        (
            'url = "postgresql://db/x"\npassword_file = "missing"',
            "[journal] password_file: cannot read",
        ),
    ],
)
def test_journal_refusals_name_the_key(tmp_path, lines, message):
    path = write(tmp_path, f"{BASE}[journal]\n{lines}\n")
    assert refusal(path).startswith(f"{path}: {message}")


def test_an_inline_password_in_a_readable_file_is_refused(tmp_path):
    inline = f'[journal]\nurl = "postgresql://db/x"\npassword = "{DB_PASSWORD}"\n'
    path = write(tmp_path, BASE + inline)
    path.chmod(0o644)
    assert refusal(path).startswith(f"{path}: [journal] password: secret given inline")
