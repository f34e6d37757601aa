"""What every emulator shares: OAuth checks, faults, the journal, settings, clock, the CLI."""

from __future__ import annotations

import base64
import http.client
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from syncd.sandbox import credentials

from .sandbox_client import TIMEOUT, Box, oauth

VERIFY = "/1.1/account/verify_credentials.json"
BAD_AUTH = {"errors": [{"code": 32, "message": "Could not authenticate you."}]}


# -- OAuth 1.0a (protocols.md 1, 8) ---------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "wrong-secret", "unknown-token"])
def test_bad_credentials_are_401_code_32(box: Box, auth: str | None) -> None:
    signer: Any = None
    if auth == "wrong-secret":
        signer = oauth(client_secret="not-the-secret")
    elif auth == "unknown-token":
        signer = oauth(resource_owner_key="1000000001-unknown")
    reply = box.call("GET", VERIFY, auth=signer)
    assert reply.status_code == 401
    assert reply.json() == BAD_AUTH


def test_stale_timestamp_is_135(box: Box) -> None:
    stale = box.call("GET", VERIFY, auth=oauth(timestamp=str(int(time.time()) - 301 - 5)))
    assert stale.status_code == 401
    assert stale.json()["errors"][0]["code"] == 135
    # Time passing on the server (offset) is not skew; a skewed server clock is.
    box.post("clock", {"advance": 600})
    assert box.call("GET", VERIFY).status_code == 200
    box.post("clock", {"skew": -400})
    assert box.call("GET", VERIFY).json()["errors"][0]["code"] == 135
    box.post("clock", {"skew": -200})
    assert box.call("GET", VERIFY).status_code == 200


def test_nonce_replay_is_refused(box: Box) -> None:
    request = requests.Request("GET", box.url + VERIFY, auth=oauth()).prepare()
    assert box.http.send(request, timeout=TIMEOUT).status_code == 200
    replay = box.http.send(request, timeout=TIMEOUT)
    assert (replay.status_code, replay.json()) == (401, BAD_AUTH)


def test_signature_covers_the_query(box: Box) -> None:
    """A TON client that signs the Location without its query fails (protocols.md 1)."""
    request = requests.Request("GET", box.url + VERIFY, auth=oauth()).prepare()
    request.url = f"{request.url}?include_entities=true"
    assert box.http.send(request, timeout=TIMEOUT).status_code == 401
    with_query = box.call("GET", VERIFY + "?include_entities=true")
    assert with_query.status_code == 200


def test_oauth_echo_verifies_offline(box: Box) -> None:
    from syncd.sandbox.oauth_check import AuthError, OAuthVerifier

    provider = "https://api.twitter.com/1.1/account/verify_credentials.json"
    header = requests.Request("GET", provider, auth=oauth()).prepare().headers["Authorization"]
    echo = header.decode() if isinstance(header, bytes) else header
    verifier = OAuthVerifier(time.time)
    assert verifier.verify_echo(provider, echo).screen_name == "syncd_demo"
    with pytest.raises(AuthError) as replayed:
        verifier.verify_echo(provider, echo)
    assert replayed.value.code == 32
    with pytest.raises(AuthError):
        OAuthVerifier(time.time).verify_echo(provider.replace("1.1", "1"), echo)


# -- faults ---------------------------------------------------------------------------------


def test_503_fault_with_retry_after(box: Box) -> None:
    box.fault(method="GET", path="verify_credentials", status=503, retry_after=2, count=2)
    for _ in range(2):
        reply = box.call("GET", VERIFY)
        assert (reply.status_code, reply.headers["Retry-After"]) == (503, "2")
        assert reply.json()["errors"][0]["code"] == 130
        assert "x-rate-limit-limit" in reply.headers
    assert box.call("GET", VERIFY).status_code == 200
    statuses = [(e["status"], e["fault"]) for e in box.get("requests")]
    assert statuses == [(503, 1), (503, 1), (200, None)]


def test_429_fault_sets_rate_limit_headers(box: Box) -> None:
    box.fault(path="^/1\\.1/ton/", status=429, retry_after=30)
    reply = box.ton_post(b"data")
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "30"
    assert reply.headers["x-rate-limit-remaining"] == "0"
    reset = int(reply.headers["x-rate-limit-reset"])
    assert abs(reset - (box.get("clock")["now"] + 30)) <= 2
    assert reply.json()["errors"][0]["code"] == 88


