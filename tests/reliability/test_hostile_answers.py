"""Every answer syncd reads comes from outside: random status lines, headers and bodies from
every service, random callback envelopes, a server that trickles, a proxy in the way, a
session Location elsewhere. The real daemon against the sandbox; property tests with
hypothesis (SYNCD_HYPOTHESIS=thorough runs many more examples, see tests/conftest.py)."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import itertools
import json
import os
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import requests
from conftest import SandboxClient, base_config, read_sidecar, sidecar_exists, wait_until
from hypothesis import assume, event, example, given
from hypothesis import strategies as st
from sandbox.samples import png
from test_media_server import VIDEO_ID, awaiting_video, success
from test_oneall import oneall_config

from syncd.sandbox import credentials

KEYS = ["response", "request", "status", "flag", "code", "info", "result", "data", "video_id"]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["error", "success", "123", "", "١٢٣", "12a"])
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)


def dig(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def could_complete_or_fail(envelope: Any) -> bool:
    """Whether OneAll could mean it: a video id that is a number, or an error flag (a
    broader test than the daemon's, so every example left is junk for certain)."""
    video_id = dig(envelope, "response", "result", "data", "video_id")
    numeric = isinstance(video_id, int) and not isinstance(video_id, bool)
    digits = isinstance(video_id, str) and video_id.isdigit()
    flag = dig(envelope, "response", "request", "status", "flag")
    return numeric or digits or flag == "error"


ENVELOPES = st.one_of(
    JSON,
    st.builds(lambda v: {"response": {"result": {"data": {"video_id": v}}}}, JSON),
    st.builds(lambda v: {"response": {"request": {"status": v}, "result": {}}}, JSON),
)
JUNK = st.binary(max_size=300) | st.integers(1, 2000).map(lambda n: b'{"response": [' * n)


def test_random_callback_envelopes_never_complete_a_file(tmp_path, sandbox, make_daemon):
    daemon, clip, media = awaiting_video(tmp_path, sandbox, make_daemon)
    url = media.base + media.callback_path()
    http = requests.Session()

    @given(envelope=ENVELOPES)
    def junk_json(envelope: Any) -> None:
        assume(not could_complete_or_fail(envelope))
        reply = http.post(url, data=json.dumps(envelope).encode(), timeout=10)
        assert reply.status_code == 400, (envelope, reply.status_code, reply.text)

    @given(body=JUNK)
    def junk_bytes(body: bytes) -> None:
        with contextlib.suppress(ValueError, RecursionError):
            assume(not could_complete_or_fail(json.loads(body)))
        reply = http.post(url, data=body, timeout=10)
        assert reply.status_code == 400, (body, reply.status_code, reply.text)

    junk_json()
    junk_bytes()
    counts = daemon.status()["counts"]
    assert (counts["awaiting_callback"], counts["done"], counts["failed"]) == (1, 0, 0)
    assert http.post(url, json=success(), timeout=10).status_code == 200
    daemon.wait_counts(done=1, awaiting_callback=0)
    assert read_sidecar(clip)["result"]["video_id"] == VIDEO_ID


# -- random answers from every service ---------------------------------------------------------

LATIN = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=30)
CODES = st.sampled_from([200, 201]) | st.sampled_from(
    [100, 204, 206, 301, 308, 400, 401, 404, 408, 429, 500, 503, 999]
)
STATUS_LINES = CODES.map(lambda code: f"HTTP/1.1 {code} Whatever") | LATIN
HEADER_NAMES = st.sampled_from(
    [
        "Content-Type",
        "Content-Length",
        "Transfer-Encoding",
        "Location",
        "Retry-After",
        "x-rate-limit-reset",
        "Range",
        "X-TON-Min-Chunk-Size",
        "Expires",
        "Connection",
    ]
)
HEADER_VALUES = LATIN | st.sampled_from(
    ["0", "-1", "9" * 30, "²", "1e3", "chunked", "gzip", "/1.1/ton/data/x", "http://[bad", "close"]
)
RESULT_KEYS = ["id", "url", "width", "size", "type", "tweet_content", "picture_id", "expires_in"]
RESULTS = st.dictionaries(st.sampled_from(RESULT_KEYS), SCALARS | JSON, max_size=6)
BODIES = (
    RESULTS.map(lambda d: json.dumps(d).encode())
    | RESULTS.map(lambda d: json.dumps({"response": {"result": {"data": d}}}).encode())
    | st.binary(max_size=400)
    | JSON.map(lambda v: json.dumps(v).encode())
    | st.integers(1, 2000).map(lambda n: b'{"response": ' * n)
    | st.sampled_from([b'{"response": null}', b'{"errors": null}', b'{"id": [[[]]], "url": {}}'])
)


