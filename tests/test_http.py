"""What syncd reads from any HTTP answer is parsed totally: Retry-After and
x-rate-limit-reset strictly and capped, error bodies of any shape, nesting and encoding."""

from __future__ import annotations

import email.utils
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

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


BODIES = (
    st.binary(max_size=500)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["errors", "message", "code", "response", "request", "status", "info"]
                ),
                inner,
                max_size=3,
            )
        ),
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