def test_custom_fault_reply_and_method_filter(box: Box) -> None:
    box.fault(method="POST", status=502, body="<html>bad gateway</html>", headers={"X-A": "b"})
    assert box.call("GET", VERIFY).status_code == 200  # GET does not match
    reply = box.ton_post(b"data")
    assert (reply.status_code, reply.text, reply.headers["X-A"]) == (
        502,
        "<html>bad gateway</html>",
        "b",
    )


def test_raw_reply_is_written_verbatim_and_the_connection_closed(box: Box) -> None:
    # "Connection: close": the sandbox closes the connection after a raw reply, and a client
    # that took it for keep-alive could send its next request before that close arrives.
    raw = b"HTTP/1.1 299 Odd\r\nX-Odd: \xff\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    box.fault(method="POST", raw_reply=base64.b64encode(raw).decode())
    reply = box.ton_post(b"data")
    assert (reply.status_code, reply.headers["X-Odd"], reply.content) == (299, "\xff", b"abc")
    box.fault(method="POST", raw_reply=base64.b64encode(b"garbage\r\n\r\n").decode())
    with pytest.raises(requests.ConnectionError):
        box.ton_post(b"data")
    assert box.call("GET", VERIFY).status_code == 200  # the next connection is served


def test_trickle_writes_the_reply_a_byte_at_a_time(box: Box) -> None:
    box.fault(path="verify", trickle_ms=20)
    started = time.monotonic()
    reply = box.call("GET", VERIFY)
    assert reply.status_code == 200 and reply.json()["screen_name"]
    assert time.monotonic() - started >= len(reply.content) * 0.02
    box.fault(path="verify", status=503, trickle_ms=1)
    assert box.call("GET", VERIFY).status_code == 503


def test_delay_and_probability(box: Box) -> None:
    box.fault(path="verify", probability=0.0, status=500)
    box.fault(path="verify", delay_ms=300)
    started = time.monotonic()
    assert box.call("GET", VERIFY).status_code == 200
    assert time.monotonic() - started >= 0.3
    (never,) = box.get("faults")
    assert (never["probability"], never["count"]) == (0.0, 1)
    assert box.call("DELETE", "/_sandbox/faults", signed=False).status_code == 200
    assert box.get("faults") == []


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"status": 503, "delay_ms": 10},
        {"status": 503, "colour": "red"},
        {"delay_ms": 10, "retry_after": 1},
        {"status": 503, "path": "("},
        {"status": 503, "probability": 2},
        {"status": 503, "count": 0},
        {"raw_reply": "not base64!"},
        {"delay_ms": 10, "trickle_ms": 5},
        {"raw_reply": "", "body": "x"},
    ],
)
def test_bad_fault_specs_are_400(box: Box, spec: dict[str, Any]) -> None:
    reply = box.call("POST", "/_sandbox/faults", signed=False, json=spec)
    assert reply.status_code == 400 and reply.json()["error"]


# -- journal, settings, clock, reset --------------------------------------------------------


def test_journal_redacts_and_clears(box: Box) -> None:
    box.ton_post(b"12345", **{"X-Verify-Credentials-Authorization": "OAuth secret"})
    (entry,) = box.get("requests")
    assert entry["headers"]["Authorization"] == "<redacted>"
    assert entry["headers"]["X-Verify-Credentials-Authorization"] == "<redacted>"
    assert (entry["method"], entry["path"], entry["status"], entry["body_len"]) == (
        "POST",
        "/1.1/ton/bucket/syncd",
        201,
        5,
    )
    assert entry["started"] <= entry["finished"]
    box.call("DELETE", "/_sandbox/requests", signed=False)
    assert box.get("requests") == []


def test_settings_merge_and_validate(box: Box) -> None:
    box.post("settings", {"ton": {"min_chunk": 1024, "session_ttl": 5}})
    ton = box.get("settings")["ton"]
    assert (ton["min_chunk"], ton["session_ttl"], ton["max_chunk"]) == (1024, 5.0, 64 * 2**20 - 1)
    bad: dict[str, Any]
    for bad in (
        {"ton": {"min_chunk": "big"}},
        {"ton": {"nope": 1}},
        {"nope": {}},
        {"ton": {"partial_chunk": "half"}},
        {"ton": {"min_chunk": 10, "max_chunk": 5}},
    ):
        reply = box.call("POST", "/_sandbox/settings", signed=False, json=bad)
        assert reply.status_code == 400, bad
    assert box.get("settings")["ton"]["min_chunk"] == 1024