@st.composite
def raw_answers(draw: st.DrawFn) -> bytes:
    head = [draw(STATUS_LINES)]
    head += [
        f"{n}: {v}" for n, v in draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5))
    ]
    body = draw(BODIES)
    if draw(st.booleans()):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def answer(status: int, headers: dict[str, str], body: bytes) -> bytes:
    """A well-framed answer with odd content."""
    lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers.items())]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


SERVICES = {
    # service: (fault path, file name, content maker)
    "ads": ("^/1\\.1/ton/bucket/", "file{n}.bin", lambda n: b"ton %d " % n * 50),
    "photos": ("^/2/upload", "photo{n}.png", lambda n: png(100 + n % 500, 20 + n // 500)),
    "notes": ("^/2/posts", "note{n}.txt", lambda n: b"note number %d\n" % n),
    "social": ("/picture\\.json", "logo{n}.png", lambda n: png(100 + n % 500, 30 + n // 500)),
}


def every_service_config(tmp_path: Path, sandbox: SandboxClient) -> dict[str, Any]:
    config = oneall_config(tmp_path, sandbox)
    config["daemon"].update(settle_seconds=0.1, request_timeout="10s")
    config["services"]["photos"] = {
        "type": "twitpic",
        "account": "main",
        "api_key": credentials.TWITPIC_API_KEY,
        "endpoint": sandbox.url,
    }
    config["services"]["notes"] = {
        "type": "twitlonger",
        "account": "main",
        "api_key": credentials.TWITLONGER_API_KEY,
        "endpoint": sandbox.url,
        "tweet": False,
    }
    config["watch"] = []
    for name in SERVICES:
        (tmp_path / name).mkdir(exist_ok=True)
        config["watch"].append({"path": str(tmp_path / name), "service": name})
    return config


def journal_state(tmp_path: Path, path: Path) -> tuple[str, str | None] | None:
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "journal.sqlite")) as db:
        found = db.execute(
            "SELECT state, error FROM files WHERE path=?", (os.fsencode(path),)
        ).fetchone()
    return None if found is None else (found[0], found[1])


def readable(error: str | None) -> bool:
    return (
        bool(error) and error.isprintable() and len(error) < 600 and "internal error" not in error
    )


def test_random_answers_from_every_service_leave_every_file_accounted_for(
    tmp_path, sandbox, make_daemon
):
    daemon = make_daemon(every_service_config(tmp_path, sandbox)).start()
    numbers = itertools.count(1)

    @given(service=st.sampled_from(sorted(SERVICES)), answer=raw_answers())
    @example("ads", answer(201, {"Location": "/1.1/ton/data/\u00e9?x=1"}, b""))
    @example("photos", answer(200, {}, b'{"id": 12, "url": "u", "width": Infinity, "size": "9a"}'))
    @example("notes", answer(200, {}, b'{"id": "9", "tweet_content": "t", "short_url": ["x"]}'))
    @example("social", answer(200, {}, b'{"response": {"result": {"data": {"picture_id": 7}}}}'))
    def answered(service: str, answer: bytes) -> None:
        pattern, name, content = SERVICES[service]
        n = next(numbers)
        sandbox.fault(method="POST", path=pattern, raw_reply=base64.b64encode(answer).decode())
        path = tmp_path / service / name.format(n=n)
        path.write_bytes(content(n))
        settled = ("done", "retry_wait", "failed")
        state, error = wait_until(
            lambda: (found := journal_state(tmp_path, path)) and found[0] in settled and found,
            30,
            f"{path.name} to settle after {answer[:80]!r}",
        )
        assert daemon.process.poll() is None
        assert sandbox.get("faults") == [], "the random answer was never served"
        event(f"{service}: {state}")
        if state == "done":
            sidecar = read_sidecar(path)
            assert sidecar["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert (sidecar["service"], sidecar["size"]) == (service, path.stat().st_size)
            assert all(
                isinstance(v, str | int) or hasattr(v, "year") for v in sidecar["result"].values()
            )
        else:
            assert readable(error), (state, error, answer[:200])
            assert not sidecar_exists(path)
        if state == "retry_wait":
            path.unlink()  # its retry finds it gone, and forgets it

    answered()
    assert daemon.status()["counts"]["uploading"] in (0, 1)
    assert daemon.process.poll() is None


# -- deadlines, proxies, Locations, secrets ----------------------------------------------------


def test_a_trickling_server_is_cut_off_at_the_deadline_and_the_file_retries(
    tmp_path, sandbox, make_daemon
):
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    config["daemon"]["request_timeout"] = "2s"
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(config).start()
    sandbox.fault(method="POST", path="^/1\\.1/ton/", trickle_ms=1000, count=1)
    (tmp_path / "drop" / "slow.bin").write_bytes(b"s" * 3000)
    daemon.wait_counts(done=1, timeout=30)
    first, second = [r for r in sandbox.requests() if r["path"].startswith("/1.1/ton/")]
    assert first["fault"] and not second["fault"]
    assert 2.0 <= second["started"] - first["started"] < 15  # a trickle would take minutes
    assert "no complete answer within 2 s" in daemon.log()


def test_loopback_endpoints_never_go_through_a_proxy(tmp_path, sandbox, make_daemon):
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    (tmp_path / "drop").mkdir()
    dead = "http://127.0.0.1:9"  # nothing listens: a request sent there would fail
    proxies = {"HTTP_PROXY": dead, "http_proxy": dead, "HTTPS_PROXY": dead, "ALL_PROXY": dead}
    daemon = make_daemon(config, **proxies).start()
    (tmp_path / "drop" / "a.bin").write_bytes(b"direct" * 100)
    daemon.wait_counts(done=1)


def test_a_session_location_on_another_origin_is_refused(tmp_path, sandbox, make_daemon):
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    config["services"]["ads"]["resumable_threshold"] = "1KiB"
    (tmp_path / "drop").mkdir()
    make_daemon(config).start()
    for target in ("http://evil.example/upload", sandbox.url.replace("http:", "https:") + "/x"):
        answer = (
            "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nX-TON-Min-Chunk-Size: 1024\r\n"
            f"X-TON-Max-Chunk-Size: 65536\r\nLocation: {target}\r\n\r\n"
        ).encode()
        sandbox.fault(method="POST", raw_reply=base64.b64encode(answer).decode())
        path = tmp_path / "drop" / f"{len(target)}.bin"
        path.write_bytes(os.urandom(4096))
        failed = wait_until(
            lambda p=path: (s := journal_state(tmp_path, p)) and s[0] == "failed" and s,
            30,
            "failure",
        )
        assert "ads: TON's session Location" in failed[1] and "refused" in failed[1]
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]


def test_secrets_are_trimmed_and_never_shown(tmp_path, sandbox, make_daemon):
    (tmp_path / "secret").write_text(f"\n  {credentials.ACCESS_TOKEN_SECRET}  \n")
    (tmp_path / "key").write_text(f" {credentials.TWITLONGER_API_KEY}\n")
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    account = config["accounts"]["main"]
    del account["access_token_secret"]
    account["access_token_secret_file"] = str(tmp_path / "secret")
    config["services"]["notes"] = {
        "type": "twitlonger",
        "account": "main",
        "api_key_file": str(tmp_path / "key"),
        "endpoint": sandbox.url,
        "tweet": False,
    }
    (tmp_path / "drop").mkdir()
    (tmp_path / "notes").mkdir()
    config["watch"].append({"path": str(tmp_path / "notes"), "service": "notes"})
    daemon = make_daemon(config).start()
    (tmp_path / "drop" / "a.bin").write_bytes(b"x" * 100)
    (tmp_path / "notes" / "n.txt").write_text("a note\n")
    daemon.wait_counts(done=2)
    daemon.stop()
    (tmp_path / "key").write_text(
        f"{credentials.TWITLONGER_API_KEY[:4]}\x07{credentials.TWITLONGER_API_KEY[4:]}\n"
    )
    check = daemon.cli("check")
    assert check.returncode == 2
    assert "api_key_file: holds control or non-ASCII characters" in check.stderr
    assert credentials.TWITLONGER_API_KEY[4:] not in check.stderr + check.stdout


def test_a_compressed_answer_that_would_fill_the_memory_is_read_capped(
    tmp_path, sandbox, make_daemon
):
    """A server that ignores `Accept-Encoding: identity` and answers gzip inside gzip: 3 KiB
    that unpack to 1 GiB. What is read stays within MAX_REPLY; the file is failed or retried
    with a reason, and the daemon's peak memory stays far below the bomb."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    layer = b"".join(inner.compress(bytes(1 << 20)) for _ in range(1024)) + inner.flush()
    bomb = gzip.compress(layer, 9)
    assert len(bomb) < 8192
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(config).start()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip, gzip"}
    sandbox.fault(method="POST", raw_reply=base64.b64encode(answer(201, headers, bomb)).decode())
    path = tmp_path / "drop" / "a.bin"
    path.write_bytes(b"bombed" * 100)
    state, error = wait_until(
        lambda: (s := journal_state(tmp_path, path)) and s[0] in ("failed", "retry_wait") and s,
        60,
        "the bombed upload to be failed or retried",
    )
    assert readable(error), (state, error)
    status = Path(f"/proc/{daemon.pid}/status").read_text()
    peak_kib = int(next(s for s in status.splitlines() if s.startswith("VmHWM:")).split()[1])
    assert peak_kib < 160 * 1024, f"peak {peak_kib} KiB"
    assert daemon.process.poll() is None
