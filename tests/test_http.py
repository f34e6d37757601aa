"""What syncd reads from any HTTP answer is parsed totally: Retry-After and
x-rate-limit-reset strictly and capped, error bodies of any shape, nesting and encoding."""

from __future__ import annotations

import base64
import email.utils
import json
import select
import socket
import socketserver
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from urllib3 import HTTPHeaderDict as CaseInsensitiveDict

import syncd
from syncd.errors import PermanentError, RetryableError
from syncd.services.http import (
    Reply,
    ServiceHttp,
    error_text,
    raise_for,
    retry_after_of,
    text_of,
)

NOW = 1_800_000_000.0


def reply(status: int, body: bytes, **headers: str) -> Reply:
    return Reply(status, CaseInsensitiveDict(headers), body)


@pytest.mark.parametrize(
    ("headers", "rate_limited", "expected"),
    [
        ({"Retry-After": "120"}, False, 120.0),
        ({"Retry-After": " 7 "}, False, 7.0),
        ({"Retry-After": "9" * 400}, False, 3600.0),  # once float("inf")
        ({"Retry-After": "²"}, False, None),  # once ValueError: "²".isdigit() is True
        ({"Retry-After": "-5"}, False, None),
        ({"Retry-After": "1e3"}, False, None),
        ({"Retry-After": "Mon, 32 Foo 99999 99:99:99 GMT"}, False, None),
        ({"Retry-After": email.utils.formatdate(NOW + 90, usegmt=True)}, False, 90.0),
        ({"Retry-After": email.utils.formatdate(NOW + 10**7, usegmt=True)}, False, 3600.0),
        ({"Retry-After": email.utils.formatdate(NOW - 90, usegmt=True)}, False, 0.0),
        ({"x-rate-limit-reset": str(int(NOW) + 30)}, True, 30.0),
        ({"x-rate-limit-reset": str(int(NOW) + 30)}, False, None),
        ({"x-rate-limit-reset": "³"}, True, None),
        ({"x-rate-limit-reset": "9" * 5000}, True, 3600.0),
        ({"Retry-After": "junk", "x-rate-limit-reset": str(int(NOW) + 5)}, True, 5.0),
    ],
)
def test_retry_after_is_strict_and_capped(headers, rate_limited, expected):
    assert retry_after_of(CaseInsensitiveDict(headers), rate_limited, now=NOW) == expected


def test_the_cap_is_the_configured_one():
    headers = CaseInsensitiveDict({"Retry-After": "86400"})
    assert retry_after_of(headers, False, now=NOW, cap=60.0) == 60.0


@given(value=st.text(max_size=40), reset=st.text(max_size=40))
def test_retry_after_never_raises(value: str, reset: str) -> None:
    headers = CaseInsensitiveDict({"Retry-After": value, "x-rate-limit-reset": reset})
    wait = retry_after_of(headers, True, now=NOW)
    assert wait is None or 0.0 <= wait <= 3600.0


def test_a_503_without_a_response_object_stays_retryable():
    with pytest.raises(RetryableError) as caught:
        raise_for("social", reply(503, b'{"response": null}'))
    assert str(caught.value) == 'social: HTTP 503: {"response": null}'
    with pytest.raises(PermanentError, match="HTTP 400: Over capacity"):
        raise_for("ads", reply(400, b'{"errors": [{"message": "Over\\ncapacity", "code": []}]}'))


def _nested(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """JSON arrays and objects of `inner` (a named function: hypothesis reads a lambda's
    source from the file to check that it recurses, which an edit under a run can fool)."""
    keys = st.sampled_from(["errors", "message", "code", "response", "request", "status", "info"])
    return st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3)


BODIES = (
    st.binary(max_size=500)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        _nested,
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode())
    | st.integers(1, 15_000).map(lambda n: b"[" * n + b"]" * n)
    | st.text(max_size=100).map(lambda t: t.encode("utf-16"))
)


@given(body=BODIES, status=st.integers(100, 999))
def test_error_text_reads_any_body(body: bytes, status: int) -> None:
    text = error_text(reply(status, body))
    assert text and text.isprintable() and len(text) <= 240


def test_text_of_takes_only_scalars():
    assert text_of(12) == "12" and text_of("abc") == "abc"
    assert text_of(True) is None and text_of([1]) is None and text_of("a\nb") is None
    assert text_of("x" * 300) is None and text_of("") is None


def test_a_header_http_refuses_never_shows_its_value():
    http = ServiceHttp("notes")
    secret = "hunter2-secret-value"
    for value in (f" {secret}", f"{secret}\n", f"{secret}\u2028"):
        with pytest.raises(PermanentError) as caught:
            http.send("GET", "http://127.0.0.1:9/", expect=(200,), headers={"X-API-KEY": value})
        assert secret not in str(caught.value) and "notes: the request cannot be sent" in str(
            caught.value
        )
    http.close()


class _Capture(socketserver.BaseRequestHandler):
    """Answers one request 200 and keeps its head and body as they came over the wire."""

    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.request.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        while not _whole(lines, body):
            body += self.request.recv(65536)
        self.server.seen.append((lines, body))  # type: ignore[attr-defined]
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


