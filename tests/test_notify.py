"""syncd.notify and syncd.logs against real sockets: what systemd would receive and pass.

Every notify test runs over both transports, the built-in protocol (always) and
systemd-python's `systemd.daemon.notify` (skipped when that extra is not installed).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import syncd
from syncd.control import logs
from syncd.control.heartbeat import FRESH, JOURNAL_SLOW, Heartbeat
from syncd.control.logs import log_fields, setup_logging
from syncd.control.notify import Notifier, listen_fds
from syncd.journal.patience import Calls

WAIT = 5.0
"""Upper bound on any single wait for a datagram, connection or child process."""

REPO = Path(syncd.__file__).resolve().parents[1]


def _has_systemd_python() -> bool:
    try:
        importlib.import_module("systemd.daemon")
        importlib.import_module("systemd.journal")
    except ImportError:
        return False
    return True


HAS_SYSTEMD_PYTHON = _has_systemd_python()


@pytest.fixture(params=["fallback", "systemd-python"])
def use_systemd_python(request: pytest.FixtureRequest) -> bool:
    if request.param == "systemd-python" and not HAS_SYSTEMD_PYTHON:
        pytest.skip("systemd-python is not installed")
    return bool(request.param == "systemd-python")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests may run under systemd themselves: start from no notify environment."""
    for name in (
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "JOURNAL_STREAM",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    """A bound datagram socket named by $NOTIFY_SOCKET (a short path: sun_path has 108 bytes)."""
    path = tmp_path_factory.mktemp("n") / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(WAIT)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.fixture
def abstract_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket in the abstract namespace, named `@...` as systemd does."""
    name = f"syncd-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(WAIT)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def assert_nothing_waiting(sock: socket.socket) -> None:
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    sock.settimeout(WAIT)


# --- Notifier -------------------------------------------------------------------------------


def test_messages(receiver: socket.socket, use_systemd_python: bool) -> None:
    notifier = Notifier.from_env(use_systemd_python=use_systemd_python)
    assert notifier.enabled
    assert notifier.uses_systemd_python is use_systemd_python

    notifier.ready()
    assert received(receiver) == "READY=1"
    notifier.status("3 folders, 2 uploading")
    assert received(receiver) == "STATUS=3 folders, 2 uploading"
    notifier.watchdog()
    assert received(receiver) == "WATCHDOG=1"
    notifier.stopping()
    assert received(receiver) == "STOPPING=1"
    assert_nothing_waiting(receiver)


def test_abstract_socket(abstract_receiver: socket.socket, use_systemd_python: bool) -> None:
    Notifier.from_env(use_systemd_python=use_systemd_python).ready()
    assert received(abstract_receiver) == "READY=1"


def test_status_is_not_repeated_and_stays_one_line(
    receiver: socket.socket, use_systemd_python: bool
) -> None:
    notifier = Notifier.from_env(use_systemd_python=use_systemd_python)
    notifier.status("idle")
    notifier.status("idle")
    notifier.status("failed: a\nSTOPPING=1")
    notifier.status("idle")
    assert received(receiver) == "STATUS=idle"
    assert received(receiver) == "STATUS=failed: a STOPPING=1"
    assert received(receiver) == "STATUS=idle"
    assert_nothing_waiting(receiver)


def test_reloading_carries_monotonic_usec_in_the_same_datagram(
    receiver: socket.socket, use_systemd_python: bool
) -> None:
    notifier = Notifier.from_env(use_systemd_python=use_systemd_python)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    lines = received(receiver).split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert len(lines) == 2


def test_without_notify_socket_everything_is_a_no_op(use_systemd_python: bool) -> None:
    notifier = Notifier.from_env(use_systemd_python=use_systemd_python)
    assert not notifier.enabled
    notifier.ready()
    notifier.status("x")
    notifier.reloading()
    notifier.watchdog()
    notifier.stopping()


@pytest.mark.skipif(not HAS_SYSTEMD_PYTHON, reason="systemd-python is not installed")
@pytest.mark.parametrize("socket_set", [False, True])
def test_systemd_python_is_loaded_only_when_there_is_someone_to_notify(socket_set: bool) -> None:
    """Outside a Type=notify unit a start does not pay for importing it."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    if socket_set:
        env["NOTIFY_SOCKET"] = "/run/nobody-listens"
    probe = (
        "import sys; from syncd.control.notify import Notifier; n = Notifier.from_env();"
        " print('systemd.daemon' in sys.modules, n.uses_systemd_python)"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=WAIT * 6
    )
    assert found.stdout.split() == [str(socket_set)] * 2, found.stderr


def test_a_missing_receiver_does_not_raise(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    use_systemd_python: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody.sock"))
    notifier = Notifier.from_env(use_systemd_python=use_systemd_python)
    with caplog.at_level(logging.DEBUG, logger="syncd.control.notify"):
        notifier.ready()
        notifier.status("a")
    assert "READY=1" in caplog.text
    # Not delivered, so not remembered: the same status is tried again.
    with caplog.at_level(logging.DEBUG, logger="syncd.control.notify"):
        caplog.clear()
        notifier.status("a")
    assert "STATUS=a" in caplog.text


def test_an_unsupported_address_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    Notifier.from_env(use_systemd_python=False).ready()


def test_a_stalled_receiver_does_not_block_for_long(receiver: socket.socket) -> None:
    """Nobody reads `receiver`: once its queue is full a send gives up after SEND_TIMEOUT."""
    notifier = Notifier.from_env(use_systemd_python=False)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        start = time.monotonic()
        notifier.watchdog()
        if time.monotonic() - start > 0.5:
            break
    else:
        pytest.fail("the receiver's queue never filled")
    assert time.monotonic() - start < 2.0


def test_insisting_on_systemd_python_without_it_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("syncd.control.notify._systemd_daemon", lambda: None)
    with pytest.raises(ImportError):
        Notifier("/run/x", use_systemd_python=True)
    assert not Notifier("/run/x").uses_systemd_python


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("2000000", None, 1.0),
        ("2000000", "self", 1.0),
        ("2000000", "other", None),
        ("30000000", None, 15.0),
        (None, None, None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    receiver: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    usec: str | None,
    pid: str | None,
    expected: float | None,
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() if pid == "self" else os.getppid()))
    assert Notifier.from_env(use_systemd_python=False).watchdog_interval == expected


def test_watchdog_interval_needs_a_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    assert Notifier.from_env().watchdog_interval is None


def test_the_heartbeat_pings_while_the_main_loop_turns_or_waits_on_the_journal(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pings while the main loop's turns are recent and healthy, or while it waits on a
    journal call (a hung database: a restart would not help); none while it is stuck
    anywhere else (a hang of its own: systemd's restart is the cure) or unhealthy."""
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    notifier = Notifier.from_env(use_systemd_python=False)
    calls = Calls()
    heartbeat = Heartbeat(notifier, calls)  # built here: this thread is its main loop
    heartbeat.start()
    try:
        for _ in range(3):
            heartbeat.turned(True)
            assert received(receiver) == "WATCHDOG=1"
        time.sleep(FRESH * 0.2)  # no turn since: stuck, but not on the journal
        assert_silent(receiver, 0.5)
        assert calls.begin()  # now waiting on a journal call that does not end
        assert received(receiver) == "WATCHDOG=1"
        assert received(receiver) == "WATCHDOG=1"
        calls.end()
        heartbeat.turned(False)  # a part stopped
        assert_silent(receiver, 0.5)
    finally:
        heartbeat.stop()


def test_the_heartbeat_says_when_a_journal_call_has_waited_too_long(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    notifier = Notifier.from_env(use_systemd_python=False)
    calls = Calls()
    heartbeat = Heartbeat(notifier, calls)
    ended = threading.Event()

    def waiting_on_the_journal() -> None:
        calls.begin()
        ended.wait(JOURNAL_SLOW + 5)
        calls.end()

    waiting = threading.Thread(target=waiting_on_the_journal)
    waiting.start()
    heartbeat.start()
    try:
        deadline = time.monotonic() + JOURNAL_SLOW + 3
        message = ""
        while not message.startswith("STATUS=") and time.monotonic() < deadline:
            message = received(receiver)  # WATCHDOG=1 pings come between
        assert message.startswith("STATUS=degraded: journal not answering for "), message
        assert heartbeat.turned(True)  # the main loop then says what it has to say again
        assert not heartbeat.turned(True)
    finally:
        heartbeat.stop()
        ended.set()
        waiting.join()


def assert_silent(sock: socket.socket, seconds: float) -> None:
    """Nothing more arrives within `seconds`, once what came already is read."""
    sock.settimeout(0.05)
    try:
        while True:
            sock.recv(4096)
    except TimeoutError:
        pass
    sock.settimeout(seconds)
    try:
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    finally:
        sock.settimeout(WAIT)


# --- listen_fds -----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import fcntl, json, os, sys
    from syncd.control.notify import listen_fds

    sources, fdnames, pid, wanted = json.loads(sys.argv[1])
    # Put the inherited sockets at 3, 4, ... as systemd does, via high numbers so that no
    # source is overwritten before it is moved.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]
    for fd in sources:
        os.close(fd)
    for i, fd in enumerate(high):
        try:
            os.fstat(3 + i)
        except OSError:
            pass
        else:
            sys.exit(f"fd {3 + i} is already in use")
        os.dup2(fd, 3 + i)
        os.close(fd)
    os.environ["LISTEN_PID"] = str(os.getpid() if pid == "self" else 1)
    os.environ["LISTEN_FDS"] = str(len(sources))
    if fdnames is not None:
        os.environ["LISTEN_FDNAMES"] = fdnames
    sock = listen_fds(wanted)
    report = {
        "fd": None if sock is None else sock.fileno(),
        "env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
        "cloexec": [not os.get_inheritable(3 + i) for i in range(len(sources))],
    }
    if sock is not None:
        conn, _ = sock.accept()
        with conn:
            conn.sendall(b"hello from %d" % sock.fileno())
    print(json.dumps(report))
    """
)


def run_child(args: list[Any], pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        pass_fds=pass_fds,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        check=False,
    )


@pytest.fixture
def listeners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[socket.socket]]:
    """Two listening Unix stream sockets, each with one client connection queued."""
    folder = tmp_path_factory.mktemp("l")
    socks: list[socket.socket] = []
    try:
        for i in range(2):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(listener)
            listener.bind(str(folder / f"{i}.sock"))
            listener.listen()
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(client)
            client.settimeout(WAIT)
            client.connect(str(folder / f"{i}.sock"))
        yield socks
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize(
    ("count", "fdnames", "wanted", "picked"),
    [
        (1, "status", "status", 0),
        (1, None, "status", 0),
        (2, "other:status", "status", 1),
        (2, "status:other", "status", 0),
        (1, "other", "status", None),
        (2, None, "status", None),
    ],
)
def test_listen_fds(
    listeners: list[socket.socket],
    count: int,
    fdnames: str | None,
    wanted: str,
    picked: int | None,
) -> None:
    sources = [listeners[0].fileno(), listeners[2].fileno()][:count]
    child = run_child([sources, fdnames, "self", wanted], pass_fds=tuple(sources))
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["env"] == []
    assert report["cloexec"] == [True] * count
    if picked is None:
        assert report["fd"] is None
    else:
        assert report["fd"] == 3 + picked
        # The socket handed over is the listener: the client queued on it is answered.
        assert listeners[2 * picked + 1].recv(64) == b"hello from %d" % (3 + picked)


def test_listen_fds_ignores_sockets_meant_for_another_process(
    listeners: list[socket.socket],
) -> None:
    source = listeners[0].fileno()
    child = run_child([[source], "status", "parent", "status"], pass_fds=(source,))
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["fd"] is None
    assert report["env"] == []


def test_listen_fds_without_activation_is_none() -> None:
    assert listen_fds("status") is None


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate missing"
)
def test_listen_fds_under_systemd_socket_activate(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The real tool systemd ships sets up fd 3 and the LISTEN_* variables."""
    path = tmp_path_factory.mktemp("a") / "status.sock"
    script = (
        "from syncd.control.notify import listen_fds\n"
        "sock = listen_fds('status')\n"
        "conn, _ = sock.accept()\n"
        "conn.sendall(b'fd %d' % sock.fileno())\n"
        "conn.close()\n"
    )
    command = ["systemd-socket-activate", "-l", str(path), "--fdname=status"]
    with subprocess.Popen(
        [*command, sys.executable, "-c", script],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as activator:
        try:
            deadline = time.monotonic() + WAIT
            while not path.exists():
                assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
                assert activator.poll() is None, activator.stderr
                time.sleep(0.01)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(WAIT)
                client.connect(str(path))
                assert client.recv(64) == b"fd 3"
            assert activator.wait(timeout=WAIT) == 0
        finally:
            activator.kill()


# --- logs -----------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LOGGERS}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if h.name == logs.HANDLER_NAME]


def journal_stream_of_stderr() -> str:
    st = os.fstat(2)
    return f"{st.st_dev}:{st.st_ino}"


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug")
    setup_logging("info")
    assert len(ours()) == 1
    assert logging.getLogger().level == logging.INFO
    assert logging.getLogger("urllib3").level == logging.WARNING

    logging.getLogger("syncd.test").info("uploaded %s", "a.jpg")
    logging.getLogger("syncd.test").debug("not shown")
    err = capsys.readouterr().err
    date, clock, rest = err.split(" ", 2)
    time.strptime(f"{date} {clock}", "%Y-%m-%d %H:%M:%S")
    assert rest == "INFO uploaded a.jpg\n"


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_keeps_quiet_loggers_at_least_as_quiet_as_asked() -> None:
    setup_logging("error")
    assert logging.getLogger("urllib3").level == logging.ERROR
    assert logging.getLogger("oauthlib").level == logging.ERROR


@pytest.mark.usefixtures("restore_logging")
def test_setup_logging_refuses_an_unknown_level() -> None:
    with pytest.raises(ValueError, match="loud"):
        setup_logging("loud")


@pytest.mark.usefixtures("restore_logging")
def test_a_journal_variable_that_is_not_our_stderr_is_ignored(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    setup_logging("info")
    logging.getLogger("syncd.test").warning("x")
    assert capsys.readouterr().err.endswith(" WARNING x\n")


@pytest.mark.usefixtures("restore_logging")
def test_stderr_to_journal_without_systemd_python_carries_the_priority(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of_stderr())
    monkeypatch.setattr(logs, "_journal_module", lambda: None)
    setup_logging("debug")
    log = logging.getLogger("syncd.test")
    log.error("e")
    log.warning("w")
    log.info("i")
    log.debug("d")
    assert capsys.readouterr().err == "<3>ERROR e\n<4>WARNING w\n<6>INFO i\n<7>DEBUG d\n"


@pytest.mark.skipif(not HAS_SYSTEMD_PYTHON, reason="systemd-python is not installed")
@pytest.mark.usefixtures("restore_logging")
def test_journald_with_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    from systemd.journal import JournalHandler

    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of_stderr())
    setup_logging("info")
    (handler,) = ours()
    assert isinstance(handler, JournalHandler)
    sent: list[tuple[str, dict[str, Any]]] = []
    # Positional-only: the handler passes every record attribute, `msg` included, by keyword.
    monkeypatch.setattr(
        handler, "send", lambda message, /, **fields: sent.append((message, fields))
    )

    logging.getLogger("syncd.test").info(
        "uploaded", extra=log_fields(Path("/srv/drop/a.jpg"), "photos", "done")
    )
    ((message, fields),) = sent
    assert message == "uploaded"
    assert fields["SYSLOG_IDENTIFIER"] == "syncd"
    assert fields["SYNCD_PATH"] == "/srv/drop/a.jpg"
    assert fields["SYNCD_SERVICE"] == "photos"
    assert fields["SYNCD_STATE"] == "done"
    assert fields["PRIORITY"] == "6"


def test_log_fields() -> None:
    assert log_fields() == {}
    assert log_fields("/a", service="notes") == {"SYNCD_PATH": "/a", "SYNCD_SERVICE": "notes"}
    assert log_fields(state="failed") == {"SYNCD_STATE": "failed"}
    # Not UTF-8: kept readable and encodable, the odd byte escaped.
    assert log_fields(b"/srv/caf\xe9.txt") == {"SYNCD_PATH": "/srv/caf\\xe9.txt"}
    assert log_fields(Path(os.fsdecode(b"/x/\xff"))) == {"SYNCD_PATH": "/x/\\xff"}
