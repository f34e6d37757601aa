"""File names are data: none can forge a log line, a journald priority, or a terminal's
cursor, and the JSON reply and journald's fields keep every one exact."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import SCALE, base_config

from syncd.control import logs
from syncd.control.logs import log_fields, setup_logging
from syncd.control.printable import printable
from syncd.sandbox import credentials

FORGED = b"\n2026-01-01 00:00:00 ERROR forged\n<0>forged priority"
HOSTILE = [
    b"new\nline.txt",
    FORGED + b".txt",
    b"esc\x1b[2J\x1b]0;pwned\x07\x1b[1A.txt",
    b"<0>prio.txt",
    b"caf\xe9-\xff.bin",
    b"\xe2\x80\xaeevil\xe2\x80\xac-rtl.txt",
    b"tab\there\rcarriage\x7f\x9b.txt",
]
TOO_LONG = FORGED + b" \x1b[2J" + b"L" * (246 - len(FORGED) - 5) + b".bin"
"""250 bytes: a valid name whose sidecar's name (261 bytes) no file system takes."""
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")
"""What a terminal or a reader of the output would act on."""
LOG_LINE = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]+ |  )")
"""A record starts with its time and level; only a traceback's lines are indented."""


def drop_raw(folder: Path, name: bytes, data: bytes) -> bytes:
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as out:
        out.write(data)
    return path


def test_hostile_names_forge_nothing_and_stay_exact(tmp_path, sandbox, make_daemon):
    assert len(TOO_LONG) == 250
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(config).start()
    names = [n if round_ == 0 else b"%d-" % round_ + n for round_ in range(SCALE) for n in HOSTILE]
    paths = [drop_raw(tmp_path / "drop", n, b"content of %r" % n) for n in names]
    long_path = drop_raw(tmp_path / "drop", TOO_LONG, b"a name that leaves no room")
    daemon.wait_counts(done=len(paths), failed=1, timeout=120)
    for path in paths:
        assert os.path.exists(path + b".syncd.toml"), path

    # The JSON reply keeps the name exact (non-UTF-8 bytes travel as surrogate escapes).
    (failure,) = daemon.status()["failures"]
    assert os.fsencode(failure["path"]) == long_path
    assert "too long" in failure["error"] and failure["result"]["location"]

    # Every line of the log is a record's start or an indented traceback line.
    log = daemon.log_path.read_bytes()
    assert b"\x1b" not in log and b"\x07" not in log and b"\xe2\x80\xae" not in log
    for line in log.splitlines():
        assert LOG_LINE.match(line), line
    assert b"forged" in log  # the names were logged, escaped

    # `syncd status` for people: one line per item, nothing a terminal would act on.
    shown = daemon.cli("status")
    assert shown.returncode == 0, shown.stderr
    assert "too long" in shown.stdout
    assert_printed_safely(shown.stdout)
    assert "\\n2026-01-01 00:00:00 ERROR forged\\n<0>forged priority \\x1b[2J" in shown.stdout


def assert_printed_safely(output: str) -> None:
    """Each line of `output` one item, and none with anything a terminal would act on."""
    for line in output.splitlines():
        assert not UNSAFE.search(line), line
        assert not line.startswith(("2026-01-01", "<0>")), line


def test_held_files_print_escaped_under_a_service_hold(tmp_path, sandbox, make_daemon):
    """A 429 holds the whole service: its `held:` lines name the files, escaped."""
    drop = tmp_path / "drop"
    drop.mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(drop)}])
    config["services"]["ads"]["max_parallel"] = 1
    limited = f"/1.1/ton/bucket/{credentials.TON_BUCKET_TA_PARTNER}"
    sandbox.fault(method="POST", path=limited, status=429, retry_after=600, count=1)
    paths = [drop_raw(drop, name, b"held back") for name in HOSTILE]
    daemon = make_daemon(config).start()
    daemon.wait_counts(held=len(paths))
    assert [hold["service"] for hold in daemon.status()["service_holds"]] == ["ads"]

    shown = daemon.cli("status")
    assert shown.returncode == 0, shown.stderr
    assert_printed_safely(shown.stdout)
    assert "\nservices held:\n  ads until " in shown.stdout
    held = shown.stdout.split("\nheld:\n")[1].splitlines()
    for path in paths:
        assert any(line.startswith(f"  {printable(os.fsdecode(path))} (ads): ") for line in held)


def test_printable_escapes_what_a_terminal_or_a_log_would_act_on():
    assert printable("a\nb") == "a\\nb"
    assert printable("\x1b[2J\x07") == "\\x1b[2J\\x07"
    assert printable(os.fsdecode(b"caf\xe9")) == "caf\\xe9"
    assert printable("\u202eevil") == "\\u202eevil"
    assert printable("back\\slash") == "back\\\\slash"
    assert printable("plain ünïcode ✓") == "plain ünïcode ✓"


@pytest.fixture
def restore_logging() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def journal_stream_of_stderr() -> str:
    st = os.fstat(2)
    return f"{st.st_dev}:{st.st_ino}"


@pytest.mark.usefixtures("restore_logging")
def test_stderr_to_journald_without_systemd_python_cannot_forge_a_priority(monkeypatch, capsys):
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of_stderr())
    monkeypatch.setattr(logs, "_journal_module", lambda: None)
    setup_logging("info")
    log = logging.getLogger("syncd.test")
    log.info("uploaded %s", os.fsdecode(FORGED))
    try:
        raise ValueError(os.fsdecode(FORGED))
    except ValueError:
        log.exception("failed on %s", "x\n<0>y")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "<6>INFO uploaded \\n2026-01-01 00:00:00 ERROR forged\\n<0>forged priority"
    assert lines[1] == "<3>ERROR failed on x\\n<0>y"
    # A traceback's lines carry the record's own priority, indented: never a forged one.
    assert all(re.match(r"<3>  ", line) for line in lines[2:]), lines


@pytest.mark.usefixtures("restore_logging")
def test_journald_message_escaped_and_fields_exact(monkeypatch):
    journal = pytest.importorskip("systemd.journal")
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of_stderr())
    setup_logging("info")
    (handler,) = [h for h in logging.getLogger().handlers if h.name == logs.HANDLER_NAME]
    assert isinstance(handler, journal.JournalHandler)
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(handler, "send", lambda message, /, **f: sent.append((message, f)))
    name = "/srv/drop/" + os.fsdecode(FORGED) + "\x1b[2J.txt"
    logging.getLogger("syncd.test").info("uploaded %s", name, extra=log_fields(name, "ads"))
    ((message, fields),) = sent
    assert "\n" not in message and "\x1b" not in message
    assert message == "uploaded " + printable(name)
    assert fields["SYNCD_PATH"] == name
    assert json.dumps(fields["SYNCD_PATH"]) == json.dumps(name)