def _whole(lines: list[str], body: bytes) -> bool:
    if "Transfer-Encoding: chunked" in lines:
        return body.endswith(b"0\r\n\r\n")
    lengths = [int(line.partition(": ")[2]) for line in lines if line.startswith("Content-Length")]
    return len(body) >= sum(lengths)


@pytest.fixture
def wire():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Capture)
    server.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _stream():
    yield b"abc"
    yield b"de"


@pytest.mark.parametrize(
    ("method", "given", "added", "body"),
    [
        (
            "POST",
            {"data": b"abc", "headers": {"Content-Type": "text/csv"}},
            ["Content-Type: text/csv", "Content-Length: 3"],
            b"abc",
        ),
        (
            "POST",
            {"data": {"a": "b c", "d": None}},
            ["Content-Length: 5", "Content-Type: application/x-www-form-urlencoded"],
            b"a=b+c",
        ),
        (
            "POST",
            {"json_body": {"x": 1}},
            ["Content-Length: 8", "Content-Type: application/json"],
            b'{"x": 1}',
        ),
        ("PUT", {}, ["Content-Length: 0"], b""),
        ("GET", {}, [], b""),
        (
            "POST",
            {"data": _stream()},
            ["Transfer-Encoding: chunked"],
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        ),
    ],
)
def test_the_wire_is_what_requests_sent(wire, method, given, added, body):
    """The head requests' Session wrote for each kind of body: its default headers in its
    order, the caller's, then the body's length and type (what the sandbox and the services
    have always been sent)."""
    http = ServiceHttp("notes")
    port = wire.server_address[1]
    assert http.send(method, f"http://127.0.0.1:{port}/p?q=1", expect=(200,), **given).json() == {}
    http.close()
    [(lines, sent)] = wire.seen
    assert lines == [
        f"{method} /p?q=1 HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"User-Agent: syncd/{syncd.__version__}",
        "Accept-Encoding: identity",
        "Accept: */*",
        "Connection: keep-alive",
        *added,
    ]
    assert sent == body


def test_tls_is_verified_against_certifi_or_the_bundle_the_environment_names(tmp_path, monkeypatch):
    cert, server = _tls_server(tmp_path, "IP:127.0.0.1")
    url = f"https://127.0.0.1:{server.server_address[1]}/"
    try:
        for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv(variable, raising=False)
        http = ServiceHttp("ads")  # certifi's bundle: a self-signed server is refused
        with pytest.raises(
            RetryableError, match=r"ads: connection failed: .*CERTIFICATE_VERIFY_FAILED"
        ):
            http.send("GET", url, expect=(200,))
        http.close()
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        http = ServiceHttp("ads")
        assert http.send("GET", url, expect=(200,)).status == 200
        http.close()
    finally:
        server.shutdown()
        server.server_close()


def _tls_server(tmp_path, names: str) -> tuple[Path, socketserver.ThreadingTCPServer]:
    """A TLS server on loopback answering 200, its self-signed certificate for `names`."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=syncd",
            "-addext",
            f"subjectAltName={names}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class Tls(socketserver.ThreadingTCPServer):
        daemon_threads = True

        def get_request(self):
            sock, address = super().get_request()
            return context.wrap_socket(sock, server_side=True), address

    server = Tls(("127.0.0.1", 0), _Capture)
    server.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return cert, server


class _Tunnel(socketserver.BaseRequestHandler):
    """An HTTP proxy that tunnels every CONNECT to the server it was made for."""

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.request.recv(4096)
        self.server.asked.append(head.decode("latin-1").split("\r\n")[:-2])  # type: ignore[attr-defined]
        upstream = socket.create_connection(("127.0.0.1", self.server.target))  # type: ignore[attr-defined]
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        ends = [self.request, upstream]
        while True:
            ready, _, _ = select.select(ends, [], [], 5)
            if not ready:
                break
            for end in ready:
                data = end.recv(65536)
                if not data:
                    upstream.close()
                    return
                (upstream if end is self.request else self.request).sendall(data)


def test_a_remote_endpoint_goes_through_the_environments_proxy(tmp_path, monkeypatch):
    """HTTPS_PROXY, with its credentials, for a remote host; TLS verified end to end through
    the tunnel, for the remote host's name, against the bundle the environment names."""
    cert, server = _tls_server(tmp_path, "DNS:ton.example")
    proxy = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Tunnel)
    proxy.daemon_threads = True
    proxy.asked, proxy.target = [], server.server_address[1]  # type: ignore[attr-defined]
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    url = f"https://ton.example:{server.server_address[1]}/"
    for variable in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:pa%20ss@127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    try:
        http = ServiceHttp("ads")
        assert http.send("GET", url, expect=(200,)).status == 200
        http.close()
        [asked] = proxy.asked  # type: ignore[attr-defined]
        assert asked[0].startswith(f"CONNECT ton.example:{server.server_address[1]} HTTP/1.")
        assert f"Proxy-Authorization: Basic {base64.b64encode(b'user:pa ss').decode()}" in asked
    finally:
        for running in (proxy, server):
            running.shutdown()
            running.server_close()