def test_link_rate_paces_each_connection(box: Box) -> None:
    body = b"x" * 400_000
    started = time.monotonic()
    box.ton_post(body)
    fast = time.monotonic() - started
    box.post("settings", {"link": {"bytes_per_second": 1_000_000}})
    started = time.monotonic()
    box.ton_post(body)
    assert time.monotonic() - started >= 0.35 > fast
    assert box.get("settings")["link"] == {"bytes_per_second": 1_000_000}


def test_clock(box: Box) -> None:
    before = box.get("clock")
    moved = box.post("clock", {"advance": 3600})
    assert moved["offset"] == 3600 and moved["now"] - before["now"] >= 3600
    moved = box.post("clock", {"offset": -10, "skew": 5})
    assert (moved["offset"], moved["skew"]) == (-10, 5)
    for bad in ({"tick": 1}, {"advance": 1, "offset": 2}, {"skew": "1"}, {}):
        assert box.call("POST", "/_sandbox/clock", signed=False, json=bad).status_code == 400


def test_reset_forgets_everything(box: Box) -> None:
    box.settings(min_chunk=1024)
    box.ton_post(b"data")
    box.ton_init(5000)
    box.fault(path="never-matches", status=500)
    box.post("clock", {"advance": 100, "skew": 10})
    assert box.post("reset", {}) == {"ok": True}
    assert box.get("ton/objects") == box.get("ton/sessions") == box.get("faults") == []
    assert box.get("requests") == []
    assert box.get("settings")["ton"]["min_chunk"] == 2**20
    assert (box.get("clock")["offset"], box.get("clock")["skew"]) == (0, 0)


def test_unknown_path_and_method(box: Box) -> None:
    missing = box.call("GET", "/1.1/nothing/here.json")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == 34
    wrong = box.call("DELETE", VERIFY)
    assert (wrong.status_code, wrong.headers["Allow"]) == (405, "GET")


def test_keep_alive_serves_many_requests_on_one_connection(box: Box) -> None:
    host = box.url.removeprefix("http://")
    connection = http.client.HTTPConnection(host, timeout=TIMEOUT)
    try:
        for _ in range(3):
            connection.request("GET", "/_sandbox/clock")
            reply = connection.getresponse()
            assert reply.status == 200 and reply.getheader("Content-Length")
            reply.read()
            sock = connection.sock
        connection.request("GET", "/_sandbox/clock")
        connection.getresponse().read()
        assert connection.sock is sock
    finally:
        connection.close()


# -- the command line -----------------------------------------------------------------------


def test_banner_names_every_credential() -> None:
    from syncd.sandbox.server import banner

    shown = banner("http://127.0.0.1:8700", None)
    for name in (
        "CONSUMER_KEY",
        "CONSUMER_SECRET",
        "ACCESS_TOKEN",
        "ACCESS_TOKEN_SECRET",
        "TWITPIC_API_KEY",
        "TWITLONGER_API_KEY",
        "ONEALL_PUBLIC_KEY",
        "ONEALL_PRIVATE_KEY",
        "ONEALL_IDENTITY_TOKEN",
    ):
        assert f'"{getattr(credentials, name)}"' in shown, name


def test_main_serves_until_sigterm(tmp_path: Any) -> None:
    command = [sys.executable, "-m", "syncd.sandbox", "--listen", "127.0.0.1:0"]
    with subprocess.Popen(
        [*command, "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(process.stdout, selectors.EVENT_READ)
                assert selector.select(timeout=30), "no banner within 30 s"
            first = process.stdout.readline().decode()
            url = first.split()[4]
            assert url.startswith("http://127.0.0.1:")
            assert requests.get(url + "/_sandbox/clock", timeout=TIMEOUT).status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, process.stderr.read()
            banner = first + process.stdout.read().decode()
            assert f'consumer_key = "{credentials.CONSUMER_KEY}"' in banner
        finally:
            if process.poll() is None:
                process.kill()
